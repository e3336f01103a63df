package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// peerSub is one WebSocket subscriber of a peer run.
type peerSub struct {
	idx       int
	conn      *rawWS
	delivered atomic.Int64 // payload messages received
	ready     atomic.Bool  // a probe arrived: subscribed end to end
	down      atomic.Bool  // the server closed the connection before the run did
	// Owned by the reader goroutine until it has ended.
	streams []stream // per publisher worker
	alien   int64    // payloads of an unknown worker
}

// peerFleet is the subscribers of one run: the same client for both
// servers; only the handshake (peerServer.hello) and Centrifugo's
// application pings differ.
type peerFleet struct {
	srv     *peerServer
	workers int
	subs    []*peerSub
	lat     *latencies
	window  atomic.Pointer[[2]int64] // sent-time window (Unix ns) whose latencies count
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	laddrs  []net.Addr // loopback source addresses, nil for any

	mu     sync.Mutex
	closes map[string]int // guarded by mu: why the server closed connections
}

func newPeerFleet(ctx context.Context, srv *peerServer, workers int) *peerFleet {
	f := &peerFleet{srv: srv, workers: workers, lat: newLatencies(), closes: map[string]int{}}
	f.ctx, f.cancel = context.WithCancel(ctx)
	f.window.Store(&[2]int64{})
	for _, ip := range loopbackSources(4) {
		f.laddrs = append(f.laddrs, &net.TCPAddr{IP: ip})
	}
	if len(f.laddrs) == 0 {
		f.laddrs = []net.Addr{nil}
	}
	return f
}

// loopbackSources are up to n usable loopback addresses other than
// 127.0.0.1, to spread client sockets over more source ports.
func loopbackSources(n int) []net.IP {
	var ips []net.IP
	for i := range n {
		ip := net.IPv4(127, 0, 0, byte(2+i))
		if l, err := net.Listen("tcp", ip.String()+":0"); err == nil {
			l.Close()
			ips = append(ips, ip)
		}
	}
	return ips
}

