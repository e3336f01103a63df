package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/heraldhq/herald/internal/udptest"
)

// quicDialer is a Config.DialQUIC that dials every connection on a socket
// of its own, closed when the connection ends, and records what it was
// asked.
type quicDialer struct {
	bytes   atomic.Int64 // on every socket, both ways
	mu      sync.Mutex
	cfgs    []*quic.Config    // guarded by mu: the config of every call
	sockets []*udptest.Socket // guarded by mu
	open    sync.WaitGroup    // sockets not closed yet
}

func (d *quicDialer) dial(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	sock := &udptest.Socket{PacketConn: udp, Shared: &d.bytes}
	d.mu.Lock()
	d.cfgs = append(d.cfgs, cfg)
	d.sockets = append(d.sockets, sock)
	d.mu.Unlock()
	tr := &quic.Transport{Conn: sock}
	conn, err := tr.DialEarly(ctx, raddr, tlsCfg, cfg)
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return nil, err
	}
	d.open.Add(1)
	go func() {
		defer d.open.Done()
		<-conn.Context().Done()
		_ = tr.Close()
		_ = udp.Close()
	}()
	return conn, nil
}

func (d *quicDialer) calls() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.cfgs)
}

func (d *quicDialer) config(i int) *quic.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfgs[i]
}

func (d *quicDialer) socket(i int) *udptest.Socket {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sockets[i]
}

func TestQUICConfigDefault(t *testing.T) {
	c, err := New(Config{URL: "https://h:8443", Transport: HTTP3})
	if err != nil {
		t.Fatal(err)
	}
	if q := c.cfg.QUICConfig; q.KeepAlivePeriod != 5*time.Second || q.MaxIdleTimeout != 15*time.Second || q.HandshakeIdleTimeout != 10*time.Second || q.Allow0RTT {
		t.Errorf("default QUIC config: keep-alive %v, idle timeout %v, handshake idle timeout %v, 0-RTT %v; want 5s, 15s, 10s, false",
			q.KeepAlivePeriod, q.MaxIdleTimeout, q.HandshakeIdleTimeout, q.Allow0RTT)
	}
	mine := &quic.Config{MaxIdleTimeout: time.Minute}
	c, err = New(Config{URL: "https://h:8443", Transport: HTTP3, QUICConfig: mine})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.QUICConfig != mine {
		t.Error("the QUICConfig given was replaced")
	}
}

// TestDialQUICEveryReconnect: every HTTP3 connection attempt goes through
// DialQUIC, with a copy of the default QUIC configuration (the caller's
// is not written to), and closing a connection lets the hook release its
// socket.
func TestDialQUICEveryReconnect(t *testing.T) {
	s := startTestServer(t)
	cfg, _ := s.config(HTTP3, "42", "news")
	cfg.Since = "news=0-0" // everything, however soon it is published
	d := &quicDialer{}
	cfg.DialQUIC = d.dial
	st := newStates()
	cfg.OnState = st.record
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)

	const drops = 3
	for i := range drops + 1 {
		st.waitFor(t, "connected", isPhase(Connected))
		if i < drops {
			if err := waitConns(s, 1); err != nil {
				t.Fatal(err)
			}
			s.dropAll(nil)
			st.waitFor(t, "reconnecting", isPhase(Reconnecting))
		}
	}
	s.publish("news", 1)
	if n := number(t, next(t, c)); n != 1 {
		t.Fatalf("got message %d; want 1", n)
	}
	if n := d.calls(); n != drops+1 {
		t.Errorf("DialQUIC called %d times for %d connections", n, drops+1)
	}
	for i := range d.calls() {
		q := d.config(i)
		if def := DefaultQUICConfig(); q.KeepAlivePeriod != def.KeepAlivePeriod || q.MaxIdleTimeout != def.MaxIdleTimeout {
			t.Errorf("dial %d: keep-alive %v, idle timeout %v; want the defaults %v, %v", i, q.KeepAlivePeriod, q.MaxIdleTimeout, def.KeepAlivePeriod, def.MaxIdleTimeout)
		}
		if q == c.cfg.QUICConfig {
			t.Errorf("dial %d was given the Config's QUICConfig itself, not a copy", i)
		}
	}
	if d.bytes.Load() == 0 {
		t.Error("no bytes through the hook's sockets")
	}
	_ = c.Close()
	done := make(chan struct{})
	go func() { d.open.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection the client dialed was left open after Close")
	}
}

