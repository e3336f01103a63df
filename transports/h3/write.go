package h3

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// maxWrite bounds one write; a batch larger than that is written in
// several, then flushed once.
const maxWrite = 128 << 10

// heartbeatLine is what keeps an idle HTTP/1.1 or HTTP/2 stream alive
// through proxies. HTTP/3 streams need none: QUIC keep-alive does it below
// the stream.
var heartbeatLine = []byte("\n")

// A writeBuf is held only while a batch is written, so an idle stream
// keeps no buffer.
type writeBuf struct {
	batch []*notify.Envelope
	data  []byte
}

var bufPool = sync.Pool{New: func() any { return new(writeBuf) }}

// writeLoop is the stream's writer; it runs on the handler goroutine until
// the stream ends.
func (s *stream) writeLoop() {
	conn := s.sess.Conn
	var beat <-chan time.Time
	if s.r.ProtoMajor < 3 {
		t := time.NewTicker(s.h.cfg.Heartbeat)
		defer t.Stop()
		beat = t.C
	}
	wrote := false // since the last heartbeat tick
	for {
		select {
		case <-s.ctx.Done(): // the client went
			return
		case <-conn.Done():
			s.end(conn.Err())
			return
		case <-conn.Ready():
			if !s.drain() {
				return
			}
			wrote = true
		case <-beat:
			if !wrote && !s.writeFlush(heartbeatLine) {
				return
			}
			wrote = false
		}
	}
}

// drain writes what is queued. It reports false once the stream has ended.
func (s *stream) drain() bool {
	buf := bufPool.Get().(*writeBuf)
	defer bufPool.Put(buf)
	buf.batch = s.sess.Conn.Drain(buf.batch[:0])
	if len(buf.batch) == 0 {
		return true
	}
	ok, ends := s.writeBatch(buf)
	clear(buf.batch) // let the envelopes go
	if ok && ends {
		// The drain advice is out: the client reconnects elsewhere.
		s.sess.Close(notify.ErrShutdown)
		return false
	}
	return ok
}

// writeBatch writes the batch as NDJSON lines, in one write unless it is
// over maxWrite, then flushes. ends reports a drain advice in the batch.
func (s *stream) writeBatch(buf *writeBuf) (ok, ends bool) {
	data := buf.data[:0]
	for i, e := range buf.batch {
		raw := e.JSON() // a message's shared encoding: no copy, no allocation
		if i > 0 && s.h.cfg.MaxBatch > 0 && i%s.h.cfg.MaxBatch == 0 {
			if !s.writeFlush(data) {
				return false, false
			}
			data = data[:0]
		}
		if len(data) > 0 && len(data)+len(raw)+1 > maxWrite {
			if !s.write(data) {
				return false, false
			}
			data = data[:0]
		}
		data = append(data, raw...)
		data = append(data, '\n')
		ends = ends || wire.EndsConnection(e)
	}
	ok = s.writeFlush(data)
	if ok {
		s.sess.Wrote(buf.batch)
	}
	if cap(data) <= maxWrite {
		buf.data = data[:0]
	} else {
		buf.data = nil // one huge envelope: do not keep its buffer pooled
	}
	return ok, ends
}

// writeFlush writes b and flushes: quic-go holds a response's first 4 KiB
// until a flush, HTTP/1.1 and HTTP/2 hold up to their buffer size.
func (s *stream) writeFlush(b []byte) bool {
	if !s.write(b) {
		return false
	}
	if err := s.rc.Flush(); err != nil {
		s.fail(err)
		return false
	}
	return true
}

// write writes b within the write timeout.
func (s *stream) write(b []byte) bool {
	// A ResponseWriter wrapped by a middleware that hides its deadlines
	// still streams; a client that stops reading then lags on its queue
	// instead of on the write timeout.
	err := s.rc.SetWriteDeadline(time.Now().Add(s.h.cfg.WriteTimeout))
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.fail(err)
		return false
	}
	if _, err := s.w.Write(b); err != nil {
		s.fail(err)
		return false
	}
	return true
}

// fail closes the session after a failed write: a client that does not
// take a write within the timeout lags, any other failure means it is gone.
func (s *stream) fail(err error) {
	if isTimeout(err) {
		s.sess.Close(notify.ErrLagged)
		return
	}
	s.sess.Close(nil)
}

// end tells the client why the server ends its stream. A stream whose
// client left, or that a failed write ended, gets nothing.
func (s *stream) end(reason error) {
	if errors.Is(reason, notify.ErrClosed) || s.ctx.Err() != nil {
		return
	}
	e := notify.ErrorEnvelope(reason, "")
	if e.Code == "internal" {
		e.Message = "internal error" // as wire.WriteError: no internals to clients
	}
	s.writeFlush(append(e.AppendJSON(nil), '\n'))
}

// isTimeout reports whether err is a missed write deadline.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
