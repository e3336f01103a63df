// Package udptest has a UDP socket for QUIC tests that counts its bytes and
// can fall silent, as a dead server or a lost path would.
package udptest

import (
	"net"
	"sync/atomic"
)

// Socket wraps a UDP socket: it counts the bytes it sends and receives and,
// while Muted, drops every datagram both ways. It hides the *net.UDPConn's
// other methods, so that quic-go uses ReadFrom and WriteTo.
type Socket struct {
	net.PacketConn
	Sent, Recv atomic.Int64
	// Shared, if set, counts this socket's bytes both ways too (a total
	// over several sockets).
	Shared *atomic.Int64
	Muted  atomic.Bool
}

// SetReadBuffer and SetWriteBuffer let quic-go size the socket's buffers.
func (s *Socket) SetReadBuffer(n int) error {
	return s.PacketConn.(*net.UDPConn).SetReadBuffer(n)
}

func (s *Socket) SetWriteBuffer(n int) error {
	return s.PacketConn.(*net.UDPConn).SetWriteBuffer(n)
}

func (s *Socket) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, a, err := s.PacketConn.ReadFrom(p)
		if err == nil && s.Muted.Load() {
			continue
		}
		s.count(&s.Recv, n)
		return n, a, err
	}
}

func (s *Socket) WriteTo(p []byte, a net.Addr) (int, error) {
	if s.Muted.Load() {
		return len(p), nil
	}
	n, err := s.PacketConn.WriteTo(p, a)
	s.count(&s.Sent, n)
	return n, err
}

func (s *Socket) count(c *atomic.Int64, n int) {
	c.Add(int64(n))
	if s.Shared != nil {
		s.Shared.Add(int64(n))
	}
}
