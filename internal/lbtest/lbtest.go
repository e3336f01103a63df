// Package lbtest is a round-robin TCP load balancer for tests: it listens
// on a free loopback port and hands each connection to the next backend
// that accepts one, skipping dead backends, the way a load balancer with
// passive health checks does. Closing it closes every proxied connection.
//
// It costs the test process three descriptors per client connection (the
// client's end, the accepted one and the one to the backend): it copies
// through a small user-space buffer rather than letting io.Copy splice(2),
// which on Linux holds a pipe — two more descriptors — per direction for as
// long as the connection is idle, 4 of the 7 descriptors a proxied
// connection would otherwise cost.
package lbtest

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FilesPerConn is how many file descriptors one client connection through
// a balancer costs a test process that holds both: the client's end, the
// accepted connection and the one to the backend.
const FilesPerConn = 3

// Balancer is a TCP load balancer owned by a test.
type Balancer struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint64

	t         testing.TB
	mu        sync.Mutex
	conns     map[net.Conn]struct{} // guarded by mu
	closed    bool                  // guarded by mu
	acceptErr error                 // last failed accept; guarded by mu
	wg        sync.WaitGroup
}

// Start starts a balancer over backends (host:port) and closes it when t
// ends.
func Start(t testing.TB, backends ...string) *Balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Balancer{ln: ln, backends: backends, t: t, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.Close)
	return b
}

// Addr is the balancer's host:port.
func (b *Balancer) Addr() string { return b.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for the
// proxying goroutines.
func (b *Balancer) Close() {
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	_ = b.ln.Close()
	b.wg.Wait()
}

// accept accepts until the balancer closes. A failed accept (out of file
// descriptors: EMFILE) is retried after a pause, as net/http's server does,
// rather than ending the balancer for good.
func (b *Balancer) accept() {
	defer b.wg.Done()
	var pause time.Duration
	for {
		c, err := b.ln.Accept()
		if err != nil {
			b.mu.Lock()
			closed := b.closed
			if !closed && b.acceptErr == nil {
				b.t.Logf("lbtest: accept: %v (retrying)", err)
			}
			b.acceptErr = err
			b.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			time.Sleep(pause)
			continue
		}
		pause = 0
		if !b.track(c) {
			return
		}
		b.wg.Add(1)
		go b.proxy(c)
	}
}

func (b *Balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		_ = c.Close()
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *Balancer) untrack(c net.Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
	_ = c.Close()
}

// proxy connects c to the first backend, in round-robin order, that
// accepts, and copies both ways until either side ends.
func (b *Balancer) proxy(c net.Conn) {
	defer b.wg.Done()
	defer b.untrack(c)
	var up net.Conn
	start := b.next.Add(1)
	for i := range uint64(len(b.backends)) {
		addr := b.backends[(start+i)%uint64(len(b.backends))]
		var err error
		if up, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	if up == nil || !b.track(up) {
		return
	}
	defer b.untrack(up)
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyConn(up, c)
		_ = up.Close()
	}()
	copyConn(c, up)
	_ = c.Close()
	<-done
}

// bufSize is the copy buffer of one direction of one connection: a
// WebSocket frame larger than that takes several reads, which a test does
// not notice, and thousands of idle connections hold 2×bufSize each.
const bufSize = 8 << 10

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// copyConn copies src to dst until either fails. The wrappers hide
// *net.TCPConn's ReadFrom and WriteTo so that io.CopyBuffer does not splice
// (see the package comment).
func copyConn(dst, src net.Conn) {
	buf := bufPool.Get().(*[bufSize]byte)
	defer bufPool.Put(buf)
	_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf[:])
}

// AcceptError is the last error accepting a connection, nil if none: the
// test process ran out of file descriptors, typically.
func (b *Balancer) AcceptError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.acceptErr
}

// DropAll closes every proxied connection (a balancer restart, as the
// clients see it); new connections are accepted as before.
func (b *Balancer) DropAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns {
		_ = c.Close()
	}
}
