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
// quic.Transport that dials that server only: what DialQUIC and the
// HTTP3 client's default dialer give every QUIC connection.
//
// Connected, the socket hears the kernel's ICMP "port unreachable" for
// the server address: when the server process is gone (killed, crashed,
// its port closed) the next packet the client sends — a keep-alive PING
// at the latest — makes the socket's next read fail with
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

// DialQUICConnected opens a QUIC connection to addr on a ConnectedUDP
// socket and a quic.Transport of its own, both closed when the
// connection ends: the HTTP3 client's dialer when Config.DialQUIC is nil,
// and a building block for a DialQUIC hook (wrap is then given the socket
// to count or filter its datagrams; nil leaves it as it is). laddr is the
// source address (nil: the kernel's choice).
func DialQUICConnected(ctx context.Context, laddr *net.UDPAddr, addr string, tlsCfg *tls.Config, cfg *quic.Config, wrap func(net.PacketConn) net.PacketConn) (*quic.Conn, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	udp, err := DialUDP(laddr, raddr)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn = udp
	if wrap != nil {
		pc = wrap(udp)
	}
	tr := &quic.Transport{Conn: pc}
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
	}()
	return conn, nil
}

// dialQUICDefault is DialQUICConnected from any source address.
func dialQUICDefault(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
	return DialQUICConnected(ctx, nil, addr, tlsCfg, cfg, nil)
}
