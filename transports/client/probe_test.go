package client

import (
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/heraldhq/herald/internal/udptest"
	"github.com/heraldhq/herald/transports/h3"
)

// quietQUIC has no keep-alive and a long idle timeout: whatever a test
// sees within seconds comes from the probes.
func quietQUIC() *quic.Config { return &quic.Config{MaxIdleTimeout: time.Minute} }

// resetKey is the stateless reset key of the probe tests' servers, as
// every cmd/herald instance has one (derived from --secret): a probe that
// named a connection the server does not know would draw a reset.
var resetKey, _ = h3.DeriveResetKey([]byte("a secret every instance shares, 32+ bytes"))

// keyedConfig is s.config for transport tr on an HTTP/3 instance of its
// own that has resetKey.
func keyedConfig(t *testing.T, s *testServer, tr Transport) Config {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	in := s.serveH3(udp, &tls.Config{Certificates: []tls.Certificate{s.cert}}, resetKey)
	t.Cleanup(in.stop)
	cfg, _ := s.config(tr, "42", "news")
	cfg.URL = "https://" + in.addr
	return cfg
}

// stillConnected fails the test unless the client is connected 1.5 s on:
// the control cases, where nothing should end the connection that soon.
func stillConnected(t *testing.T, st *states, why string) {
	t.Helper()
	time.Sleep(1500 * time.Millisecond)
	if got := st.last(); got.Phase != Connected {
		t.Fatalf("%s the client went %v (%v); want still connected, knowing nothing", why, got.Phase, got.Err)
	}
}

// TestProbeNoticesDeadPort: an idle HTTP3 connection without keep-alives
// notices a killed server (its port closed, the kernel answering ICMP)
// through its liveness probe; without probes it sends nothing and notices
// nothing.
func TestProbeNoticesDeadPort(t *testing.T) {
	for _, tc := range []struct {
		name  string
		probe time.Duration
	}{{"probes", 100 * time.Millisecond}, {"no probes", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startTestServer(t)
			in := s.startH3Instance(&tls.Config{Certificates: []tls.Certificate{s.cert}})
			cfg, _ := s.config(HTTP3, "42", "news")
			cfg.URL = "https://" + in.addr
			cfg.QUICConfig = quietQUIC()
			cfg.DialQUIC = (&QUICDialer{Probe: tc.probe}).Dial
			st, _ := runConnected(t, cfg)
			time.Sleep(500 * time.Millisecond) // every packet acknowledged: the connection falls silent
			_ = in.udp.Close()                 // the port is dead: no CONNECTION_CLOSE, ICMP from the kernel
			died := time.Now()
			if tc.probe < 0 {
				stillConnected(t, st, "without probes")
				return
			}
			down := st.waitFor(t, "reconnecting", isPhase(Reconnecting))
			took := time.Since(died)
			if !errors.Is(down.Err, syscall.ECONNREFUSED) {
				t.Errorf("reconnecting after %v; want ECONNREFUSED (ICMP port unreachable)", down.Err)
			}
			if took > time.Second {
				t.Errorf("the dead port was noticed after %v; want about the probe interval, %v", took, tc.probe)
			}
			t.Logf("dead port noticed after %v", took.Round(time.Millisecond))
		})
	}
}

// TestProbeMeetsStatelessReset: a server restarted on the same port with
// the same reset key answers an idle client's probe with a stateless reset
// (a keep-alive PING, 42 bytes or less, would get none); the client
// reconnects to it and resumes. Another key: the reset is not valid and
// the client notices nothing.
func TestProbeMeetsStatelessReset(t *testing.T) {
	key := resetKey
	other, _ := h3.DeriveResetKey([]byte("the secret of another deployment, 32+ b."))
	for _, tc := range []struct {
		name  string
		again *quic.StatelessResetKey
	}{{"same key", key}, {"other key", other}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startTestServer(t)
			tlsCfg := &tls.Config{Certificates: []tls.Certificate{s.cert}}
			udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			in := s.serveH3(udp, tlsCfg, key)
			t.Cleanup(in.stop)
			cfg, _ := s.config(HTTP3, "42", "news")
			cfg.URL = "https://" + in.addr
			cfg.Since = "news=0-0"
			cfg.QUICConfig = quietQUIC()
			cfg.DialQUIC = (&QUICDialer{Probe: 100 * time.Millisecond}).Dial
			st, c := runConnected(t, cfg)
			s.publish("news", 1)
			if n := number(t, next(t, c)); n != 1 {
				t.Fatalf("got message %d; want 1", n)
			}
			time.Sleep(500 * time.Millisecond) // every packet acknowledged: the connection falls silent
			_ = in.udp.Close()                 // killed: its connections vanish unannounced
			again, err := net.ListenUDP("udp", udp.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			restarted := time.Now()
			t.Cleanup(s.serveH3(again, tlsCfg, tc.again).stop)
			s.publish("news", 2)
			if tc.again != key {
				stillConnected(t, st, "with another key")
				return
			}
			down := st.waitFor(t, "reconnecting", isPhase(Reconnecting))
			took := time.Since(restarted)
			var reset *quic.StatelessResetError
			if !errors.As(down.Err, &reset) {
				t.Errorf("reconnecting after %v; want a stateless reset", down.Err)
			}
			if took > time.Second {
				t.Errorf("the restart was noticed after %v; want about the probe interval", took)
			}
			if n := number(t, next(t, c)); n != 2 {
				t.Fatalf("after the restart, got message %d; want 2", n)
			}
			t.Logf("restart noticed after %v", took.Round(time.Millisecond))
		})
	}
}

