package sse

import (
	"bytes"
	"context"
	"net"
	"net/http"
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

// h1stream is an SSE stream on a hijacked HTTP/1.1 connection; its
// wire.Writer writes to the connection.
type h1stream struct {
	w    *wire.Writer
	nc   net.Conn      // set before the writer starts
	sess *wire.Session // set before the writer starts
	pos  *wire.Positions
}

var _ wire.Output = (*h1stream)(nil)

// writerOptions frame the stream's events; the heartbeat is a comment line.
// On a hijacked connection the deadline may stay set between writes.
var (
	writerOptions   = wire.WriterOptions{MaxFrame: maxWrite, Heartbeat: heartbeat, FinalNotice: true}
	h1WriterOptions = wire.WriterOptions{MaxFrame: maxWrite, Heartbeat: heartbeat, FinalNotice: true, StickyDeadline: true}
)

// serveH1 opens the session and hands the connection over to the stream.
func (h *Handler) serveH1(w http.ResponseWriter, r *http.Request, since string) {
	s := &h1stream{w: wire.NewWriter()}
	sess, err := wire.Open(r, &h.cfg, since, s.w.Wake)
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
	s.nc, s.sess, s.pos = nc, sess, sess.Positions()
	_ = nc.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
	_, err = nc.Write(head.Bytes())
	_ = nc.SetWriteDeadline(time.Time{})
	if err != nil {
		sess.Close(nil)
		_ = nc.Close()
		return
	}
	s.w.Start(sess, s, &h1WriterOptions) // writes anything queued before the hijack (a drain's advice)
	// The initial channels are subscribed on the handler's goroutine (the
	// writer drains meanwhile), which ends when it returns, so that the
	// reader kept for the stream's life does not keep the stack that
	// subscribing grew (see ws's Handler.ServeHTTP).
	if !sess.SubscribeInitial(context.Background()) {
		sess.Close(nil)
		s.w.Close()
		return
	}
	go s.readLoop()
}

// readLoop waits for the client to close the connection: it sends nothing
// after its request.
func (s *h1stream) readLoop() {
	defer func() {
		s.sess.Close(nil)
		s.w.Close()
	}()
	var b [64]byte
	for {
		if _, err := s.nc.Read(b[:]); err != nil {
			return
		}
	}
}

// Append implements wire.Output.
func (s *h1stream) Append(frame []byte, e *notify.Envelope, _ int) []byte {
	return appendEvent(frame, e, s.pos)
}

// WriteFrame implements wire.Output.
func (s *h1stream) WriteFrame(frame []byte) error {
	_, err := s.nc.Write(frame)
	return err
}

// SetWriteDeadline implements wire.Output.
func (s *h1stream) SetWriteDeadline(t time.Time) error { return s.nc.SetWriteDeadline(t) }

// End implements wire.Output: the stream ends with the connection.
func (s *h1stream) End(error) { _ = s.nc.Close() }
