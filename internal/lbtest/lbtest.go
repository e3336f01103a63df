// Package lbtest is a round-robin TCP load balancer for tests: it listens
// on a free loopback port and hands each connection to the next backend
// that accepts one, skipping dead backends, the way a load balancer with
// passive health checks does. Closing it closes every proxied connection.
package lbtest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Balancer is a TCP load balancer owned by a test.
type Balancer struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint64

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // guarded by mu
	closed bool                  // guarded by mu
	wg     sync.WaitGroup
}

// Start starts a balancer over backends (host:port) and closes it when t
// ends.
func Start(t testing.TB, backends ...string) *Balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Balancer{ln: ln, backends: backends, conns: make(map[net.Conn]struct{})}
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

func (b *Balancer) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
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
		_, _ = io.Copy(up, c)
		_ = up.Close()
	}()
	_, _ = io.Copy(c, up)
	_ = c.Close()
	<-done
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
