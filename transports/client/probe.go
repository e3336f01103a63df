package client

import (
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// probeHead is how much of the last 1-RTT packet a probe repeats: the
	// first byte and the longest connection ID QUIC allows (20 bytes).
	probeHead = 1 + 20
	// probeSize is a probe's length, random bytes after the head: over the
	// 42 bytes up to which quic-go sends no stateless reset.
	probeSize = 44
)

// prober is the net.PacketConn a QUICDialer gives quic-go: conn, plus a
// liveness probe every interval while quic-go writes nothing (see
// QUICDialer). A probe that fails because the server is unreachable
// (ECONNREFUSED: the kernel's ICMP reached the write first) makes the next
// read fail with that error, as if the read had met it: quic-go then ends
// the connection.
//
// The probe is QUIC-shaped every time rather than a cheaper byte that a QUIC
// stack discards unread: measured with 7,500 idle connections on one
// quic-go server, a one-byte probe cost the server as much CPU (what a
// datagram costs there is its receipt, about 20 µs of system calls and
// scheduling on the bench machine) and could not elicit a reset.
type prober struct {
	net.PacketConn               // what quic-go reads and writes
	sock           *ConnectedUDP // conn's socket: its server, buffer sizes and deadlines
	every          time.Duration
	epoch          time.Time    // monotonic origin of lastWrite
	lastWrite      atomic.Int64 // nanoseconds since epoch of quic-go's last write
	failed         atomic.Pointer[error]
	closed         atomic.Bool

	mu    sync.Mutex
	head  [probeHead]byte // guarded by mu: start of the last 1-RTT packet
	ready bool            // guarded by mu: head holds one
	timer *time.Timer     // guarded by mu
}

func newProber(conn net.PacketConn, sock *ConnectedUDP, every time.Duration) *prober {
	p := &prober{PacketConn: conn, sock: sock, every: every, epoch: time.Now()}
	p.mu.Lock()
	p.timer = time.AfterFunc(every, p.tick)
	p.mu.Unlock()
	return p
}

// WriteTo notes the write (its time, and the head of a 1-RTT packet) and
// passes it on.
func (p *prober) WriteTo(b []byte, addr net.Addr) (int, error) {
	p.lastWrite.Store(int64(time.Since(p.epoch)))
	if len(b) >= probeHead && b[0]&0xc0 == 0x40 { // short header, fixed bit
		p.mu.Lock()
		copy(p.head[:], b)
		p.ready = true
		p.mu.Unlock()
	}
	return p.PacketConn.WriteTo(b, addr)
}

// ReadFrom returns a failed probe's error in place of the deadline that
// the probe set to interrupt the read.
func (p *prober) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := p.PacketConn.ReadFrom(b)
	if err != nil {
		if perr := p.failed.Load(); perr != nil {
			return n, addr, *perr
		}
	}
	return n, addr, err
}

// tick sends a probe if nothing was written for about an interval, and
// schedules the next look.
func (p *prober) tick() {
	if p.closed.Load() || p.failed.Load() != nil {
		return
	}
	idle := time.Since(p.epoch) - time.Duration(p.lastWrite.Load())
	next := p.every - idle
	if idle >= p.every-p.every/10 {
		p.probe()
		next = p.every
	}
	p.mu.Lock()
	if !p.closed.Load() {
		p.timer.Reset(next)
	}
	p.mu.Unlock()
}

func (p *prober) probe() {
	var buf [probeSize]byte
	p.mu.Lock()
	ready := p.ready
	copy(buf[:], p.head[:])
	p.mu.Unlock()
	if !ready { // no 1-RTT packet yet: the handshake has its own timers
		return
	}
	for i := probeHead; i < probeSize; i++ {
		buf[i] = byte(rand.Uint32())
	}
	_, err := p.PacketConn.WriteTo(buf[:], p.sock.RemoteAddr())
	if unreachable(err) {
		p.failed.CompareAndSwap(nil, &err)
		_ = p.sock.SetReadDeadline(time.Now())
	}
}

// unreachable reports whether a write failed because the server cannot be
// reached (the kernel heard ICMP for the connected address).
func unreachable(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// Close stops the probes and closes the connection.
func (p *prober) Close() error {
	p.closed.Store(true)
	p.mu.Lock()
	p.timer.Stop()
	p.mu.Unlock()
	return p.PacketConn.Close()
}

// SetReadBuffer, SetWriteBuffer and SyscallConn let quic-go size the
// socket's buffers and set its don't-fragment bit.
func (p *prober) SetReadBuffer(n int) error             { return p.sock.SetReadBuffer(n) }
func (p *prober) SetWriteBuffer(n int) error            { return p.sock.SetWriteBuffer(n) }
func (p *prober) SyscallConn() (syscall.RawConn, error) { return p.sock.SyscallConn() }
