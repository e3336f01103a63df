package h3_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go"

	"github.com/heraldhq/herald/internal/udptest"
)

// hook is a DialOptions.Dial that records its calls and dials on a
// counting socket of its own, to target when set (else addr), closing
// the socket when the connection ends.
type hook struct {
	target string
	calls  atomic.Int32
	addr   atomic.Value // string: the last addr asked for
	cfg    atomic.Pointer[quic.Config]
	tls    atomic.Pointer[tls.Config]
	sock   atomic.Pointer[udptest.Socket]
	closed chan struct{} // closed once the socket is
}

func newHook() *hook { return &hook{closed: make(chan struct{})} }

func (h *hook) dial(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
	h.calls.Add(1)
	h.addr.Store(addr)
	h.cfg.Store(cfg)
	h.tls.Store(tlsCfg)
	if h.target != "" {
		addr = h.target
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	sock := &udptest.Socket{PacketConn: udp}
	h.sock.Store(sock)
	tr := &quic.Transport{Conn: sock}
	conn, err := tr.DialEarly(ctx, raddr, tlsCfg, cfg)
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return nil, err
	}
	go func() {
		<-conn.Context().Done()
		_ = tr.Close()
		_ = udp.Close()
		close(h.closed)
	}()
	return conn, nil
}

// TestDialHook: DialOptions.Dial opens the connection — with the address,
// TLS and QUIC settings it is given — and the stream runs over its socket;
// Close closes the connection it returned.
func TestDialHook(t *testing.T) {
	e := newEnv(t, wire.Config{})
	h := newHook()
	h.target = e.srv.addr
	// The URL names a port nobody listens on: only the hook's routing
	// reaches the server (as a load balancer would).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := h3.Dial(ctx, "https://127.0.0.1:9/v1/stream", h3.DialOptions{
		Token: "alice", Duplex: true, TLSConfig: e.srv.tlsConfig(),
		QUICConfig: &quic.Config{KeepAlivePeriod: 2 * time.Second, MaxIdleTimeout: 7 * time.Second},
		Dial:       h.dial,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expect(t, c, notify.TypeSubscribed, "user:alice")
	if err := c.Ping(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if pong := expect(t, c, notify.TypePong, ""); pong.Ref != "r1" {
		t.Fatalf("pong %s; want ref r1", pong.JSON())
	}

	if n := h.calls.Load(); n != 1 {
		t.Errorf("hook called %d times; want 1", n)
	}
	if a := h.addr.Load(); a != "127.0.0.1:9" {
		t.Errorf("hook asked for %v; want the URL's host:port", a)
	}
	if cfg := h.cfg.Load(); cfg.MaxIdleTimeout != 7*time.Second || cfg.KeepAlivePeriod != 2*time.Second {
		t.Errorf("hook got idle timeout %v, keep-alive %v; want the DialOptions' 7s, 2s", cfg.MaxIdleTimeout, cfg.KeepAlivePeriod)
	}
	if tc := h.tls.Load(); tc.ServerName != "127.0.0.1" || len(tc.NextProtos) != 1 || tc.NextProtos[0] != "h3" {
		t.Errorf("hook got server name %q, ALPN %q", tc.ServerName, tc.NextProtos)
	}
	sock := h.sock.Load()
	if sock.Sent.Load() == 0 || sock.Recv.Load() == 0 {
		t.Errorf("the hook's socket carried %d bytes out, %d in; want the stream's", sock.Sent.Load(), sock.Recv.Load())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the connection the hook returned")
	}
}

// TestDialHookError: the hook's error is Dial's.
func TestDialHookError(t *testing.T) {
	e := newEnv(t, wire.Config{})
	boom := errors.New("boom")
	_, err := h3.Dial(context.Background(), e.srv.url(), h3.DialOptions{
		Token: "bob", TLSConfig: e.srv.tlsConfig(),
		Dial: func(context.Context, string, *tls.Config, *quic.Config) (*quic.Conn, error) { return nil, boom },
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Dial: %v; want the hook's error", err)
	}
}

// TestIdleTimeoutFindsDeadServer: a server that falls silent (every
// datagram lost) ends the stream within KeepAlivePeriod + MaxIdleTimeout
// of the client's QUICConfig — shorter than the server's — with an idle
// timeout error.
func TestIdleTimeoutFindsDeadServer(t *testing.T) {
	e := newEnv(t, wire.Config{})
	h := newHook()
	const keepAlive, idle = 200 * time.Millisecond, 800 * time.Millisecond
	c := e.dial(h3.DialOptions{
		Token: "bob", Channels: []string{"news"},
		QUICConfig: &quic.Config{KeepAlivePeriod: keepAlive, MaxIdleTimeout: idle},
		Dial:       h.dial,
	})
	expect(t, c, notify.TypeSubscribed, "user:bob")
	expect(t, c, notify.TypeSubscribed, "news")
	h.sock.Load().Muted.Store(true)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Read(ctx)
	took := time.Since(start)
	var idleErr *quic.IdleTimeoutError
	if !errors.As(err, &idleErr) {
		t.Fatalf("Read: %v; want a QUIC idle timeout", err)
	}
	// Lower bound: the idle timeout itself; upper: keep-alive + idle, and
	// slack for a busy machine.
	if took < idle || took > keepAlive+idle+2*time.Second {
		t.Fatalf("the silent server was noticed after %v; want about %v–%v", took, idle, keepAlive+idle)
	}
	t.Logf("silent server noticed after %v", took.Round(time.Millisecond))
}