// TestProbeSilentOnLiveServer: a live server answers no probe (they cost
// it a datagram each, no acknowledgement); a connection that is writing
// sends none; and the connection stays well after probes.
func TestProbeSilentOnLiveServer(t *testing.T) {
	s := startTestServer(t)
	cfg := keyedConfig(t, s, HTTP3)
	cfg.QUICConfig = quietQUIC()
	var sock atomic.Pointer[udptest.Socket] // counts bytes both ways
	const every = 50 * time.Millisecond
	cfg.DialQUIC = (&QUICDialer{Probe: every, Wrap: func(pc net.PacketConn) net.PacketConn {
		s := &udptest.Socket{PacketConn: pc}
		sock.Store(s)
		return s
	}}).Dial
	st, c := runConnected(t, cfg)
	time.Sleep(300 * time.Millisecond) // the handshake's last packets
	s0 := sock.Load()
	sent0, recv0 := s0.Sent.Load(), s0.Recv.Load()
	const window = time.Second
	time.Sleep(window)
	// Nothing but probes is written while the connection is silent.
	probes, answers := (s0.Sent.Load()-sent0)/probeSize, s0.Recv.Load()-recv0
	if want := int64(window / every / 2); probes < want {
		t.Errorf("%d probes in %v; want at least %d (one per %v)", probes, window, want, every)
	}
	if answers != 0 {
		t.Errorf("the server sent %d bytes in answer to %d probes; want none", answers, probes)
	}
	if got := st.last(); got.Phase != Connected {
		t.Fatalf("after the probes the client is %v (%v); want connected", got.Phase, got.Err)
	}
	s.publish("news", 1)
	if n := number(t, next(t, c)); n != 1 {
		t.Fatalf("got message %d; want 1", n)
	}
	t.Logf("%d probes in %v, %d bytes answered", probes, window, answers)
}

// TestProbeWriteErrorEndsRead: when a probe's write is what meets the
// kernel's ICMP error (it came first, so the blocked read will never see
// it), the read that quic-go is blocked in returns that error.
func TestProbeWriteErrorEndsRead(t *testing.T) {
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	raddr := dead.LocalAddr().(*net.UDPAddr)
	_ = dead.Close()
	sock, err := DialUDP(nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	p := newProber(sock, sock, 20*time.Millisecond)
	defer p.Close()
	// A 1-RTT packet as quic-go writes one: it draws the ICMP error, which
	// the probe's write then meets, no read being under way.
	pkt := make([]byte, 40)
	pkt[0] = 0x40
	if _, err := p.WriteTo(pkt, raddr); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	read := make(chan error, 1)
	go func() {
		_, _, err := p.ReadFrom(make([]byte, 1500))
		read <- err
	}()
	select {
	case err := <-read:
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("read ended with %v; want ECONNREFUSED", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the read is still blocked: the probe's error was lost")
	}
}

// TestProbesBetweenDeliveries: probes every 5 ms, from the handshake on
// (none is sent before a 1-RTT packet) and in the gaps between deliveries
// spaced wider than that, on a connection that is acknowledging data:
// every message arrives once and in order, and the connection is never
// lost (a resume would hide a loss, so any reconnection fails the test).
func TestProbesBetweenDeliveries(t *testing.T) {
	for _, tr := range []Transport{HTTP3, WebTransport} {
		t.Run(string(tr), func(t *testing.T) {
			s := startTestServer(t)
			cfg := keyedConfig(t, s, tr)
			cfg.Since = "news=0-0" // everything, however soon it is published
			cfg.QUICConfig = quietQUIC()
			cfg.DialQUIC = (&QUICDialer{Probe: 5 * time.Millisecond}).Dial
			st, c := runConnected(t, cfg)
			const n = 40
			go func() {
				for i := 1; i <= n; i++ {
					s.publish("news", i)
					time.Sleep(time.Duration(10+i%3*10) * time.Millisecond) // 10, 20, 30 ms gaps
				}
			}()
			for i := 1; i <= n; i++ {
				if got := number(t, next(t, c)); got != i {
					t.Fatalf("message %d arrived as number %d", i, got)
				}
			}
			for _, state := range st.all() {
				if state.Phase == Reconnecting {
					t.Fatalf("the connection was lost while probing: %v", state.Err)
				}
			}
		})
	}
}
