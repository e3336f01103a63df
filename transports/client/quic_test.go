package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
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
	if q := c.cfg.QUICConfig; q.KeepAlivePeriod != 500*time.Millisecond || q.MaxIdleTimeout != 1500*time.Millisecond || q.HandshakeIdleTimeout != 3*time.Second || q.Allow0RTT {
		t.Errorf("default QUIC config: keep-alive %v, idle timeout %v, handshake idle timeout %v, 0-RTT %v; want 500ms, 1.5s, 3s, false",
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
// QUICConfig given) a server whose packets are all lost — killed, or its
// path gone — is noticed within 2 s (a keep-alive period and the idle
// timeout), not the server's
// 60 s, and the client reconnects. The bound is generous: this is not a
// speed test.
func TestQUICDefaultsNoticeSilentServer(t *testing.T) {
	for _, tr := range []Transport{HTTP3, WebTransport} {
		t.Run(string(tr), func(t *testing.T) { testQUICDefaultsNoticeSilentServer(t, tr) })
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
	down := st.waitFor(t, "reconnecting", isPhase(Reconnecting))
	took := time.Since(muted)
	var idleErr *quic.IdleTimeoutError
	if !errors.As(down.Err, &idleErr) {
		t.Errorf("reconnecting after %v; want a QUIC idle timeout", down.Err)
	}
	def := DefaultQUICConfig()
	if bound := def.KeepAlivePeriod + def.MaxIdleTimeout; took > bound+5*time.Second {
		t.Errorf("the silent server was noticed after %v; want within about %v", took, bound)
	}
	st.waitFor(t, "connected again", isPhase(Connected))
	t.Logf("silent server noticed after %v", took.Round(time.Millisecond))
}
