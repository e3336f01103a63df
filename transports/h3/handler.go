package h3

import (
	"context"
	"net/http"
	"time"

	"github.com/heraldhq/herald/transports/wire"
)

// ContentType is the media type of the stream in both directions.
const ContentType = "application/x-ndjson"

// Handler serves NDJSON streams (GET and POST /v1/stream).
type Handler struct {
	cfg wire.Config
}

// NewHandler returns a Handler. cfg.Hub and cfg.Auth are required.
func NewHandler(cfg wire.Config) *Handler {
	cfg.Transport = "stream"
	return &Handler{cfg: cfg.WithDefaults()}
}

// stream is one client stream. Its fields are set before the reader
// goroutine starts and never change; the writer (ServeHTTP's goroutine)
// owns the ResponseWriter, the reader owns the request body.
type stream struct {
	h    *Handler
	sess *wire.Session
	wire.Response
	r      *http.Request
	duplex bool // POST: the body carries commands

	ctx    context.Context // ends when ServeHTTP returns, or the request's does
	cancel context.CancelFunc
	// readerDone is closed when the reader goroutine exits; nil if it
	// never started.
	readerDone chan struct{}
}

// ServeHTTP runs one stream until the client goes or the server ends it.
// The calling goroutine is the stream's writer; one more goroutine
// subscribes the initial channels and, for POST, reads the commands.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !wire.CORS(w, r, h.cfg.AllowedOrigins) {
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST, OPTIONS")
		wire.WriteStatusError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET to listen or POST to listen and send commands")
		return
	}
	// The handler's goroutine is the writer: a wire loop writer.
	lw := wire.NewLoopWriter()
	sess, err := wire.Open(r, &h.cfg, "", lw.Wake)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	s := &stream{
		h: h, sess: sess, r: r, Response: wire.NewResponse(w),
		duplex: r.Method == http.MethodPost,
	}
	s.ctx, s.cancel = context.WithCancel(r.Context())
	defer s.close()
	if !s.start() {
		return
	}
	s.readerDone = make(chan struct{})
	go s.readLoop()
	lw.Run(s.ctx, sess, s, s.writerOptions())
}

// start sends the response header at once, so that the client's request
// completes before the first envelope.
func (s *stream) start() bool {
	hdr := s.W.Header()
	hdr.Set("Content-Type", ContentType)
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if s.duplex {
		// HTTP/1.1 otherwise stops reading the body once the response
		// starts; HTTP/2 and HTTP/3 are full duplex already.
		_ = s.RC.EnableFullDuplex()
	}
	s.W.WriteHeader(http.StatusOK)
	if err := s.RC.Flush(); err != nil {
		s.sess.Close(nil)
		return false
	}
	return true
}

// close ends the stream and waits for the reader goroutine.
func (s *stream) close() {
	s.sess.Close(nil) // no-op if a reason was set already
	s.cancel()        // ends a Subscribe or a command the reader runs
	if s.readerDone == nil {
		return
	}
	if s.duplex {
		// Unblocks the reader's body Read; the deadline is local, nothing
		// goes on the wire.
		_ = s.RC.SetReadDeadline(time.Now())
	}
	<-s.readerDone
}
