package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/heraldhq/herald/notify"
)

// benchData is a message's data as a publisher sends it: valid JSON with
// the spaces encoders put in, which Normalize compacts.
const benchData = `{"order": 12345, "status": "shipped", "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}], "note": "leave it at the door"}`

// bigData is 32 KiB of JSON data. Compacting it allocates a buffer its size
// (twice that under the race detector, which keeps bytes.Buffer.Grow from
// allocating in one go), so the bytes a publish allocates, counted in
// Normalize calls, count its compactions, whatever the small allocations
// around them.
var bigData = json.RawMessage(`{"text": "` + strings.Repeat("x", 32<<10) + `"}`)

// bytesPerRun is testing.AllocsPerRun for bytes: the average number of bytes
// f allocates, after one warm-up call.
func bytesPerRun(runs int, f func()) float64 {
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(runs)
}

// normalizations converts bytes allocated into calls of Normalize on a raw
// publication of bigData.
func normalizations(t *testing.T, bytes float64) float64 {
	p := notify.Publication{Channel: "unit", Data: bigData}
	one := bytesPerRun(20, func() { _, _ = p.Normalize(0) })
	if one < float64(len(bigData)) {
		t.Fatalf("Normalize of %d bytes allocates %.0f bytes: the test cannot count compactions", len(bigData), one)
	}
	return bytes / one
}

func bigBroker(t *testing.T) *notify.MemoryBroker {
	b := notify.NewMemoryBroker(notify.MemoryConfig{HistorySize: 1}) // a full ring allocates nothing
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestPublishBatchCompactsOnce: a batch allocates what its messages
// published one by one do: each message is validated and compacted once,
// not once to check the batch and again to publish it.
func TestPublishBatchCompactsOnce(t *testing.T) {
	b := bigBroker(t)
	ctx := context.Background()
	p := notify.Publication{Channel: "once", Event: "e", Data: bigData}
	one := bytesPerRun(20, func() {
		if _, err := b.Publish(ctx, p); err != nil {
			t.Fatal(err)
		}
	})
	four := bytesPerRun(20, func() {
		if _, err := b.PublishBatch(ctx, []notify.Publication{p, p, p, p}); err != nil {
			t.Fatal(err)
		}
	})
	extra := normalizations(t, four/4-one)
	t.Logf("bytes allocated: Publish %.0f, PublishBatch of 4 %.0f per message (%+.2f Normalize)", one, four/4, extra)
	if extra > 0.5 {
		t.Fatalf("a batched message allocates %.2f Normalize calls' worth more than a published one: compacted more than once", extra)
	}
}

// TestPublishTrustsNormalized: the broker does not validate or compact again
// a publication that Normalize returned, alone or in a batch; it does once
// for a raw one. So an entry point that normalizes (the REST API) does not
// make the broker do it twice.
func TestPublishTrustsNormalized(t *testing.T) {
	b := bigBroker(t)
	ctx := context.Background()
	raw := notify.Publication{Channel: "trust", Event: "e", Data: bigData}
	n, err := raw.Normalize(0)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(ps ...notify.Publication) float64 {
		return bytesPerRun(20, func() {
			if _, err := b.PublishBatch(ctx, ps); err != nil {
				t.Fatal(err)
			}
		})
	}
	single := func(p notify.Publication) float64 {
		return bytesPerRun(20, func() {
			if _, err := b.Publish(ctx, p); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, c := range []struct {
		name   string
		raw, n float64
		count  float64 // messages
	}{
		{"Publish", single(raw), single(n), 1},
		{"PublishBatch of 4", publish(raw, raw, raw, raw), publish(n, n, n, n), 4},
	} {
		saved := normalizations(t, c.raw-c.n) / c.count
		t.Logf("%s: bytes allocated raw %.0f, normalized %.0f: %.2f Normalize less per message", c.name, c.raw, c.n, saved)
		if saved < 0.5 || saved > 1.5 {
			t.Errorf("%s: a normalized message allocates %.2f Normalize calls' worth less than a raw one; want exactly one less", c.name, saved)
		}
	}
}

func BenchmarkMemoryPublish(b *testing.B) {
	br := notify.NewMemoryBroker(notify.MemoryConfig{})
	defer br.Close()
	ctx := context.Background()
	p := notify.Publication{Channel: "bench", Event: "e", Data: json.RawMessage(benchData)}
	b.Run("single", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := br.Publish(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
	})
	const n = 100
	batch := make([]notify.Publication, n)
	for i := range batch {
		batch[i] = p
	}
	b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := br.PublishBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/message")
	})
}
