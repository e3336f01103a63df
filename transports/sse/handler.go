package sse

import (
	"context"
	"errors"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// maxWrite bounds one write: a larger batch (a long history replay) goes
// out in several writes, so that pooled buffers stay small.
const maxWrite = 128 << 10

// Handler serves Server-Sent Events streams (GET /v1/sse).
type Handler struct {
	cfg wire.Config
}

// NewHandler returns a Handler. cfg.Hub and cfg.Auth are required.
func NewHandler(cfg wire.Config) *Handler {
	cfg.Transport = "sse"
	return &Handler{cfg: cfg.WithDefaults()}
}

// ServeHTTP authenticates the request, registers its connection and
// streams its envelopes until the client leaves or the connection ends.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !wire.CORS(w, r, h.cfg.AllowedOrigins) {
		return
	}
	if r.Method != http.MethodGet {
		methodNotAllowed(w)
		return
	}
	// Last-Event-ID (sent by the browser's automatic reconnect) is the
	// newest position; last_event_id is the same for clients that cannot
	// set headers.
	since := r.Header.Get("Last-Event-ID")
	if since == "" {
		since = r.URL.Query().Get("last_event_id")
	}
	if r.ProtoMajor == 1 && hijackable(w) {
		h.serveH1(w, r, since)
		return
	}
	sess, err := wire.Open(r, &h.cfg, since, nil)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	s := &stream{cfg: &h.cfg, w: w, rc: http.NewResponseController(w), sess: sess, pos: sess.Positions()}
	s.run(r.Context())
}

func methodNotAllowed(w http.ResponseWriter) {
	w.Header().Set("Allow", "GET, OPTIONS")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusMethodNotAllowed)
	_, _ = w.Write([]byte(`{"error":{"code":"method_not_allowed","message":"an event stream is opened with GET"}}` + "\n"))
}

// stream is one event stream. Owned by the handler goroutine.
type stream struct {
	cfg       *wire.Config
	w         http.ResponseWriter
	rc        *http.ResponseController
	sess      *wire.Session
	pos       *wire.Positions
	deadlines bool      // the writer supports write deadlines
	lastWrite time.Time // when the last write started
}

// run streams until the client leaves or the connection ends, then closes
// the session.
func (s *stream) run(ctx context.Context) {
	defer s.sess.Close(nil)
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
	// Zero is no deadline: a harmless probe. An unsupported deadline
	// returns a fresh error each time; asking once keeps writes
	// allocation-free.
	s.deadlines = s.rc.SetWriteDeadline(time.Time{}) == nil
	if !s.write(retryField) {
		return
	}

	subCtx, cancelSub := context.WithCancel(ctx)
	subscribed := make(chan struct{})
	go func() {
		defer close(subscribed)
		s.sess.SubscribeInitial(subCtx)
	}()
	defer func() {
		s.sess.Close(nil) // releases a SubscribeInitial waiting for queue room
		cancelSub()
		<-subscribed
	}()

	conn := s.sess.Conn
	beat := time.NewTimer(s.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-conn.Done():
			s.end(ctx)
			return
		case <-conn.Ready():
			if !s.flushQueue() {
				return
			}
		case <-beat.C:
			// Re-armed from the last write rather than reset by every
			// write: a busy stream costs no timer updates.
			if idle := time.Since(s.lastWrite); idle < s.cfg.Heartbeat {
				beat.Reset(s.cfg.Heartbeat - idle)
				continue
			}
			if !s.write(heartbeat) {
				return
			}
			beat.Reset(s.cfg.Heartbeat)
		}
	}
}

var bufPool = sync.Pool{New: func() any { return new(writeBuf) }}

type writeBuf struct {
	batch []*notify.Envelope
	out   []byte
}

// flushQueue writes everything queued. It reports false once the stream
// has ended.
func (s *stream) flushQueue() bool {
	buf := bufPool.Get().(*writeBuf)
	buf.batch = s.sess.Conn.Drain(buf.batch[:0])
	ok := s.writeBatch(buf)
	clear(buf.batch) // the pool must not keep envelopes alive
	if cap(buf.out) <= 2*maxWrite {
		bufPool.Put(buf)
	}
	return ok
}

// writeBatch writes buf.batch; false once the stream has ended.
func (s *stream) writeBatch(buf *writeBuf) bool {
	return writeEvents(buf, s.pos, s.cfg, s.sess, s.write)
}

// writeEvents encodes buf.batch into buf.out and writes it with write, in
// one write unless it exceeds maxWrite (or cfg.MaxBatch envelopes). It
// reports false once the stream has ended: a failed write, or a drain's
// reconnect advice written (the session is then closed as shut down).
func writeEvents(buf *writeBuf, pos *wire.Positions, cfg *wire.Config, sess *wire.Session, write func([]byte) bool) bool {
	out := buf.out[:0]
	ends := false
	for i, e := range buf.batch {
		out = appendEvent(out, e, pos)
		ends = ends || wire.EndsConnection(e)
		if len(out) >= maxWrite || (cfg.MaxBatch > 0 && (i+1)%cfg.MaxBatch == 0) {
			if !write(out) {
				return false
			}
			out = out[:0]
		}
	}
	buf.out = out[:0]
	if len(out) > 0 && !write(out) {
		return false
	}
	sess.Wrote(buf.batch)
	if ends {
		sess.Close(notify.ErrShutdown)
		return false
	}
	return true
}

// write writes p and flushes it within the write timeout. On failure it
// closes the session, as lagging if the client did not take the write in
// time, and reports false.
func (s *stream) write(p []byte) bool {
	now := time.Now()
	deadline := now.Add(s.cfg.WriteTimeout)
	if s.deadlines {
		_ = s.rc.SetWriteDeadline(deadline)
	}
	_, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	if err != nil {
		// HTTP/2 reports a timed-out write as a closed stream, not as
		// os.ErrDeadlineExceeded: a write that lasted until its
		// deadline timed out, whatever the error says.
		var reason error
		if errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(deadline) {
			reason = notify.ErrLagged
		}
		s.cfg.Logger.Debug("sse: write failed", "user", s.sess.Conn.User(), "error", err, "lagged", reason != nil)
		s.sess.Close(reason)
		return false
	}
	if s.deadlines {
		_ = s.rc.SetWriteDeadline(time.Time{})
	}
	s.lastWrite = now
	return true
}

// end tells the client why the hub closed its connection, unless the
// client is the one that left.
func (s *stream) end(ctx context.Context) {
	reason := s.sess.Conn.Err()
	if ctx.Err() != nil || reason == nil || errors.Is(reason, notify.ErrClosed) {
		return
	}
	e := notify.ErrorEnvelope(reason, "")
	if e.Code == "internal" {
		e.Message = "internal error" // as wire.WriteError: no internals to clients
	}
	s.write(appendEvent(nil, e, s.pos))
}
