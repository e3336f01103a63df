package client

import (
	"context"
	"crypto/tls"
	"net"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

// ConnectedUDP is a UDP socket connected to one server address, for a
// quic.Transport that dials that server only: what QUICDialer gives every
// QUIC connection.
//
// Connected, the socket hears the kernel's ICMP "port unreachable" for
// the server address: when the server process is gone (killed, crashed,
// its port closed) the next packet the client sends — a liveness probe
// (QUICDialer) at the latest — makes the socket's next read fail with
// ECONNREFUSED, and quic-go then closes the connection at once instead of
// waiting for the idle timeout. An unconnected socket (quic-go's own)
// never sees that error. It changes nothing where no ICMP comes back (a
// host or path gone, a firewall that drops it): the idle timeout still
// decides there.
//
// It hides *net.UDPConn's ReadMsgUDP and WriteMsgUDP, so that quic-go
// reads and writes it through ReadFrom and WriteTo, which use the
// connected address (a connected socket refuses an explicit one). quic-go
// then forgoes GSO and batch receives, which one connection per socket
// does not need. Safe for concurrent use, as net.UDPConn is.
type ConnectedUDP struct {
	conn   *net.UDPConn
	remote *net.UDPAddr
}

// DialUDP connects a UDP socket from laddr (nil: any) to raddr.
func DialUDP(laddr, raddr *net.UDPAddr) (*ConnectedUDP, error) {
	c, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		return nil, err
	}
	return &ConnectedUDP{conn: c, remote: c.RemoteAddr().(*net.UDPAddr)}, nil
}

// ReadFrom reads a datagram from the connected address; an ICMP error the
// kernel received for it is returned here (ECONNREFUSED).
func (c *ConnectedUDP) ReadFrom(p []byte) (int, net.Addr, error) {
	n, err := c.conn.Read(p)
	return n, c.remote, err
}

// WriteTo writes to the connected address, whatever addr says (quic-go
// passes the one it dialed).
func (c *ConnectedUDP) WriteTo(p []byte, _ net.Addr) (int, error) { return c.conn.Write(p) }

// Close closes the socket.
func (c *ConnectedUDP) Close() error { return c.conn.Close() }

// LocalAddr is the socket's own address.
func (c *ConnectedUDP) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr is the server address the socket is connected to.
func (c *ConnectedUDP) RemoteAddr() net.Addr { return c.remote }

// SetDeadline, SetReadDeadline and SetWriteDeadline are net.UDPConn's.
func (c *ConnectedUDP) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *ConnectedUDP) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *ConnectedUDP) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// SetReadBuffer, SetWriteBuffer and SyscallConn let quic-go size the
// socket's buffers and set its don't-fragment bit.
func (c *ConnectedUDP) SetReadBuffer(n int) error             { return c.conn.SetReadBuffer(n) }
func (c *ConnectedUDP) SetWriteBuffer(n int) error            { return c.conn.SetWriteBuffer(n) }
func (c *ConnectedUDP) SyscallConn() (syscall.RawConn, error) { return c.conn.SyscallConn() }

// DefaultProbeInterval is how often a QUICDialer's socket sends a
// liveness probe while its connection sends nothing else.
const DefaultProbeInterval = time.Second

// QUICDialer opens each QUIC connection on a ConnectedUDP socket and a
// quic.Transport of its own, both closed when the connection ends. Its
// Dial is the HTTP3 client's dialer when Config.DialQUIC is nil, and a
// building block for a DialQUIC hook. The zero value is ready to use.
//
// The socket probes the server's liveness: when the connection has
// written nothing for Probe, it sends one datagram of 44 bytes that
// begins as the connection's last 1-RTT packet did (a short header with
// the server's connection ID) and goes on with random bytes. What answers
// it is what makes a dead server noticed in about Probe, whatever the QUIC
// keep-alive period:
//
//   - the server, alive: nothing. quic-go finds the connection, fails to
//     decrypt the datagram and drops it, as RFC 9000 has an endpoint do
//     with a packet it cannot decrypt; no acknowledgement, so a probe
//     costs the server one received datagram;
//   - the server's host, its port now closed: ICMP port unreachable, which
//     the connected socket turns into ECONNREFUSED on its next read or
//     write (ConnectedUDP): the connection ends;
//   - a process that took over the address and shares the stateless reset
//     key (a restarted instance): a stateless reset, which quic-go sends
//     for a packet over 42 bytes on an unknown connection ID (a keep-alive
//     PING is smaller): the connection ends;
//   - nothing (the host or the path is gone): the QUIC idle timeout
//     decides, as without probes.
//
// A connection that is writing anyway (acknowledging deliveries, sending
// commands) sends no probe: its own packets draw the same answers.
type QUICDialer struct {
	// LocalAddr is the source address; nil: the kernel's choice.
	LocalAddr *net.UDPAddr
	// Probe is the liveness probe's interval: DefaultProbeInterval when
	// zero, no probes when negative.
	Probe time.Duration
	// Wrap, if set, is given the socket (to count or filter its
	// datagrams); the probes go through what it returns.
	Wrap func(net.PacketConn) net.PacketConn
}

// Dial opens a QUIC connection to addr: the signature of Config.DialQUIC
// and of http3.Transport's Dial.
func (d *QUICDialer) Dial(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	udp, err := DialUDP(d.LocalAddr, raddr)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn = udp
	if d.Wrap != nil {
		pc = d.Wrap(udp)
	}
	every := d.Probe
	if every == 0 {
		every = DefaultProbeInterval
	}
	if every > 0 {
		pc = newProber(pc, udp, every)
	}
	// Closing pc stops the probes; the socket is closed as well, whatever
	// Wrap's Close does.
	release := func() {
		_ = pc.Close()
		_ = udp.Close()
	}
	tr := &quic.Transport{Conn: pc}
	conn, err := tr.DialEarly(ctx, raddr, tlsCfg, cfg)
	if err != nil {
		_ = tr.Close()
		release()
		return nil, err
	}
	go func() {
		<-conn.Context().Done()
		_ = tr.Close()
		release()
	}()
	return conn, nil
}

// dialQUICDefault is the zero QUICDialer's Dial.
func dialQUICDefault(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
	return (&QUICDialer{}).Dial(ctx, addr, tlsCfg, cfg)
}
