package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/auth"
	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/ws"
	"github.com/heraldhq/herald/transports/wt"
)

// testServer is a Herald server assembled from the public packages, as
// cmd/herald does: a memory broker, and in front of it one "instance" (a
// hub and the transport handlers) at a time, reached through a
// plain HTTP listener (WebSocket, SSE) and an HTTP/3 listener on UDP with
// a development certificate. Swapping the instance plays a load balancer
// sending a drained client to another instance on the same broker. The
// broker is every hub's Presence (used by tokens with presence grants).
type testServer struct {
	t      testing.TB
	broker *notify.MemoryBroker
	authn  *auth.Authenticator
	plain  *httptest.Server
	tcp    *trackingListener
	h3Addr string
	pool   *x509.CertPool
	cert   tls.Certificate // the HTTP/3 servers'
	route  http.Handler    // to the current instance
	h3     *h3Instance     // the HTTP/3 server at h3Addr (restartH3 replaces it)

	hubCfg  notify.HubConfig
	wireCfg wire.Config

	mu   sync.Mutex
	inst *instance // guarded by mu
}

type instance struct {
	hub *notify.Hub
	mux *http.ServeMux
}

// startTestServer starts a server whose tokens are single-use.
func startTestServer(t testing.TB) *testServer {
	t.Helper()
	return startTestServerWith(t, notify.HubConfig{}, wire.Config{})
}

// startTestServerWith starts a server with hub and transport settings
// (their Hub and Auth are filled in).
func startTestServerWith(t testing.TB, hubCfg notify.HubConfig, wireCfg wire.Config) *testServer {
	t.Helper()
	authn, err := auth.New(auth.Config{Secret: []byte(strings.Repeat("k", 32)), SingleUse: auth.NewMemoryReplay()})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, broker: notify.NewMemoryBroker(notify.MemoryConfig{HistorySize: 10000, Presence: notify.PresenceConfig{Interval: 20 * time.Millisecond}}), authn: authn, hubCfg: hubCfg, wireCfg: wireCfg}
	s.inst = s.newInstance()
	route := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		inst := s.inst
		s.mu.Unlock()
		inst.mux.ServeHTTP(w, r)
	})
	s.plain = httptest.NewUnstartedServer(route)
	s.tcp = &trackingListener{Listener: s.plain.Listener, conns: map[net.Conn]struct{}{}}
	s.plain.Listener = s.tcp
	s.plain.Start()
	s.startH3(route)
	t.Cleanup(func() {
		s.mu.Lock()
		_ = s.inst.hub.Close() // ends the SSE handlers, so Close does not wait on them
		s.mu.Unlock()
		s.plain.Close()
		_ = s.broker.Close()
	})
	return s
}

func (s *testServer) newInstance() *instance {
	hubCfg := s.hubCfg
	hubCfg.Linger = -1
	hubCfg.Presence = s.broker
	hub := notify.NewHub(s.broker, hubCfg)
	cfg := s.wireCfg
	cfg.Hub = hub
	cfg.Auth = tokenAuth{s.authn}
	mux := http.NewServeMux()
	mux.Handle("/v1/ws", ws.NewHandler(cfg))
	mux.Handle("/v1/sse", sse.NewHandler(cfg))
	mux.Handle("/v1/stream", h3.NewHandler(cfg))
	mux.Handle("/v1/wt", wt.NewHandler(cfg))
	return &instance{hub: hub, mux: mux}
}

// tokenAuth verifies connect tokens and refresh tokens, as cmd/herald does.
type tokenAuth struct{ a *auth.Authenticator }

func (t tokenAuth) Authenticate(r *http.Request) (*notify.Grants, error) {
	return t.a.Verify(r.Context(), wire.Token(r))
}

func (t tokenAuth) VerifyToken(ctx context.Context, token string) (*notify.Grants, error) {
	return t.a.Verify(ctx, token)
}

func (s *testServer) startH3(handler http.Handler) {
	cert, err := devcert.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cert, s.route = cert, handler
	s.h3 = s.startH3Instance(&tls.Config{Certificates: []tls.Certificate{cert}})
	s.h3Addr, s.pool = s.h3.addr, devcert.Pool(cert)
}

