package bench

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// peerPublishers are N workers POSTing to a server's publish API over
// keep-alive connections, each one request at a time, so that each
// worker's messages reach every subscriber in its own sequence order.
type peerPublishers struct {
	srv    *peerServer
	client *http.Client
	n      int
	seq    []atomic.Int64 // per worker: messages attempted
	// failed[w] is owned by worker w until run returns.
	failed   []map[int64]bool
	failures atomic.Int64
	lastErr  atomic.Value // string
}

func newPeerPublishers(srv *peerServer, n int) *peerPublishers {
	p := &peerPublishers{srv: srv, n: n, seq: make([]atomic.Int64, n), failed: make([]map[int64]bool, n)}
	p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: n + 4, DisableCompression: true,
	}}
	for w := range p.failed {
		p.failed[w] = map[int64]bool{}
	}
	return p
}

// flat publishes closed-loop, flat out: every worker sends its next
// message as soon as the previous one was answered, until stop; each
// message is stamped with the time it is sent.
func (p *peerPublishers) flat(ctx context.Context, stop time.Time) {
	var wg sync.WaitGroup
	for w := range p.n {
		wg.Go(func() {
			var buf []byte
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(stop) {
					return
				}
				buf = p.send(ctx, w, now, buf)
			}
		})
	}
	wg.Wait()
}

// open publishes open-loop at rate messages/s from start until stop:
// message k is scheduled at start + k/rate whatever happened to the ones
// before, handed round-robin to the workers and stamped with its
// scheduled time, so a slow server cannot slow the schedule down and hide
// its own latency (no coordinated omission).
func (p *peerPublishers) open(ctx context.Context, rate float64, start, stop time.Time) {
	queues := make([]chan time.Time, p.n)
	var wg sync.WaitGroup
	for w := range p.n {
		queues[w] = make(chan time.Time, 1<<14)
		wg.Go(func() {
			var buf []byte
			for at := range queues[w] {
				if ctx.Err() != nil {
					continue
				}
				buf = p.send(ctx, w, at, buf)
			}
		})
	}
	interval := time.Duration(float64(time.Second) / rate)
	tick := time.NewTicker(time.Millisecond)
	var k int64
schedule:
	for {
		for now := time.Now(); ; k++ {
			at := start.Add(time.Duration(k) * interval)
			if !at.Before(stop) {
				break schedule
			}
			if at.After(now) {
				break
			}
			select {
			case queues[k%int64(p.n)] <- at:
			case <-ctx.Done():
				break schedule
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			break schedule
		}
	}
	tick.Stop()
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
}

// send publishes worker w's next message stamped at; buf is reused.
func (p *peerPublishers) send(ctx context.Context, w int, at time.Time, buf []byte) []byte {
	seq := p.seq[w].Add(1)
	buf = append(buf[:0], `{"channel":"`+peerChannel+`","data":`...)
	buf = appendPeerPayload(buf, w, seq, at)
	buf = append(buf, '}')
	if err := p.post(ctx, buf); err != nil {
		p.failed[w][seq] = true
		p.failures.Add(1)
		p.lastErr.Store(err.Error())
	}
	return buf
}

// post sends one publish request and checks its answer.
func (p *peerPublishers) post(ctx context.Context, body []byte) error {
	req, err := p.srv.publishRequest(ctx, body)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	return p.srv.publishOK(resp.StatusCode, b)
}

// published is how many messages worker w attempted (after run).
func (p *peerPublishers) published(w int) int64 { return p.seq[w].Load() }

// failedOf are worker w's sequence numbers whose publish failed (after
// run): they may or may not have been delivered.
func (p *peerPublishers) failedOf(w int) map[int64]bool { return p.failed[w] }

// total is every worker's attempts.
func (p *peerPublishers) total() int64 {
	var n int64
	for w := range p.seq {
		n += p.seq[w].Load()
	}
	return n
}

func (p *peerPublishers) close() { p.client.CloseIdleConnections() }
