package wt

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/webtransport-go"
)

// Protocols are the :protocol values of a WebTransport extended CONNECT
// (draft-ietf-webtrans-http3-15, and the one before it that browsers
// still send).
var protocols = []string{"webtransport-h3", "webtransport"}

// Handler serves WebTransport sessions (CONNECT /v1/wt). It must be
// reached through a Server's connection.
type Handler struct {
	cfg wire.Config
}

// NewHandler returns a Handler. cfg.Hub and cfg.Auth are required.
func NewHandler(cfg wire.Config) *Handler {
	cfg.Transport = "wt"
	return &Handler{cfg: cfg.WithDefaults()}
}

// session is one WebTransport session. Its fields are set before the
// reader goroutine starts; the writer (ServeHTTP's goroutine) owns the
// writing side of str, the reader its reading side.
type session struct {
	h    *Handler
	sess *wire.Session
	wt   *webtransport.Session
	str  *webtransport.Stream

	ctx    context.Context // ends when the WebTransport session does, or ServeHTTP returns
	cancel context.CancelFunc
	// ended is the reason the writer gave Output.End (nil after a failed
	// write: nothing more can be said). Owned by the writer.
	ended error
	// readerDone is closed when the reader goroutine exits.
	readerDone chan struct{}
}

// ServeHTTP refuses a request that is not a WebTransport CONNECT, or whose
// origin, credentials, channels or cursor fail wire.Open, with its HTTP
// status and JSON error body, before the session is set up; else it
// upgrades, waits for the client's stream, and runs the session until the
// client goes or the server ends it. The calling goroutine is the writer;
// one more goroutine subscribes the initial channels and reads commands.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	srv := serverOf(r)
	if srv == nil || r.Method != http.MethodConnect || !isWebTransport(r.Proto) {
		wire.WriteStatusError(w, http.StatusBadRequest, "webtransport_required",
			"use a WebTransport session (extended CONNECT over HTTP/3) on this endpoint")
		return
	}
	if !wire.CORS(w, r, h.cfg.AllowedOrigins) {
		return
	}
	lw := wire.NewLoopWriter()
	sess, err := wire.Open(r, &h.cfg, "", lw.Wake)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	wts, err := srv.wt.Upgrade(w, r)
	if err != nil {
		sess.Close(nil)
		h.cfg.Logger.Debug("webtransport upgrade failed", "error", err)
		wire.WriteStatusError(w, http.StatusBadRequest, "webtransport_required", "webtransport: "+err.Error())
		return
	}
	s := &session{h: h, sess: sess, wt: wts}
	s.ctx, s.cancel = context.WithCancel(wts.Context())
	defer s.close()
	if s.str = s.accept(); s.str == nil {
		return
	}
	s.readerDone = make(chan struct{})
	go s.readLoop()
	lw.Run(s.ctx, sess, s, &options)
}

func isWebTransport(proto string) bool {
	for _, p := range protocols {
		if proto == p {
			return true
		}
	}
	return false
}

// accept waits for the bidirectional stream the client opens first, for
// at most the write timeout. The client may have written commands on it
// already. Without one the session is closed with CodeNoStream.
func (s *session) accept() *webtransport.Stream {
	ctx, cancel := context.WithTimeout(s.ctx, s.h.cfg.WriteTimeout)
	defer cancel()
	str, err := s.wt.AcceptStream(ctx)
	if err != nil {
		if s.ctx.Err() == nil {
			s.ended = errNoStream
		}
		return nil
	}
	return str
}

// readLoop subscribes the channels asked for at connect — which may wait
// for queue room while history replays, so it cannot be the writer — then
// runs the client's commands, one per line of the stream. The end of the
// client's side of the stream ends only this loop: the session lives until
// the client closes it or the server ends it.
func (s *session) readLoop() {
	defer close(s.readerDone)
	if !s.sess.SubscribeInitial(s.ctx) {
		return
	}
	s.sess.ReadCommands(s.ctx, s.str)
}

// close ends the session: the hub's connection, the reader, then the
// WebTransport session with the close code of the reason (see close.go).
func (s *session) close() {
	s.sess.Close(nil) // no-op if a reason was set already
	s.cancel()        // ends a Subscribe or a command the reader runs
	if s.readerDone != nil {
		_ = s.str.SetReadDeadline(time.Now()) // unblocks the reader's Read
		<-s.readerDone
	}
	s.closeSession()
}

var errNoStream = errors.New("wt: the client opened no stream")
