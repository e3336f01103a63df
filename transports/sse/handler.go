package sse

import (
	"context"
	"net/http"

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
	w2 := wire.NewLoopWriter()
	sess, err := wire.Open(r, &h.cfg, since, w2.Wake)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	s := &stream{Response: wire.NewResponse(w), sess: sess, pos: sess.Positions()}
	s.run(r.Context(), w2)
}

func methodNotAllowed(w http.ResponseWriter) {
	w.Header().Set("Allow", "GET, OPTIONS")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusMethodNotAllowed)
	_, _ = w.Write([]byte(`{"error":{"code":"method_not_allowed","message":"an event stream is opened with GET"}}` + "\n"))
}

// stream is one event stream over HTTP/2 or HTTP/3: the handler goroutine
// is its writer (a wire loop writer) until it ends.
type stream struct {
	wire.Response
	sess *wire.Session
	pos  *wire.Positions
}

var _ wire.Output = (*stream)(nil)

// run streams until the client leaves or the connection ends, then closes
// the session.
func (s *stream) run(ctx context.Context, w *wire.Writer) {
	defer s.sess.Close(nil)
	h := s.W.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	s.W.WriteHeader(http.StatusOK)
	if _, err := s.W.Write(retryField); err != nil {
		return
	}
	if s.RC.Flush() != nil {
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
	w.Run(ctx, s.sess, s, &writerOptions)
}

// Append implements wire.Output.
func (s *stream) Append(frame []byte, e *notify.Envelope, _ int) []byte {
	return appendEvent(frame, e, s.pos)
}
