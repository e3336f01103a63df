package sse

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// An HTTP/1.1 stream is served on the hijacked connection, as a WebSocket
// is: the handler returns, a small reader goroutine notices the client
// leaving, the writer goroutine runs only while something is queued, and the
// heartbeat is a timer. Kept by net/http for the stream's life, its 4 KiB
// read and write buffers, 2 KiB chunking buffer, background reader
// goroutine and handler goroutine would cost more than the rest of the
// connection together. The response body is close-delimited (no chunking):
// the stream ends when the connection closes.

// hijackable reports whether w can hand over its connection.
func hijackable(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// h1stream is an SSE stream on a hijacked HTTP/1.1 connection.
type h1stream struct {
	cfg       *wire.Config
	heartbeat *time.Timer

	mu        sync.Mutex
	nc        net.Conn      // nil until hijacked; guarded by mu
	sess      *wire.Session // guarded by mu
	writing   bool          // a writer goroutine runs; guarded by mu
	again     bool          // woken while writing; guarded by mu
	ended     bool          // the connection is closed; guarded by mu
	lastWrite time.Time     // guarded by mu

	// Owned by the running writer (one at a time).
	pos *wire.Positions
}

// serveH1 opens the session and hands the connection over to the stream.
func (h *Handler) serveH1(w http.ResponseWriter, r *http.Request, since string) {
	s := &h1stream{cfg: &h.cfg}
	sess, err := wire.Open(r, &h.cfg, since, s.wake)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		sess.Close(nil)
		wire.WriteError(w, err)
		return
	}
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n")
	_ = w.Header().Write(&head) // CORS headers set by wire.CORS
	head.WriteString("\r\n")
	head.Write(retryField)
	_ = brw // its buffers are dropped with it; a client does not send before the response
	s.pos = sess.Positions()
	s.mu.Lock()
	s.nc, s.sess = nc, sess
	s.lastWrite = time.Now()
	s.heartbeat = time.AfterFunc(h.cfg.Heartbeat, s.beat)
	s.mu.Unlock()
	if !s.write(head.Bytes()) {
		return
	}
	s.wake() // anything queued before the hijack (a drain's advice)
	go s.readLoop()
}

// readLoop subscribes the initial channels (the writer drains meanwhile),
// then waits for the client to close the connection: it sends nothing after
// its request.
func (s *h1stream) readLoop() {
	defer func() {
		s.sess.Close(nil)
		s.end(nil)
	}()
	if !s.sess.SubscribeInitial(context.Background()) {
		return
	}
	var b [64]byte
	for {
		if _, err := s.nc.Read(b[:]); err != nil {
			return
		}
	}
}

// wake is the notify.Conn's wake-up: it starts the writer unless one runs.
func (s *h1stream) wake() {
	s.mu.Lock()
	if s.writing || s.nc == nil || s.ended {
		s.again = true
		s.mu.Unlock()
		return
	}
	s.writing, s.again = true, false
	s.mu.Unlock()
	go s.writeLoop()
}

// writeLoop drains the queue until it is empty, then exits.
func (s *h1stream) writeLoop() {
	for {
		buf := bufPool.Get().(*writeBuf)
		buf.batch = s.sess.Conn.Drain(buf.batch[:0])
		ok := s.writeBatch(buf)
		clear(buf.batch)
		if cap(buf.out) <= 2*maxWrite {
			bufPool.Put(buf)
		}
		if !ok {
			return
		}
		select {
		case <-s.sess.Conn.Done():
			s.finish()
			return
		default:
		}
		s.mu.Lock()
		if !s.again {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.again = false
		s.mu.Unlock()
	}
}

// writeBatch writes a batch; false once the stream has ended (the
// connection is then closed).
func (s *h1stream) writeBatch(buf *writeBuf) bool {
	if writeEvents(buf, s.pos, s.cfg, s.sess, s.write) {
		return true
	}
	s.end(nil)
	return false
}

// write writes p within the write timeout; on failure it closes the session
// (as lagging if the client did not take it in time) and the connection.
func (s *h1stream) write(p []byte) bool {
	now := time.Now()
	_ = s.nc.SetWriteDeadline(now.Add(s.cfg.WriteTimeout))
	_, err := s.nc.Write(p)
	if err != nil {
		var reason error
		if errors.Is(err, os.ErrDeadlineExceeded) {
			reason = notify.ErrLagged
		}
		s.sess.Close(reason)
		s.end(nil)
		return false
	}
	s.mu.Lock()
	s.lastWrite = now
	s.mu.Unlock()
	return true
}

// finish tells the client why the hub closed its connection (unless the
// client left), then closes it.
func (s *h1stream) finish() {
	reason := s.sess.Conn.Err()
	if reason != nil && !errors.Is(reason, notify.ErrClosed) {
		e := notify.ErrorEnvelope(reason, "")
		if e.Code == "internal" {
			e.Message = "internal error"
		}
		s.write(appendEvent(nil, e, s.pos))
	}
	s.end(nil)
}

// end closes the connection. Idempotent.
func (s *h1stream) end(error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.mu.Unlock()
	s.heartbeat.Stop()
	_ = s.nc.Close()
}

// beat writes a comment line if nothing was written for a heartbeat; it
// re-arms itself. Writes are serialized with the writer by taking the
// writer's role.
func (s *h1stream) beat() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	idle := time.Since(s.lastWrite)
	if idle < s.cfg.Heartbeat || s.writing {
		s.heartbeat.Reset(max(s.cfg.Heartbeat-idle, time.Second))
		s.mu.Unlock()
		return
	}
	s.writing = true
	s.mu.Unlock()
	ok := s.write(heartbeat)
	s.mu.Lock()
	s.writing = false
	again := s.again
	if ok && !s.ended {
		s.heartbeat.Reset(s.cfg.Heartbeat)
	}
	s.mu.Unlock()
	if again {
		s.wake()
	}
}