// TestQUICIdleTimeoutReconnects: a server that falls silent is noticed by
// the QUICConfig's idle timeout (here 0.5 s, against 60 s on the server),
// and the client reconnects and resumes what was published meanwhile.
func TestQUICIdleTimeoutReconnects(t *testing.T) {
	for _, tr := range []Transport{HTTP3, WebTransport} {
		t.Run(string(tr), func(t *testing.T) { testQUICIdleTimeoutReconnects(t, tr) })
	}
}

func testQUICIdleTimeoutReconnects(t *testing.T, tr Transport) {
	s := startTestServer(t)
	cfg, _ := s.config(tr, "42", "news")
	cfg.Since = "news=0-0" // everything, however soon it is published
	const keepAlive, idle = 100 * time.Millisecond, 500 * time.Millisecond
	cfg.QUICConfig = &quic.Config{KeepAlivePeriod: keepAlive, MaxIdleTimeout: idle}
	d := &quicDialer{}
	cfg.DialQUIC = d.dial
	st, c := runConnected(t, cfg)
	s.publish("news", 1)
	if n := number(t, next(t, c)); n != 1 {
		t.Fatalf("got message %d; want 1", n)
	}

	d.socket(0).Muted.Store(true)
	muted := time.Now()
	s.publish("news", 2) // lost on the silent path
	down := st.waitFor(t, "reconnecting", isPhase(Reconnecting))
	took := time.Since(muted)
	var idleErr *quic.IdleTimeoutError
	if !errors.As(down.Err, &idleErr) {
		t.Errorf("reconnecting after %v; want a QUIC idle timeout", down.Err)
	}
	if took < idle || took > keepAlive+idle+2*time.Second {
		t.Errorf("the silent server was noticed after %v; want about %v–%v", took, idle, keepAlive+idle)
	}
	if n := number(t, next(t, c)); n != 2 {
		t.Fatalf("after reconnecting, got message %d; want 2", n)
	}
	if n := d.calls(); n != 2 {
		t.Errorf("DialQUIC called %d times; want 2", n)
	}
	if q := d.config(1); q.MaxIdleTimeout != idle || q.KeepAlivePeriod != keepAlive {
		t.Errorf("redial with keep-alive %v, idle timeout %v; want the QUICConfig's", q.KeepAlivePeriod, q.MaxIdleTimeout)
	}
	t.Logf("silent server noticed after %v", took.Round(time.Millisecond))
}

// TestQUICDefaultsNoticeSilentServer: with DefaultQUICConfig (no
// QUICConfig given) a server whose packets are all lost — its host or
// path gone, no ICMP, probes unanswered — is noticed within 20 s (a
// keep-alive period and the idle timeout), not the server's 60 s, and the
// client reconnects. The bound is generous: this is not a speed test.
func TestQUICDefaultsNoticeSilentServer(t *testing.T) {
	for _, tr := range []Transport{HTTP3, WebTransport} {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			testQUICDefaultsNoticeSilentServer(t, tr)
		})
	}
}

func testQUICDefaultsNoticeSilentServer(t *testing.T, tr Transport) {
	s := startTestServer(t)
	cfg, _ := s.config(tr, "42", "news")
	d := &quicDialer{}
	cfg.DialQUIC = d.dial
	st, _ := runConnected(t, cfg)
	d.socket(0).Muted.Store(true)
	muted := time.Now()
	def := DefaultQUICConfig()
	down := st.waitWithin(t, "reconnecting", isPhase(Reconnecting), def.KeepAlivePeriod+def.MaxIdleTimeout+10*time.Second)
	took := time.Since(muted)
	var idleErr *quic.IdleTimeoutError
	if !errors.As(down.Err, &idleErr) {
		t.Errorf("reconnecting after %v; want a QUIC idle timeout", down.Err)
	}
	if bound := def.KeepAlivePeriod + def.MaxIdleTimeout; took > bound+5*time.Second {
		t.Errorf("the silent server was noticed after %v; want within about %v", took, bound)
	}
	st.waitFor(t, "connected again", isPhase(Connected))
	t.Logf("silent server noticed after %v", took.Round(time.Millisecond))
}

