package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldhq/herald/transports/client"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The transports a run compares. Each is one way a client reaches Herald.
const (
	WS    = "ws"     // WebSocket over HTTP/1.1 (plain listener)
	SSEH1 = "sse-h1" // Server-Sent Events over HTTP/1.1 (plain listener)
	SSEH2 = "sse-h2" // Server-Sent Events over HTTP/2 (TLS listener)
	SSEH3 = "sse-h3" // Server-Sent Events over HTTP/3 (QUIC)
	H3    = "h3"     // the NDJSON stream over HTTP/3 (QUIC)
	WT    = "wt"     // a WebTransport session's NDJSON stream (QUIC)
)

// AllTransports in report order.
var AllTransports = []string{WS, SSEH1, SSEH2, SSEH3, H3, WT}

var transportDesc = map[string]string{
	WS:    "WebSocket, HTTP/1.1",
	SSEH1: "SSE, HTTP/1.1",
	SSEH2: "SSE, HTTP/2 (TLS)",
	SSEH3: "SSE, HTTP/3 (QUIC)",
	H3:    "NDJSON stream, HTTP/3 (QUIC)",
	WT:    "WebTransport, HTTP/3 (QUIC)",
}

// wireCounter counts the bytes a set of client sockets sent and received.
type wireCounter struct {
	sent, recv atomic.Int64
	counted    atomic.Bool // some socket of the transport was counted
}

func (w *wireCounter) total() int64 { return w.sent.Load() + w.recv.Load() }

// countingConn counts a TCP connection's bytes.
type countingConn struct {
	net.Conn
	w *wireCounter
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.recv.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.sent.Add(int64(n))
	return n, err
}

// countingPacketConn counts a UDP socket's bytes (QUIC).
type countingPacketConn struct {
	net.PacketConn
	w *wireCounter
}

func (c countingPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(p)
	c.w.recv.Add(int64(n))
	return n, a, err
}

// bufferedConn is what quic-go sizes and marks don't-fragment on a UDP
// socket: *net.UDPConn and client.ConnectedUDP have it.
type bufferedConn interface {
	SetReadBuffer(int) error
	SetWriteBuffer(int) error
	SyscallConn() (syscall.RawConn, error)
}

// SetReadBuffer, SetWriteBuffer and SyscallConn let quic-go size the
// socket's buffers as it would on the bare socket.
func (c countingPacketConn) SetReadBuffer(n int) error  { return c.sock().SetReadBuffer(n) }
func (c countingPacketConn) SetWriteBuffer(n int) error { return c.sock().SetWriteBuffer(n) }
func (c countingPacketConn) SyscallConn() (syscall.RawConn, error) {
	return c.sock().SyscallConn()
}
func (c countingPacketConn) sock() bufferedConn { return c.PacketConn.(bufferedConn) }

func (c countingPacketConn) WriteTo(p []byte, a net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(p, a)
	c.w.sent.Add(int64(n))
	return n, err
}

// dialEnv is what every client of one transport run shares.
type dialEnv struct {
	transport string
	tls       *tls.Config
	wire      *wireCounter
	sources   []net.IP // loopback source addresses to spread over; nil: the kernel's choice
	shared    *http.Client
	// route, when set, maps the address a client dials to the one it
	// reaches: a fault scenario's load balancer in front of instances
	// that died. Shared by the transports of one cluster.
	route *atomic.Pointer[func(addr string, i int) string]
}

func (e *dialEnv) routed(addr string, i int) string {
	if e.route == nil {
		return addr
	}
	if f := e.route.Load(); f != nil {
		return (*f)(addr, i)
	}
	return addr
}

func newDialEnv(transport string, tlsCfg *tls.Config, sources []net.IP, cl *cluster) *dialEnv {
	e := &dialEnv{transport: transport, tls: tlsCfg, wire: &wireCounter{}, sources: sources}
	if cl != nil {
		e.route = &cl.route
	}
	if transport == WS || transport == SSEH1 {
		// HTTP/1.1: one TCP connection per stream anyway (WebSocket hijacks
		// it, SSE keeps it), so the clients share one http.Transport.
		e.shared = &http.Client{Transport: &http.Transport{
			DialContext:         e.dialTCP(-1),
			MaxIdleConnsPerHost: 64,
			ForceAttemptHTTP2:   false,
		}}
	}
	return e
}