// connect opens n subscribers, at most 64 handshakes at a time, and
// starts their readers. It fails on the first connection that fails.
func (f *peerFleet) connect(n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(f.ctx, timeout)
	defer cancel()
	for i := range n {
		f.subs = append(f.subs, &peerSub{idx: i, streams: make([]stream, f.workers)})
	}
	next := make(chan *peerSub)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range min(64, n) {
		wg.Go(func() {
			for s := range next {
				if err := f.dial(ctx, s); err != nil {
					select {
					case errc <- fmt.Errorf("subscriber %d: %w", s.idx, err):
					default:
					}
					cancel()
				}
			}
		})
	}
	for _, s := range f.subs {
		select {
		case next <- s:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	return ctx.Err()
}

func (f *peerFleet) dial(ctx context.Context, s *peerSub) error {
	tok, err := f.srv.token(ctx, "peer-"+strconv.Itoa(s.idx))
	if err != nil {
		return err
	}
	c, err := dialRawWS(ctx, f.srv.dialURL(tok), f.laddrs[s.idx%len(f.laddrs)])
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
	}
	if err := f.srv.hello(c, tok); err != nil {
		c.close()
		return err
	}
	_ = c.nc.SetDeadline(time.Time{})
	s.conn = c
	f.wg.Go(func() { f.read(s) })
	return nil
}

// read takes every frame of one subscriber until the connection ends.
func (f *peerFleet) read(s *peerSub) {
	centrifugo := f.srv.kind == PeerCentrifugo
	frame := make([]byte, 0, 16<<10)
	for {
		var err error
		frame, err = s.conn.readMessage(frame)
		if err != nil {
			f.ended(s, err)
			return
		}
		now := time.Now().UnixNano()
		w := f.window.Load()
		splitFrame(frame, func(m []byte) {
			if centrifugo && isCentrifugoPing(m) {
				_ = s.conn.writeText([]byte("{}"))
				return
			}
			f.handle(s, m, now, w)
		})
		if cap(frame) > 1<<20 {
			frame = make([]byte, 0, 16<<10) // do not keep a large buffer
		}
	}
}

// handle counts one message: the same work for both servers.
func (f *peerFleet) handle(s *peerSub, m []byte, now int64, w *[2]int64) {
	d, ok := parsePeerMessage(m)
	if !ok {
		if isProbe(m) {
			s.ready.Store(true)
		}
		return
	}
	s.delivered.Add(1)
	if d.worker < 0 || d.worker >= len(s.streams) {
		s.alien++
		return
	}
	s.streams[d.worker].observe(d.seq)
	if w[0] != 0 && d.sentNs >= w[0] && d.sentNs < w[1] {
		f.lat.record(s.idx, time.Duration(now-d.sentNs))
	}
}

// ended records why a connection ended, unless the run ended it.
func (f *peerFleet) ended(s *peerSub, err error) {
	if f.ctx.Err() != nil {
		return
	}
	s.down.Store(true)
	why := "read error"
	var ce *wsCloseError
	if errors.As(err, &ce) {
		why = "close " + strconv.Itoa(ce.Code)
		if ce.Reason != "" {
			why += " " + ce.Reason
		}
	}
	f.mu.Lock()
	f.closes[why]++
	f.mu.Unlock()
}

// waitReady publishes a probe every 250 ms until every subscriber has
// received one: each is then subscribed end to end.
func (f *peerFleet) waitReady(ctx context.Context, pub func(context.Context, []byte) error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	body := []byte(`{"channel":"` + peerChannel + `","data":` + peerProbe + `}`)
	for {
		notReady := 0
		for _, s := range f.subs {
			if !s.ready.Load() {
				notReady++
			}
		}
		if notReady == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d subscribers received no probe within %v", notReady, len(f.subs), timeout)
		}
		if err := pub(ctx, body); err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// delivered is every subscriber's count so far.
func (f *peerFleet) delivered() int64 {
	var n int64
	for _, s := range f.subs {
		n += s.delivered.Load()
	}
	return n
}

// waitDrained waits until deliveries have not moved for quiet, or at most
// limit.
func (f *peerFleet) waitDrained(quiet, limit time.Duration) {
	last, lastAt, deadline := f.delivered(), time.Now(), time.Now().Add(limit)
	for time.Now().Before(deadline) && time.Since(lastAt) < quiet {
		time.Sleep(50 * time.Millisecond)
		if n := f.delivered(); n != last {
			last, lastAt = n, time.Now()
		}
	}
}

// close ends every connection and waits for the readers.
func (f *peerFleet) close() {
	f.cancel()
	for _, s := range f.subs {
		if s.conn != nil {
			s.conn.close()
		}
	}
	f.wg.Wait()
}

// peerCount is what the subscribers received against what was published.
type peerCount struct {
	Lost, Duplicate, Reordered, Alien int64
	Disconnected                      int
	Closes                            map[string]int
}

// count, after close, compares each subscriber that stayed connected with
// what every worker published (publishes that failed are not owed);
// subscribers the server closed are counted apart, not as lost.
func (f *peerFleet) count(p *peerPublishers) peerCount {
	c := peerCount{Closes: map[string]int{}}
	for _, s := range f.subs {
		c.Duplicate += sumStreams(s.streams, func(st *stream) int64 { return st.dups })
		c.Reordered += sumStreams(s.streams, func(st *stream) int64 { return st.reordered })
		c.Alien += s.alien
		if s.down.Load() {
			c.Disconnected++
			continue
		}
		for w := range s.streams {
			c.Lost += s.streams[w].lost(p.published(w), p.failedOf(w))
		}
	}
	f.mu.Lock()
	for k, v := range f.closes {
		c.Closes[k] = v
	}
	f.mu.Unlock()
	return c
}

func sumStreams(ss []stream, f func(*stream) int64) int64 {
	var n int64
	for i := range ss {
		n += f(&ss[i])
	}
	return n
}

// closeReasons renders the close reasons, most frequent first.
func closeReasons(m map[string]int) string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range m {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	s := ""
	for i, e := range l {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%d × %s", e.v, e.k)
	}
	return s
}