// TestQUICNoticesDeadPort: a QUIC server whose process is gone (its UDP
// port closed without a word, as SIGKILL leaves it) is noticed from the
// kernel's ICMP port unreachable, which the default dialer's connected
// socket hears, at the first keep-alive after the death — not at the idle
// timeout, here 60 s.
func TestQUICNoticesDeadPort(t *testing.T) {
	s := startTestServer(t)
	in := s.startH3Instance(&tls.Config{Certificates: []tls.Certificate{s.cert}})
	cfg, _ := s.config(HTTP3, "42", "news")
	cfg.URL = "https://" + in.addr
	cfg.QUICConfig = &quic.Config{KeepAlivePeriod: 200 * time.Millisecond, MaxIdleTimeout: time.Minute}
	st, _ := runConnected(t, cfg)
	_ = in.udp.Close() // the port is dead: the kernel answers ICMP
	died := time.Now()
	down := st.waitFor(t, "reconnecting", isPhase(Reconnecting))
	if took := time.Since(died); took > 5*time.Second {
		t.Errorf("the dead port was noticed after %v; want about a keep-alive period", took)
	}
	if !errors.Is(down.Err, syscall.ECONNREFUSED) {
		t.Errorf("reconnecting after %v; want ECONNREFUSED (ICMP port unreachable)", down.Err)
	}
}

// resumeRecorder is a DialQUIC that dials whichever instance target names
// (a load balancer that moved the client) and records whether each
// handshake resumed a TLS session.
type resumeRecorder struct {
	target  atomic.Pointer[string]
	mu      sync.Mutex
	resumed []bool // guarded by mu: per connection, in order
}

func (d *resumeRecorder) dial(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
	conn, err := (&QUICDialer{}).Dial(ctx, *d.target.Load(), tlsCfg, cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-conn.HandshakeComplete():
	case <-conn.Context().Done():
		return nil, context.Cause(conn.Context())
	case <-ctx.Done():
		_ = conn.CloseWithError(0, "")
		return nil, ctx.Err()
	}
	d.mu.Lock()
	d.resumed = append(d.resumed, conn.ConnectionState().TLS.DidResume)
	d.mu.Unlock()
	return conn, nil
}

func (d *resumeRecorder) list() []bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]bool(nil), d.resumed...)
}

// TestQUICResumesOnAnotherInstance: an HTTP3 client whose instance died
// reconnects to another one that shares the TLS session ticket key and
// resumes its TLS session there (no certificate signature or
// verification); an instance with another key makes a full handshake.
func TestQUICResumesOnAnotherInstance(t *testing.T) {
	s := startTestServer(t)
	shared, other := [32]byte{1}, [32]byte{2}
	withKey := func(k [32]byte) *h3Instance {
		tlsCfg := &tls.Config{Certificates: []tls.Certificate{s.cert}}
		tlsCfg.SetSessionTicketKeys([][32]byte{k})
		return s.startH3Instance(tlsCfg)
	}
	a, b, c := withKey(shared), withKey(shared), withKey(other)
	cfg, _ := s.config(HTTP3, "42", "news")
	d := &resumeRecorder{}
	d.target.Store(&a.addr)
	cfg.DialQUIC = d.dial
	st, _ := runConnected(t, cfg)
	for i, in := range []*h3Instance{b, c} {
		time.Sleep(200 * time.Millisecond) // the session ticket follows the handshake
		d.target.Store(&in.addr)           // the balancer moves the client…
		if i == 0 {
			_ = a.udp.Close() // …because its instance died
		} else {
			_ = b.udp.Close()
		}
		st.waitFor(t, "reconnecting", isPhase(Reconnecting))
		st.waitFor(t, "connected again", isPhase(Connected))
	}
	got := d.list()
	if len(got) != 3 || got[0] || !got[1] || got[2] {
		t.Errorf("resumed per connection (A, B sharing A's ticket key, C with another): %v; want [false true false]", got)
	}
}
