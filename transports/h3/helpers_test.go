package h3_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
)

// testServer is an HTTP/3 server on a loopback UDP socket serving handler
// at /v1/stream, with a fresh development certificate.
type testServer struct {
	addr string // host:port of the UDP socket
	pool *x509.CertPool
}

func startServer(t testing.TB, handler http.Handler, cfg wire.Config) *testServer {
	t.Helper()
	cert, err := devcert.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/stream", handler)
	srv := h3.NewServer(mux, &tls.Config{Certificates: []tls.Certificate{cert}}, cfg)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(udp) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		_ = udp.Close()
	})
	return &testServer{addr: udp.LocalAddr().String(), pool: devcert.Pool(cert)}
}

func (s *testServer) url() string { return "https://" + s.addr + "/v1/stream" }

func (s *testServer) tlsConfig() *tls.Config { return &tls.Config{RootCAs: s.pool} }

// testEnv is a memory broker, a hub and a server.
type testEnv struct {
	t      *testing.T
	broker *notify.MemoryBroker
	hub    *notify.Hub
	srv    *testServer
}

func newEnv(t *testing.T, cfg wire.Config) *testEnv {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	h := notify.NewHub(b, notify.HubConfig{})
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	cfg.Hub, cfg.Auth = h, testAuth
	return &testEnv{t: t, broker: b, hub: h, srv: startServer(t, h3.NewHandler(cfg), cfg)}
}

// testAuth knows bob (subscribe news) and alice (subscribe and publish
// room.*).
var testAuth = wire.AuthFunc(func(r *http.Request) (*notify.Grants, error) {
	switch wire.Token(r) {
	case "bob":
		return &notify.Grants{User: "bob", Subscribe: []string{"news"}}, nil
	case "alice":
		return &notify.Grants{User: "alice", Subscribe: []string{"room."}, Publish: []string{"room."}}, nil
	}
	return nil, notify.Errorf(notify.ErrUnauthorized, "unknown token")
})

func (e *testEnv) dial(opts h3.DialOptions) *h3.Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if opts.TLSConfig == nil {
		opts.TLSConfig = e.srv.tlsConfig()
	}
	c, err := h3.Dial(ctx, e.srv.url(), opts)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// publish publishes data on channel and returns the message as the core
// encodes it.
func (e *testEnv) publish(channel, data string) *notify.Envelope {
	e.t.Helper()
	id, err := e.broker.Publish(context.Background(), notify.Publication{Channel: channel, Event: "test", Data: []byte(data)})
	if err != nil {
		e.t.Fatal(err)
	}
	h, err := e.broker.History(context.Background(), channel, notify.ID{}, 1000)
	if err != nil || len(h.Messages) == 0 || h.Messages[len(h.Messages)-1].ID != id {
		e.t.Fatalf("history of %v: %v", id, err)
	}
	return h.Messages[len(h.Messages)-1]
}

// expect reads the next envelope and checks its type and channel.
func expect(t *testing.T, c *h3.Client, typ, channel string) *notify.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read (want %s %s): %v", typ, channel, err)
	}
	if e.Type != typ || e.Channel != channel {
		t.Fatalf("got %s; want a %s on %q", e.JSON(), typ, channel)
	}
	return e
}

// udpProxy relays one client's datagrams to a server and back; frozen, it
// drops them all, both ways, as a dead network path would.
type udpProxy struct {
	front  *net.UDPConn // the client sends here
	back   *net.UDPConn // connected to the server
	client atomic.Pointer[net.UDPAddr]
	frozen atomic.Bool
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *udpProxy {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{front: front, back: back}
	p.wg.Go(p.toServer)
	p.wg.Go(p.toClient)
	t.Cleanup(p.close)
	return p
}

func (p *udpProxy) addr() string { return p.front.LocalAddr().String() }

func (p *udpProxy) toServer() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.front.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p.client.Store(from)
		if !p.frozen.Load() {
			_, _ = p.back.Write(buf[:n])
		}
	}
}

func (p *udpProxy) toClient() {
	buf := make([]byte, 64<<10)
	for {
		n, err := p.back.Read(buf)
		if err != nil {
			return
		}
		if to := p.client.Load(); to != nil && !p.frozen.Load() {
			_, _ = p.front.WriteToUDP(buf[:n], to)
		}
	}
}

func (p *udpProxy) freeze() { p.frozen.Store(true) }

func (p *udpProxy) close() {
	_ = p.front.Close()
	_ = p.back.Close()
	p.wg.Wait()
}