// h3Instance is one HTTP/3 server on its own UDP socket, serving the test
// server's instances (one hub): an instance of a Herald cluster, as far
// as its QUIC clients can tell.
type h3Instance struct {
	addr string
	udp  *net.UDPConn
	tls  *tls.Config
	// stop stops it, as a killed process would (CONNECTION_CLOSE to every
	// client, the socket released); idempotent.
	stop func()
}

// startH3Instance serves HTTP/3 with tlsCfg (which holds the certificate
// and, if the test wants them, session ticket keys) on a new socket,
// stopped at the end of the test.
func (s *testServer) startH3Instance(tlsCfg *tls.Config) *h3Instance {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		s.t.Fatal(err)
	}
	return s.serveH3(udp, tlsCfg, nil)
}

// serveH3 serves HTTP/3 and WebTransport on udp with tlsCfg and the
// stateless reset key (nil: none), as cmd/herald does: one socket, one
// wt.Server.
func (s *testServer) serveH3(udp *net.UDPConn, tlsCfg *tls.Config, resetKey *quic.StatelessResetKey) *h3Instance {
	srv := wt.NewServer(s.route, tlsCfg, s.wireCfg)
	ln, err := h3.ListenQUIC(udp, tlsCfg, wt.QUICConfig(s.wireCfg), resetKey)
	if err != nil {
		s.t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeListener(ln) }()
	in := &h3Instance{addr: udp.LocalAddr().String(), udp: udp, tls: tlsCfg}
	var once sync.Once
	in.stop = func() {
		once.Do(func() {
			_ = srv.Close()
			if err := <-served; !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				s.t.Errorf("h3 serve: %v", err)
			}
			_ = ln.Close()
			_ = udp.Close()
		})
	}
	s.t.Cleanup(in.stop)
	return in
}

// stopH3 stops the HTTP/3 server at h3Addr.
func (s *testServer) stopH3() { s.h3.stop() }

// restartH3 stops the HTTP/3 server at h3Addr and serves again on the same
// address (retried: the port may take a moment to be free again).
func (s *testServer) restartH3() {
	s.h3.stop()
	addr, err := net.ResolveUDPAddr("udp", s.h3Addr)
	if err != nil {
		s.t.Fatal(err)
	}
	for i := 0; ; i++ {
		udp, err := net.ListenUDP("udp", addr)
		if err == nil {
			s.h3 = s.serveH3(udp, s.h3.tls, nil)
			return
		}
		if i == 100 {
			s.t.Fatalf("relisten on %s: %v", s.h3Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// trackingListener keeps every accepted connection, hijacked WebSockets
// included (httptest forgets those), so that a test can cut them all.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns[c] = struct{}{}
		l.mu.Unlock()
	}
	return c, err
}

// cutAll closes every TCP connection: the network fails, nobody says
// goodbye.
func (l *trackingListener) cutAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		_ = c.Close()
	}
	clear(l.conns)
}

// hub returns the current instance's hub.
func (s *testServer) hub() *notify.Hub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inst.hub
}

// swap routes new connections to a fresh instance and returns the old one's
// hub, still serving its connections.
func (s *testServer) swap() *notify.Hub {
	next := s.newInstance()
	s.mu.Lock()
	old := s.inst
	s.inst = next
	s.mu.Unlock()
	s.t.Cleanup(func() { _ = next.hub.Close() })
	return old.hub
}

// config returns a client configuration for transport on this server, with
// single-use tokens for user and a short backoff.
func (s *testServer) config(transport Transport, user string, channels ...string) (Config, *tokenSource) {
	ts := &tokenSource{authn: s.authn, user: user, grants: channels}
	cfg := Config{
		Transport: transport,
		URL:       s.plain.URL,
		Token:     ts.token,
		Channels:  channels,
		Backoff:   Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}
	if transport == HTTP3 || transport == WebTransport {
		cfg.URL = "https://" + s.h3Addr
		cfg.TLSConfig = &tls.Config{RootCAs: s.pool}
	}
	return cfg, ts
}

