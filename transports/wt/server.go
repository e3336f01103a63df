package wt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
)

// QUICConfig is h3.QUICConfig(cfg) with what WebTransport needs of QUIC:
// datagrams (RFC 9221; Herald sends none, but a WebTransport peer
// requires the support) and resets with partial delivery (the stream
// header survives a reset). The listener of a Server must use it.
func QUICConfig(cfg wire.Config) *quic.Config {
	q := h3.QUICConfig(cfg)
	q.EnableDatagrams = true
	q.EnableStreamResetPartialDelivery = true
	return q
}

// QUICListener is what a Server accepts QUIC connections from: an
// *h3.Listener (h3.ListenQUIC with QUICConfig) or a *quic.EarlyListener.
type QUICListener interface {
	Accept(ctx context.Context) (*quic.Conn, error)
	Addr() net.Addr
}

// Server is the QUIC side of a TLS port that serves WebTransport next to
// HTTP/3: the http3.Server of h3.NewServer, whose QUIC connections a
// webtransport.Server serves, so that one connection carries HTTP/3
// requests (/v1/stream, /v1/sse…) and WebTransport sessions (/v1/wt) alike.
// The http3.Server is configured for it (SETTINGS_WT_ENABLED, H3
// datagrams, extended CONNECT) and must not serve a listener itself.
//
// Serve a listener with ServeListener; Shutdown or Close stop it. Its
// methods are safe for concurrent use.
type Server struct {
	h3  *http3.Server
	wt  *webtransport.Server
	ctx context.Context // ends on Shutdown or Close: stop accepting
	// stop ends ctx.
	stop  context.CancelFunc
	conns sync.WaitGroup // one per QUIC connection served
	port  atomic.Int64   // the UDP port served, for Alt-Svc
}

type serverKey struct{}

// NewServer returns the server of handler (typically the mux that routes
// /v1/wt to a Handler and /v1/stream to an h3.Handler), with the HTTP/3
// settings of h3.NewServer. tlsCfg needs a certificate.
func NewServer(handler http.Handler, tlsCfg *tls.Config, cfg wire.Config) *Server {
	s := &Server{}
	s.h3 = h3.NewServer(s.refuseWhenStopped(handler), tlsCfg, cfg)
	s.h3.QUICConfig = QUICConfig(cfg)
	// The Handler finds its server in the request's context.
	s.h3.ConnContext = func(ctx context.Context, _ *quic.Conn) context.Context {
		return context.WithValue(ctx, serverKey{}, s)
	}
	s.wt = &webtransport.Server{
		H3: s.h3,
		// The Handler checks the origin itself, with Herald's rules
		// (wire.OriginAllowed), and answers a refusal with its status.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	return s
}

// HTTP3 is the http3.Server whose connections s serves (for its settings;
// do not serve it).
func (s *Server) HTTP3() *http3.Server { return s.h3 }

// ServeListener serves the QUIC connections of ln, which must use
// QUICConfig, until Shutdown or Close (then it returns
// http.ErrServerClosed) or ln fails. It does not close ln.
func (s *Server) ServeListener(ln QUICListener) error {
	if a, ok := ln.Addr().(*net.UDPAddr); ok {
		s.port.Store(int64(a.Port))
	}
	for {
		conn, err := ln.Accept(s.ctx)
		if s.ctx.Err() != nil || errors.Is(err, quic.ErrServerClosed) {
			return http.ErrServerClosed
		}
		if err != nil {
			return err
		}
		s.conns.Go(func() { _ = s.wt.ServeQUICConn(conn) })
	}
}

// SetQUICHeaders advertises HTTP/3 on the port served (Alt-Svc), as
// http3.Server.SetQUICHeaders does for listeners it serves itself.
func (s *Server) SetQUICHeaders(hdr http.Header) error {
	port := s.port.Load()
	if port == 0 {
		return http3.ErrNoAltSvcPort
	}
	hdr["Alt-Svc"] = append(hdr["Alt-Svc"], fmt.Sprintf(`%s=":%d"; ma=2592000`, http3.NextProtoH3, port))
	return nil
}

// refuseWhenStopped answers 503 shutdown to the requests and sessions that
// open connections carry after Shutdown: the QUIC connections a
// webtransport.Server serves get no HTTP/3 GOAWAY from http3 (it sends
// one only on connections it serves itself), so a client would otherwise
// reconnect, after a drain's advice, on its pooled connection to the
// instance that is going away.
func (s *Server) refuseWhenStopped(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.ctx.Err() != nil {
			wire.WriteError(w, notify.ErrShutdown)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Shutdown stops accepting connections, refuses new requests on the open
// ones (503 shutdown), and waits for those connections to end (a drain
// ends every session and stream) until ctx is done, then closes what is
// left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	return errors.Join(err, s.Close())
}

// Close closes every connection at once and waits for their handlers.
func (s *Server) Close() error {
	s.stop()
	err := s.wt.Close()
	s.conns.Wait()
	return err
}

// serverOf is the Server whose connection carried r, or nil.
func serverOf(r *http.Request) *Server {
	s, _ := r.Context().Value(serverKey{}).(*Server)
	return s
}
