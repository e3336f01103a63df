package notify

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// fanOutHub returns a hub with n connections subscribed to "bcast" and the
// connections, drained of their subscribed notices.
func fanOutHub(tb testing.TB, n int) (*Hub, []*Conn) {
	b := NewMemoryBroker(MemoryConfig{})
	h := NewHub(b, HubConfig{QueueLength: 4096, MaxConnsPerUser: -1})
	tb.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	conns := make([]*Conn, n)
	for i := range conns {
		c, err := h.Connect("", ConnOptions{Wake: func() {}})
		if err != nil {
			tb.Fatal(err)
		}
		if err := c.Subscribe(context.Background(), SubscribeRequest{Channel: "bcast"}); err != nil {
			tb.Fatal(err)
		}
		c.Drain(nil)
		conns[i] = c
	}
	return h, conns
}

// drainEvery is how many messages the benchmark lets queue before the
// "writers" drain: like a writer that coalesces bursts of that size.
const drainEvery = 64

// BenchmarkDispatch measures the hub's fan-out: one message queued on every
// local subscriber. Deliveries/s and allocations per delivery are the
// figures; draining (the transports' work) is excluded from the timing.
func BenchmarkDispatch(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h, conns := fanOutHub(b, n)
			m := NewMessage("bcast", ID{Ms: 1}, "e", []byte(`{"x":1}`))
			var buf []*Envelope
			// Warm the queues to their kept capacity, as a running
			// server's are.
			for i := 0; i < drainEvery; i++ {
				m.ID.Seq++
				h.dispatch(m)
			}
			for _, c := range conns {
				buf = c.Drain(buf[:0])
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var drained time.Duration
			for i := 0; i < b.N; i++ {
				m.ID.Seq++ // each message newer than the last
				h.dispatch(m)
				if (i+1)%drainEvery == 0 {
					b.StopTimer()
					t0 := time.Now()
					for _, c := range conns {
						buf = c.Drain(buf[:0])
					}
					drained += time.Since(t0)
					b.StartTimer()
				}
			}
			elapsed := time.Since(start) - drained
			b.ReportMetric(float64(b.N)*float64(n)/elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
		})
	}
}

// TestDispatchAllocatesNothingPerSubscriber guards the hot path: once queues
// have their buffers, fanning a message out allocates nothing.
func TestDispatchAllocatesNothingPerSubscriber(t *testing.T) {
	h, conns := fanOutHub(t, 1000)
	m := NewMessage("bcast", ID{Ms: 1}, "e", []byte(`{"x":1}`))
	seq := uint64(0)
	step := func() {
		seq++
		m.ID.Seq = seq
		h.dispatch(m)
	}
	// Warm the queues to their kept capacity.
	for i := 0; i < drainEvery; i++ {
		step()
	}
	for _, c := range conns {
		c.Drain(nil)
	}
	allocs := testing.AllocsPerRun(drainEvery-1, step)
	if allocs != 0 {
		t.Fatalf("dispatch to 1000 subscribers allocates %.1f times per message; want 0", allocs)
	}
}