// tokenSource mints a fresh single-use token per call and remembers them.
type tokenSource struct {
	authn    *auth.Authenticator
	user     string
	grants   []string
	presence []string // presence grants

	mu     sync.Mutex
	issued []string // guarded by mu
	reuse  atomic.Bool
	ttl    time.Duration // zero: a minute
	fail   atomic.Int32  // the next calls that fail
}

func (ts *tokenSource) token(context.Context) (string, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.reuse.Swap(false) && len(ts.issued) > 0 {
		return ts.issued[len(ts.issued)-1], nil // already used: 401
	}
	if ts.fail.Add(-1) >= 0 {
		return "", errors.New("token service down")
	}
	ts.fail.Store(0)
	ttl := ts.ttl
	if ttl == 0 {
		ttl = time.Minute
	}
	grants := append([]string{"room."}, ts.grants...)
	tok, _, err := ts.authn.Mint(auth.TokenRequest{User: ts.user, Channels: grants, Publish: []string{"room."}, Presence: ts.presence, TTL: ttl})
	if err == nil {
		ts.issued = append(ts.issued, tok)
	}
	return tok, err
}

func (ts *tokenSource) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.issued)
}

// publish publishes {"n":n} on channel.
func (s *testServer) publish(channel string, n int) notify.ID {
	s.t.Helper()
	return s.publishPadded(channel, n, 0)
}

// publishPadded publishes {"n":n,"pad":"…"} with pad bytes of padding.
func (s *testServer) publishPadded(channel string, n, pad int) notify.ID {
	s.t.Helper()
	data := `{"n":` + strconv.Itoa(n) + `}`
	if pad > 0 {
		data = `{"n":` + strconv.Itoa(n) + `,"pad":"` + strings.Repeat("x", pad) + `"}`
	}
	id, err := s.broker.Publish(context.Background(), notify.Publication{Channel: channel, Event: "n", Data: []byte(data)})
	if err != nil {
		s.t.Fatal(err)
	}
	return id
}

// dropAll closes every connection of the current instance with reason, as
// the hub does with a lagging client.
func (s *testServer) dropAll(reason error) int {
	conns := s.hub().Conns()
	for _, c := range conns {
		c.Close(reason)
	}
	return len(conns)
}

// run starts c.Run and stops it at the end of the test.
// runConnected makes a client of cfg that records its states, runs it
// (closed when the test ends) and waits until it is connected.
func runConnected(t testing.TB, cfg Config) (*states, *Client) {
	t.Helper()
	st := newStates()
	cfg.OnState = st.record
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	st.waitFor(t, "connected", isPhase(Connected))
	return st, c
}

func run(t testing.TB, c *Client) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	t.Cleanup(func() {
		_ = c.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("Run: %v; want ErrClosed", err)
		}
	})
}

// next returns the next envelope within 10s.
func next(t testing.TB, c *Client) *notify.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return e
}

// number returns n of a message published by testServer.publish.
func number(t testing.TB, e *notify.Envelope) int {
	t.Helper()
	var d struct{ N *int }
	if e.Type != notify.TypeMessage || json.Unmarshal(e.Data, &d) != nil || d.N == nil {
		t.Fatalf("not a numbered message: %s", e.JSON())
	}
	return *d.N
}

// states records a client's state changes.
type states struct {
	mu   sync.Mutex
	list []State
	ch   chan State // every state, for tests that wait for one
}

func newStates() *states { return &states{ch: make(chan State, 1024)} }

func (s *states) record(st State) {
	s.mu.Lock()
	s.list = append(s.list, st)
	s.mu.Unlock()
	select {
	case s.ch <- st:
	default:
	}
}

// waitFor returns the first state (from now on) that ok accepts.
func (s *states) waitFor(t testing.TB, what string, ok func(State) bool) State {
	t.Helper()
	return s.waitWithin(t, what, ok, 10*time.Second)
}

// waitWithin is waitFor with another timeout.
func (s *states) waitWithin(t testing.TB, what string, ok func(State) bool, d time.Duration) State {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case st := <-s.ch:
			if ok(st) {
				return st
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (s *states) all() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]State(nil), s.list...)
}

// last is the latest state recorded.
func (s *states) last() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.list) == 0 {
		return State{}
	}
	return s.list[len(s.list)-1]
}

func isPhase(p Phase) func(State) bool { return func(s State) bool { return s.Phase == p } }
