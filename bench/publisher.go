package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// publisher publishes open-loop: message k is scheduled at start + k/rate
// whatever happened to the ones before, and carries its scheduled time, so
// that latency is measured from when it should have been sent. Messages of
// one channel always go through the same worker, one request at a time,
// so their publish order is their sequence order; a worker that falls
// behind sends what is due as one batch.
type publisher struct {
	api     *api
	rate    float64
	target  func(k int64) (channel int) // channel of message k
	names   []string                    // channel index → name
	baseOf  func(channel int) string    // instance URL a channel is published on
	workers []chan pubItem
	pad     int // bytes of padding per message

	seq      []atomic.Int64 // per channel: last sequence number assigned
	mu       sync.Mutex
	failed   map[int]map[int64]bool // guarded by mu
	sent     atomic.Int64
	failures atomic.Int64
	lastErr  atomic.Value // string
}

type pubItem struct {
	channel int
	seq     int64
	at      time.Time
}

const pubWorkers = 16

func newPublisher(a *api, rate float64, names []string, target func(int64) int, baseOf func(int) string) *publisher {
	p := &publisher{api: a, rate: rate, names: names, target: target, baseOf: baseOf,
		seq: make([]atomic.Int64, len(names)), failed: map[int]map[int64]bool{}}
	for range pubWorkers {
		p.workers = append(p.workers, make(chan pubItem, 1<<16))
	}
	return p
}

// run publishes from start until stop (scheduled times), then waits for
// the workers to finish what was scheduled.
func (p *publisher) run(ctx context.Context, start, stop time.Time) {
	var wg sync.WaitGroup
	for _, q := range p.workers {
		wg.Go(func() { p.work(ctx, q) })
	}
	interval := time.Duration(float64(time.Second) / p.rate)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var k int64
loop:
	for {
		now := time.Now()
		for {
			at := start.Add(time.Duration(k) * interval)
			if at.After(now) || !at.Before(stop) {
				break
			}
			ch := p.target(k)
			seq := p.seq[ch].Add(1)
			select {
			case p.workers[ch%len(p.workers)] <- pubItem{channel: ch, seq: seq, at: at}:
			case <-ctx.Done():
				break loop
			}
			k++
		}
		if !start.Add(time.Duration(k) * interval).Before(stop) {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			break loop
		}
	}
	for _, q := range p.workers {
		close(q)
	}
	wg.Wait()
}

func (p *publisher) work(ctx context.Context, q chan pubItem) {
	const maxBatch = 500
	var batch []pubItem
	var pubs []publication
	for it := range q {
		batch = append(batch[:0], it)
		base := p.baseOf(it.channel)
	drain:
		for len(batch) < maxBatch {
			select {
			case more, ok := <-q:
				if !ok {
					break drain
				}
				if p.baseOf(more.channel) != base {
					p.send(ctx, base, batch, &pubs)
					batch, base = batch[:0], p.baseOf(more.channel)
				}
				batch = append(batch, more)
			default:
				break drain
			}
		}
		p.send(ctx, base, batch, &pubs)
	}
}

func (p *publisher) send(ctx context.Context, base string, batch []pubItem, pubs *[]publication) {
	*pubs = (*pubs)[:0]
	for _, it := range batch {
		*pubs = append(*pubs, publication{Channel: p.names[it.channel], Data: appendData(nil, it.seq, it.at, p.pad)})
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := p.api.publish(rctx, base, *pubs)
	cancel()
	if err != nil {
		p.failures.Add(int64(len(batch)))
		p.lastErr.Store(err.Error())
		p.mu.Lock()
		for _, it := range batch {
			if p.failed[it.channel] == nil {
				p.failed[it.channel] = map[int64]bool{}
			}
			p.failed[it.channel][it.seq] = true
		}
		p.mu.Unlock()
		return
	}
	p.sent.Add(int64(len(batch)))
}

// published is the last sequence number assigned to channel ch.
func (p *publisher) published(ch int) int64 { return p.seq[ch].Load() }

func (p *publisher) failedOf(ch int) map[int64]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed[ch]
}
