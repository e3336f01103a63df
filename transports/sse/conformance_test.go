package sse_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/conformance"
	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func TestConformance(t *testing.T) {
	t.Run("HTTP1", func(t *testing.T) { conformance.Run(t, http1{}) })
	t.Run("HTTP2", func(t *testing.T) { conformance.Run(t, http2{}) })
	t.Run("HTTP3", func(t *testing.T) { conformance.Run(t, http3Transport{}) })
}

// TestProtocols checks that each transport's requests arrive over the HTTP
// version it is named after (every request of the suite is checked too).
func TestProtocols(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tr    conformance.Transport
		proto string
	}{
		{"HTTP1", http1{}, "HTTP/1.1"},
		{"HTTP2", http2{}, "HTTP/2.0"},
		{"HTTP3", http3Transport{}, "HTTP/3.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := notify.NewMemoryBroker(notify.MemoryConfig{})
			hub := notify.NewHub(b, notify.HubConfig{})
			t.Cleanup(func() { _ = hub.Close(); _ = b.Close() })
			auth := wire.AuthFunc(func(*http.Request) (*notify.Grants, error) { return &notify.Grants{User: "u"}, nil })
			d := tc.tr.Start(t, wire.Config{Hub: hub, Auth: auth}).(*dialer)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := d.Dial(ctx, conformance.DialOptions{Token: "x"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Drop()
			if e, err := c.Read(ctx); err != nil || e.Type != notify.TypeSubscribed {
				t.Fatalf("read %v, %v; want the subscribed notice", e, err)
			}
			if got, _ := d.proto.Load().(string); got != tc.proto {
				t.Fatalf("request over %q; want %q", got, tc.proto)
			}
		})
	}
}

// errHTTP1Freeze is why the suite's dead-peer scenario cannot run over
// HTTP/1.1 in-process.
var errHTTP1Freeze = errors.New("HTTP/1.1 has no ping of its own: a silent peer is detected only by TCP " +
	"(keep-alive and TCP_USER_TIMEOUT, set by sse.ConnContext), which loopback cannot exercise without " +
	"packet loss; TestTCPUserTimeoutDetectsDeadPeer covers it in a network namespace")

type http1 struct{}

func (http1) Start(t testing.TB, cfg wire.Config) conformance.Dialer {
	d := &dialer{freezeErr: errHTTP1Freeze}
	srv := httptest.NewUnstartedServer(d.checkProto(t, 1, sse.NewHandler(cfg)))
	srv.Config.ConnContext = sse.ConnContext(cfg)
	srv.Start()
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	d.url = srv.URL + "/v1/sse"
	d.roundTripper = func(l *link) (http.RoundTripper, func()) {
		tr := &http.Transport{DialContext: l.dialTCP}
		return tr, tr.CloseIdleConnections
	}
	return d
}

type http2 struct{}

func (http2) Start(t testing.TB, cfg wire.Config) conformance.Dialer {
	d := &dialer{}
	srv := httptest.NewUnstartedServer(d.checkProto(t, 2, sse.NewHandler(cfg)))
	c := cfg.WithDefaults()
	srv.EnableHTTP2 = true
	srv.Config.ConnContext = sse.ConnContext(cfg)
	srv.Config.HTTP2 = &http.HTTP2Config{SendPingTimeout: c.Heartbeat, PingTimeout: c.WriteTimeout}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // "timeout waiting for PING response" is the point
	srv.StartTLS()
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	d.url = srv.URL + "/v1/sse"
	base := srv.Client().Transport.(*http.Transport)
	d.roundTripper = func(l *link) (http.RoundTripper, func()) {
		// One transport, hence one TCP connection, per client, so that
		// freezing one client leaves the others alone.
		tr := base.Clone()
		tr.DialContext = l.dialTCP
		return tr, tr.CloseIdleConnections
	}
	return d
}

type http3Transport struct{}

func (http3Transport) Start(t testing.TB, cfg wire.Config) conformance.Dialer {
	d := &dialer{}
	cert, err := devcert.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.WithDefaults()
	srv := &http3.Server{
		Handler:   d.checkProto(t, 3, sse.NewHandler(cfg)),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		// The settings doc.go asks of a production server: QUIC's idle
		// timeout is how a silent peer is noticed.
		QUICConfig: &quic.Config{KeepAlivePeriod: c.Heartbeat, MaxIdleTimeout: 2*c.Heartbeat + c.WriteTimeout},
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(pc)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = pc.Close()
		<-served
	})
	d.url = "https://" + pc.LocalAddr().String() + "/v1/sse"
	d.roundTripper = func(l *link) (http.RoundTripper, func()) {
		// One transport (one QUIC connection) per client.
		tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: devcert.Pool(cert)}, Dial: l.dialQUIC}
		return tr, func() { _ = tr.Close() }
	}
	return d
}

