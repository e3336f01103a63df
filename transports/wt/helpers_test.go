package wt_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/wt"
	"github.com/quic-go/quic-go"
)

// testServer is a wt.Server on a loopback UDP socket serving handler at
// /v1/wt (and, for the sharing test, extra routes), with a fresh
// development certificate.
type testServer struct {
	addr string // host:port of the UDP socket
	pool *x509.CertPool
	srv  *wt.Server
}

func startServer(t testing.TB, mux *http.ServeMux, cfg wire.Config) *testServer {
	t.Helper()
	cert, err := devcert.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	srv := wt.NewServer(mux, tlsCfg, cfg)
	ln, err := h3.ListenQUIC(udp, tlsCfg, wt.QUICConfig(cfg), nil)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeListener(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		_ = ln.Close()
		_ = udp.Close()
	})
	return &testServer{addr: udp.LocalAddr().String(), pool: devcert.Pool(cert), srv: srv}
}

func wtMux(h http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/v1/wt", h)
	return mux
}

func (s *testServer) url() string { return "https://" + s.addr + "/v1/wt" }

func (s *testServer) tlsConfig() *tls.Config { return &tls.Config{RootCAs: s.pool} }

// freezable is a client's UDP socket that, frozen, drops every datagram
// both ways, as a dead network path would.
type freezable struct {
	net.PacketConn
	frozen atomic.Bool
}

func (f *freezable) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := f.PacketConn.ReadFrom(b)
		if err != nil || !f.frozen.Load() {
			return n, addr, err
		}
	}
}

func (f *freezable) WriteTo(b []byte, addr net.Addr) (int, error) {
	if f.frozen.Load() {
		return len(b), nil
	}
	return f.PacketConn.WriteTo(b, addr)
}

// dialFreezable is a DialOptions.Dial on a freezable socket of its own,
// closed with the connection.
func dialFreezable(sock **freezable) func(context.Context, string, *tls.Config, *quic.Config) (*quic.Conn, error) {
	return func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, err
		}
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			_ = udp.Close()
			return nil, err
		}
		f := &freezable{PacketConn: udp}
		tr := &quic.Transport{Conn: f}
		conn, err := tr.DialEarly(ctx, raddr, tlsCfg, cfg)
		if err != nil {
			_ = tr.Close()
			_ = udp.Close()
			return nil, err
		}
		context.AfterFunc(conn.Context(), func() { _ = tr.Close(); _ = udp.Close() })
		*sock = f
		return conn, nil
	}
}
