package h3_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func TestParseResetKey(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	k, err := h3.ParseResetKey(good)
	if err != nil {
		t.Fatalf("ParseResetKey(64 hex digits): %v", err)
	}
	if k[0] != 0x01 || k[31] != 0xef {
		t.Errorf("key %x; want the digits' bytes", k[:])
	}
	for _, bad := range []string{"", "abc", good[:62], good + "00", strings.Repeat("zz", 32), "secret-secret-secret-secret-secret"} {
		if _, err := h3.ParseResetKey(bad); !errors.Is(err, h3.ErrResetKey) {
			t.Errorf("ParseResetKey(%q): %v; want ErrResetKey", bad, err)
		}
	}
}

func TestDeriveResetKey(t *testing.T) {
	a1, err := h3.DeriveResetKey([]byte("the shared token-signing secret, 32+ bytes"))
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := h3.DeriveResetKey([]byte("the shared token-signing secret, 32+ bytes"))
	b, _ := h3.DeriveResetKey([]byte("another token-signing secret, 32+ bytes.."))
	if *a1 != *a2 {
		t.Error("one secret derived two keys: instances would not share it")
	}
	if *a1 == *b {
		t.Error("two secrets derived one key")
	}
	if _, err := h3.DeriveResetKey(nil); err == nil {
		t.Error("DeriveResetKey(nil) succeeded; want an error")
	}
}

// quicServer is a Listen'ed QUIC listener on a loopback UDP port that
// accepts connections and holds them.
type quicServer struct {
	udp *net.UDPConn
	ln  *h3.Listener
}

func listenQUIC(t *testing.T, addr *net.UDPAddr, cert tls.Certificate, key *quic.StatelessResetKey) *quicServer {
	t.Helper()
	udp, err := net.ListenUDP("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := h3.Listen(udp, &tls.Config{Certificates: []tls.Certificate{cert}}, wire.Config{}, key)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go echoByte(conn)
		}
	}()
	s := &quicServer{udp: udp, ln: ln}
	t.Cleanup(s.stop)
	return s
}

// echoByte answers a stream's first byte: the client's round trip that
// proves the handshake confirmed (HANDSHAKE_DONE received), so that its
// later packets are all short-header ones a restarted server can reset.
func echoByte(conn *quic.Conn) {
	str, err := conn.AcceptStream(context.Background())
	if err != nil {
		return
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(str, b); err == nil {
		_, _ = str.Write(b)
	}
}

// stop ends the server the way a killed process does: no
// CONNECTION_CLOSE, the port released.
func (s *quicServer) stop() {
	_ = s.ln.Close()
	_ = s.udp.Close()
}

// restartEndsOldConn connects a client to a server with key first, stops
// that server and starts one with key second on the same port, and
// returns why the client's connection ended.
func restartEndsOldConn(t *testing.T, first, second *quic.StatelessResetKey, idle time.Duration) error {
	t.Helper()
	cert, err := devcert.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	old := listenQUIC(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, cert, first)
	addr := old.udp.LocalAddr().(*net.UDPAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr.String(),
		&tls.Config{RootCAs: devcert.Pool(cert), NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{KeepAlivePeriod: 100 * time.Millisecond, MaxIdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	ping, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ping.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ping, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	old.stop()
	listenQUIC(t, addr, cert, second)
	// Something bigger than a keep-alive: quic-go answers no packet under
	// 43 bytes with a reset (a PING-only packet is about 25), so an idle
	// connection learns of the restart only from its idle timeout.
	str, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write(make([]byte, 200)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Context().Done():
		return context.Cause(conn.Context())
	case <-time.After(idle + 10*time.Second):
		t.Fatal("the old connection is still open")
		return nil
	}
}

// TestRestartResetsOldConnections: a server restarted on the same port
// with the same reset key answers the old connection's next packet (here
// a stream's data) with a stateless reset, and the client closes it at
// once rather than after its idle timeout (a minute here).
func TestRestartResetsOldConnections(t *testing.T) {
	key, _ := h3.DeriveResetKey([]byte("a secret every instance shares, 32+ bytes"))
	start := time.Now()
	err := restartEndsOldConn(t, key, key, time.Minute)
	var reset *quic.StatelessResetError
	if !errors.As(err, &reset) {
		t.Fatalf("the old connection ended with %v; want a stateless reset", err)
	}
	t.Logf("reset after %v", time.Since(start).Round(time.Millisecond))
}

// TestRestartWithOtherKeyIsSilent: the control. A server whose key
// differs cannot make a valid reset token, so the client waits for its
// idle timeout.
func TestRestartWithOtherKeyIsSilent(t *testing.T) {
	key, _ := h3.DeriveResetKey([]byte("a secret every instance shares, 32+ bytes"))
	other, _ := h3.DeriveResetKey([]byte("the secret of another deployment, 32+ b."))
	err := restartEndsOldConn(t, key, other, 1500*time.Millisecond)
	var idleErr *quic.IdleTimeoutError
	if !errors.As(err, &idleErr) {
		t.Fatalf("the old connection ended with %v; want the idle timeout", err)
	}
}