type dialer struct {
	url          string
	roundTripper func(*link) (rt http.RoundTripper, closeRT func())
	freezeErr    error        // why Freeze cannot work, if it cannot
	proto        atomic.Value // string: the protocol of the last request
}

// checkProto fails t if a request does not come over HTTP/major.
func (d *dialer) checkProto(t testing.TB, major int, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.proto.Store(r.Proto)
		if r.ProtoMajor != major {
			t.Errorf("request over %s; want HTTP/%d", r.Proto, major)
		}
		h.ServeHTTP(w, r)
	})
}

func (*dialer) Duplex() bool         { return false }
func (*dialer) OversizeCloses() bool { return false } // clients send no commands

func (d *dialer) Dial(ctx context.Context, o conformance.DialOptions) (conformance.Client, error) {
	l := &link{dead: make(chan struct{})}
	rt, closeRT := d.roundTripper(l)
	l.closeTransport = closeRT
	h := http.Header{}
	if o.Origin != "" {
		h.Set("Origin", o.Origin)
	}
	c, err := sse.Dial(ctx, d.url, sse.DialOptions{
		Token: o.Token, Channels: o.Channels, Since: o.Since, Header: h,
		HTTPClient: &http.Client{Transport: rt},
	})
	if err != nil {
		l.close()
		return nil, err
	}
	return &client{Client: c, link: l, freezeErr: d.freezeErr}, nil
}

// client adapts sse.Client (Read, Cursor) to conformance.Client.
type client struct {
	*sse.Client
	link      *link
	freezeErr error
}

func (*client) Send(context.Context, []byte) error {
	return errors.New("sse: the stream is one-way; clients send no commands")
}

// Drop cuts the network first, as a lost connection would, then releases
// the client.
func (c *client) Drop() {
	c.link.close()
	_ = c.Client.Close()
}

func (c *client) Freeze() error {
	if c.freezeErr != nil {
		return c.freezeErr
	}
	c.link.frozen.Store(true)
	return nil
}

// link is one client's network: the sockets its transport dials. Frozen,
// it carries nothing either way and closes nothing, as a peer that
// vanished; closed, it closes them all.
type link struct {
	frozen         atomic.Bool
	dead           chan struct{} // closed by close: releases frozen reads and writes
	closeTransport func()

	mu     sync.Mutex
	socks  []io.Closer // guarded by mu
	closed bool        // guarded by mu
}

func (l *link) track(c io.Closer) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.socks = append(l.socks, c)
	return true
}

func (l *link) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	socks := l.socks
	l.mu.Unlock()
	close(l.dead)
	// The transport first: over QUIC it tells the server (a
	// CONNECTION_CLOSE), as a TCP socket's close does.
	if l.closeTransport != nil {
		l.closeTransport()
	}
	for _, s := range socks {
		_ = s.Close()
	}
}

func (l *link) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if !l.track(c) {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	return &freezeConn{Conn: c, l: l}, nil
}

func (l *link) dialQUIC(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	if !l.track(pc) {
		_ = pc.Close()
		return nil, net.ErrClosed
	}
	return quic.DialEarly(ctx, &freezePacketConn{PacketConn: pc, l: l}, to, tlsCfg, cfg)
}

// freezeConn stops reading and writing once its link is frozen. The
// kernel still acknowledges what the server sends, exactly as a proxy that
// stops forwarding would: only the peer's HTTP/2 layer falls silent.
type freezeConn struct {
	net.Conn
	l *link
}

func (c *freezeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.l.frozen.Load() {
		<-c.l.dead
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *freezeConn) Write(p []byte) (int, error) {
	if c.l.frozen.Load() {
		<-c.l.dead
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

// freezePacketConn drops every datagram, both ways, once its link is
// frozen: 100% packet loss. It embeds the net.PacketConn interface, not
// the *net.UDPConn, so that quic-go uses ReadFrom and WriteTo.
type freezePacketConn struct {
	net.PacketConn
	l *link
}

func (c *freezePacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || !c.l.frozen.Load() {
			return n, addr, err
		}
	}
}

// SetReadBuffer and SetWriteBuffer let quic-go size the socket's buffers.
func (c *freezePacketConn) SetReadBuffer(n int) error {
	return c.PacketConn.(*net.UDPConn).SetReadBuffer(n)
}

func (c *freezePacketConn) SetWriteBuffer(n int) error {
	return c.PacketConn.(*net.UDPConn).SetWriteBuffer(n)
}

func (c *freezePacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.l.frozen.Load() {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

// BenchmarkBroadcast: one channel, 1,000 subscribers over HTTP/1.1, with and
// without write coalescing. Run with -benchtime=2000x.
func BenchmarkBroadcast(b *testing.B) {
	b.Run("coalesce", func(b *testing.B) { conformance.BenchmarkBroadcast(b, http1{}, 1000, 0) })
	b.Run("one-per-write", func(b *testing.B) { conformance.BenchmarkBroadcast(b, http1{}, 1000, 1) })
}
