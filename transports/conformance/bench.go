package conformance

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// BenchmarkBroadcast measures fan-out through tr: subscribers clients (in
// this process) on one channel, b.N messages published as fast as the
// slowest client takes them. It reports deliveries per second, client and
// server work together on this machine. maxBatch is wire.Config.MaxBatch:
// 0 coalesces everything queued into one write, 1 writes each envelope
// alone. Run it with -benchtime=Nx.
func BenchmarkBroadcast(b *testing.B, tr Transport, subscribers, maxBatch int) {
	const window = 4096 // messages in flight ahead of the slowest client
	broker := notify.NewMemoryBroker(notify.MemoryConfig{})
	hub := notify.NewHub(broker, notify.HubConfig{QueueLength: 2 * window, MaxConnsPerUser: -1})
	b.Cleanup(func() { _ = hub.Close(); _ = broker.Close() })
	d := tr.Start(b, wire.Config{Hub: hub, Auth: auth(), MaxBatch: maxBatch, WriteTimeout: time.Minute})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	counts := make([]atomic.Int64, subscribers)
	var wg sync.WaitGroup
	errs := make(chan error, subscribers)
	for i := 0; i < subscribers; i++ {
		c, err := d.Dial(ctx, DialOptions{Token: TokenBob, Channels: []string{"news"}})
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		b.Cleanup(c.Drop)
		for j := 0; j < 2; j++ { // subscribed notices
			if _, err := c.Read(ctx); err != nil {
				b.Fatal(err)
			}
		}
		wg.Add(1)
		go func(c Client, n *atomic.Int64) {
			defer wg.Done()
			for n.Load() < int64(b.N) {
				e, err := c.Read(ctx)
				if err != nil {
					errs <- err
					return
				}
				if e.Type == notify.TypeMessage {
					n.Add(1)
				}
			}
		}(c, &counts[i])
	}
	slowest := func() int64 {
		m := counts[0].Load()
		for i := range counts {
			m = min(m, counts[i].Load())
		}
		return m
	}
	data := []byte(`{"title":"benchmark","body":"a notification of about a hundred bytes, as most are","n":1}`)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := broker.Publish(ctx, notify.Publication{Channel: "news", Event: "bench", Data: data}); err != nil {
			b.Fatal(err)
		}
		for i-int(slowest()) > window {
			time.Sleep(100 * time.Microsecond)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatalf("client: %v", err)
	default:
	}
	if lagged := hub.Stats().Lagged(); lagged > 0 {
		b.Fatalf("%d clients lagged", lagged)
	}
	b.ReportMetric(float64(subscribers)*float64(b.N)/elapsed.Seconds(), "deliveries/s")
}