func (e *dialEnv) source(i int) net.IP {
	if len(e.sources) == 0 || i < 0 {
		return nil
	}
	return e.sources[i%len(e.sources)]
}

var nextSource atomic.Int64

// dialTCP dials from client i's source address (round robin when i < 0)
// and counts the bytes.
func (e *dialEnv) dialTCP(i int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
		j := i
		if j < 0 {
			j = int(nextSource.Add(1))
		}
		if ip := e.source(j); ip != nil {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
		c, err := d.DialContext(ctx, network, e.routed(addr, j))
		if err != nil {
			return nil, err
		}
		e.wire.counted.Store(true)
		return countingConn{c, e.wire}, nil
	}
}

// dialQUIC is an http3.Transport Dial hook: client i's own UDP socket,
// from its source address, connected to the (routed) server as the
// client's default dialer's is — so that a killed instance's ICMP port
// unreachable ends the connection — counted, closed with the connection.
func (e *dialEnv) dialQUIC(i int) func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
	return func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
		d := client.QUICDialer{
			LocalAddr: &net.UDPAddr{IP: e.source(i)},
			Wrap:      func(pc net.PacketConn) net.PacketConn { return countingPacketConn{pc, e.wire} },
		}
		conn, err := d.Dial(ctx, e.routed(addr, i), tlsCfg, cfg)
		if err != nil {
			return nil, err
		}
		e.wire.counted.Store(true)
		return conn, nil
	}
}

// clientConfig returns the client configuration of client i of this
// transport, for an instance's base URLs.
func (e *dialEnv) clientConfig(i int, plainURL, tlsURL string) client.Config {
	// The reconnecting client's QUIC defaults, for h3, wt and sse-h3 alike:
	// what a killed server costs them is what it costs a user's client.
	quicCfg := client.DefaultQUICConfig()
	switch e.transport {
	case WS:
		return client.Config{URL: plainURL, Transport: client.WebSocket, HTTPClient: e.shared}
	case SSEH1:
		return client.Config{URL: plainURL, Transport: client.SSE, HTTPClient: e.shared}
	case SSEH2:
		// One transport per client: one TCP connection per simulated device,
		// as in the field (a shared one would multiplex every stream).
		return client.Config{URL: tlsURL, Transport: client.SSE, HTTPClient: &http.Client{Transport: &http.Transport{
			DialContext:       e.dialTCP(i),
			TLSClientConfig:   e.tls.Clone(),
			ForceAttemptHTTP2: true,
		}}}
	case SSEH3:
		// A TLS session cache of its own, as the HTTP3 client keeps: a
		// reconnection resumes its session on any instance.
		tlsCfg := e.tls.Clone()
		tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		return client.Config{URL: tlsURL, Transport: client.SSE, HTTPClient: &http.Client{Transport: &http3.Transport{
			TLSClientConfig: tlsCfg, QUICConfig: quicCfg, Dial: e.dialQUIC(i),
		}}}
	case H3:
		// dialQUIC counts the bytes and reroutes a killed instance's
		// clients; each connection (h3.Client) has its own QUIC connection.
		return client.Config{URL: tlsURL, Transport: client.HTTP3, TLSConfig: e.tls.Clone(),
			QUICConfig: quicCfg, DialQUIC: e.dialQUIC(i)}
	case WT:
		return client.Config{URL: tlsURL, Transport: client.WebTransport, TLSConfig: e.tls.Clone(),
			QUICConfig: quicCfg, DialQUIC: e.dialQUIC(i)}
	}
	panic(fmt.Sprintf("bench: unknown transport %q", e.transport))
}

// wireCounted reports whether this transport's bytes are counted: every
// transport's are, TCP through dialTCP, QUIC through dialQUIC.
func wireCounted(string) bool { return true }

// isLoopback reports whether a base URL's host is a loopback address (so
// that clients may dial from other loopback source addresses).
func isLoopback(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback() && ip.To4() != nil
}
