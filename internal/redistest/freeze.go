package redistest

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
)

// Freezer is a set of TCP proxies in front of redis-servers that can stop
// forwarding, both ways, on the connections that subscribed (SUBSCRIBE,
// SSUBSCRIBE, PSUBSCRIBE) while every other connection flows on: the
// Pub/Sub path wedges, yet publishes succeed and PING answers on the command
// connections — what a subscriber left on a dead socket after a failover
// sees (centrifugo#1189). Pausing the server cannot show that: SIGSTOP
// stops the publishes too, and CLIENT PAUSE pauses the publishers' commands,
// not the delivery to subscribers.
//
// A frozen connection holds what it read until Thaw, then forwards it; a
// client that closed a frozen connection is noticed at Thaw. Proxies start
// on first use and stop when the test ends.
type Freezer struct {
	t testing.TB

	mu        sync.Mutex
	wake      *sync.Cond               // broadcast when a freeze ends or a connection closes; uses mu
	proxies   map[string]net.Listener  // backend address → proxy listener; guarded by mu
	conns     map[*frozenConn]struct{} // guarded by mu
	freezeNew bool                     // freeze connections that subscribe from now on; guarded by mu
	closed    bool                     // guarded by mu
	wg        sync.WaitGroup
}

// frozenConn is one proxied connection. Its fields are guarded by
// Freezer.mu.
type frozenConn struct {
	client, server net.Conn
	subscriber     bool // sent a subscribe command
	frozen         bool
	done           bool
}

// NewFreezer returns a Freezer whose proxies stop when t ends.
func NewFreezer(t testing.TB) *Freezer {
	f := &Freezer{t: t, proxies: make(map[string]net.Listener), conns: make(map[*frozenConn]struct{})}
	f.wake = sync.NewCond(&f.mu)
	t.Cleanup(f.close)
	return f
}

// Addr is the address of the proxy to backend (host:port), started on first
// use.
func (f *Freezer) Addr(backend string) string {
	addr, err := f.proxy(backend)
	if err != nil {
		f.t.Fatalf("redistest: freezer: %v", err)
	}
	return addr
}

// Dial dials addr through its proxy: a go-redis Options.Dialer or
// ClusterOptions.Dialer, so that every node a cluster client learns of is
// reached through the Freezer.
func (f *Freezer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	proxy, err := f.proxy(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, proxy)
}

func (f *Freezer) proxy(backend string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return "", net.ErrClosed
	}
	if ln := f.proxies[backend]; ln != nil {
		return ln.Addr().String(), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	f.proxies[backend] = ln
	f.wg.Add(1)
	go f.accept(ln, backend)
	return ln.Addr().String(), nil
}

// Freeze stops forwarding on every connection that has subscribed and,
// until Thaw, on every connection that subscribes later: reconnecting does
// not help.
func (f *Freezer) Freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.freezeNew = true
	for c := range f.conns {
		c.frozen = c.frozen || c.subscriber
	}
}

// Wedge stops forwarding on up to n (all if n <= 0) of the connections that
// have subscribed and are not frozen, and returns how many it froze. A new
// connection flows: a client that replaces its wedged connection recovers.
func (f *Freezer) Wedge(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	froze := 0
	for c := range f.conns {
		if c.subscriber && !c.frozen && !c.done && (n <= 0 || froze < n) {
			c.frozen = true
			froze++
		}
	}
	return froze
}

// Thaw resumes forwarding on every connection and ends Freeze.
func (f *Freezer) Thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.freezeNew = false
	for c := range f.conns {
		c.frozen = false
	}
	f.wake.Broadcast()
}

// Subscribers is the number of open connections that have subscribed.
func (f *Freezer) Subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for c := range f.conns {
		if c.subscriber && !c.done {
			n++
		}
	}
	return n
}

// Frozen is the number of open frozen connections.
func (f *Freezer) Frozen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for c := range f.conns {
		if c.frozen && !c.done {
			n++
		}
	}
	return n
}

func (f *Freezer) close() {
	f.mu.Lock()
	f.closed = true
	for _, ln := range f.proxies {
		_ = ln.Close()
	}
	for c := range f.conns {
		f.endLocked(c)
	}
	f.wake.Broadcast()
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *Freezer) accept(ln net.Listener, backend string) {
	defer f.wg.Done()
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", backend)
		if err != nil {
			_ = client.Close()
			continue
		}
		c := &frozenConn{client: client, server: server}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			_ = client.Close()
			_ = server.Close()
			return
		}
		f.conns[c] = struct{}{}
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pump(c, server, client, true)
		go f.pump(c, client, server, false)
	}
}

// pump copies src to dst, holding each chunk while c is frozen. The
// client's side is scanned for subscribe commands.
func (f *Freezer) pump(c *frozenConn, dst, src net.Conn, fromClient bool) {
	defer f.wg.Done()
	defer f.end(c)
	buf := make([]byte, 16<<10)
	var tail []byte // the end of the previous chunk, for a command split across reads
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromClient {
				seen := append(tail, buf[:n]...)
				if subscribes(seen) {
					f.subscribed(c)
				}
				tail = append(tail[:0], seen[max(0, len(seen)-16):]...)
			}
			if !f.await(c) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// subscribes reports whether RESP bytes hold a subscribe command (an array
// whose first bulk string is SUBSCRIBE, SSUBSCRIBE or PSUBSCRIBE).
func subscribes(b []byte) bool {
	b = bytes.ToLower(b)
	for _, cmd := range []string{"\nsubscribe\r\n", "\nssubscribe\r\n", "\npsubscribe\r\n"} {
		if bytes.Contains(b, []byte(cmd)) {
			return true
		}
	}
	return false
}

func (f *Freezer) subscribed(c *frozenConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.subscriber = true
	c.frozen = c.frozen || f.freezeNew
}

// await waits while c is frozen and reports whether c is still open.
func (f *Freezer) await(c *frozenConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c.frozen && !c.done {
		f.wake.Wait()
	}
	return !c.done
}

func (f *Freezer) end(c *frozenConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endLocked(c)
	delete(f.conns, c)
	f.wake.Broadcast()
}

func (f *Freezer) endLocked(c *frozenConn) {
	c.done = true
	_ = c.client.Close()
	_ = c.server.Close()
}
