package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/redis/go-redis/v9"
)

// roundTrips counts the commands and pipelines a client sends — each is one
// round trip — leaving out the handshake of a new pool connection (HELLO,
// CLIENT SETINFO), which is not the publish path's doing.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !isHandshake(cmd) {
			r.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !isHandshake(cmds[0]) {
			r.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

func isHandshake(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "auth", "select":
		return true
	case "client":
		args := cmd.Args()
		return len(args) > 1 && fmt.Sprint(args[1]) == "setinfo"
	}
	return false
}

// settle waits until the broker's start-up traffic (its Pub/Sub connections'
// handshakes) is over, so that counts measure only what follows.
func (r *roundTrips) settle() {
	for last := int64(-1); ; {
		n := r.n.Load()
		if n == last {
			return
		}
		last = n
		time.Sleep(100 * time.Millisecond)
	}
}

func countedBroker(t testing.TB, srv *redistest.Server) (*redisbroker.Broker, *roundTrips) {
	c := newClient(t, srv)
	rt := &roundTrips{}
	c.AddHook(rt)
	b, err := redisbroker.New(redisbroker.Config{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, rt
}

func TestPublishIsOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	b, rt := countedBroker(t, srv)
	ctx := context.Background()
	// The first publish may load the script (NOSCRIPT, then EVAL).
	if _, err := b.Publish(ctx, notify.Publication{Channel: "rt", Data: json.RawMessage(`0`)}); err != nil {
		t.Fatal(err)
	}
	rt.settle()
	before := rt.n.Load()
	const n = 100
	for i := 0; i < n; i++ {
		if _, err := b.Publish(ctx, notify.Publication{Channel: "rt", Data: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := rt.n.Load() - before; got != n {
		t.Fatalf("%d publishes took %d round trips; want %d", n, got, n)
	}
	// A batch is one round trip whatever its size.
	batch := make([]notify.Publication, 50)
	for i := range batch {
		batch[i] = notify.Publication{Channel: fmt.Sprintf("rt.%d", i%5), Data: json.RawMessage(`2`)}
	}
	before = rt.n.Load()
	ids, err := b.PublishBatch(ctx, batch)
	if err != nil || len(ids) != len(batch) {
		t.Fatalf("PublishBatch = %d IDs, %v", len(ids), err)
	}
	if got := rt.n.Load() - before; got != 1 {
		t.Fatalf("a batch of %d took %d round trips; want 1", len(batch), got)
	}
}

// A batch reloads the script if Redis lost it (after a restart).
func TestPublishBatchAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	b, _ := countedBroker(t, srv)
	ctx := context.Background()
	if err := srv.Client().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ids, err := b.PublishBatch(ctx, []notify.Publication{{Channel: "a", Data: json.RawMessage(`1`)}, {Channel: "a", Data: json.RawMessage(`2`)}})
	if err != nil || len(ids) != 2 || !ids[1].After(ids[0]) {
		t.Fatalf("PublishBatch after SCRIPT FLUSH = %v, %v", ids, err)
	}
}

func BenchmarkRedisPublish(b *testing.B) {
	srv := redistest.Start(b)
	br, rt := countedBroker(b, srv)
	ctx := context.Background()
	p := notify.Publication{Channel: "bench", Event: "e", Data: json.RawMessage(`{"n":12345,"text":"hello"}`)}
	if _, err := br.Publish(ctx, p); err != nil {
		b.Fatal(err)
	}
	rt.settle()
	b.Run("sequential", func(b *testing.B) {
		start := rt.n.Load()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := br.Publish(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rt.n.Load()-start)/float64(b.N), "roundtrips/publish")
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := br.Publish(ctx, p); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	for _, size := range []int{10, 100} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			batch := make([]notify.Publication, size)
			for i := range batch {
				batch[i] = p
			}
			start := rt.n.Load()
			b.ReportAllocs()
			for i := 0; i < b.N; i += size {
				if _, err := br.PublishBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rt.n.Load()-start)/float64(b.N), "roundtrips/publish")
		})
	}
}
