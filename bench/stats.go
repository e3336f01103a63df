package bench

import (
	"strconv"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// stream checks the sequence numbers of one channel as one subscriber
// receives them. Owned by the subscriber's reader goroutine until the
// scenario collects it.
type stream struct {
	next      int64              // highest sequence number received + 1
	missing   map[int64]struct{} // skipped numbers below next
	received  int64
	dups      int64
	reordered int64
}

func (s *stream) observe(seq int64) {
	s.received++
	switch {
	case seq == s.next || s.next == 0 && seq == 1:
		s.next = seq + 1
	case seq > s.next:
		if s.next == 0 {
			s.next = 1
		}
		if s.missing == nil {
			s.missing = make(map[int64]struct{})
		}
		for k := s.next; k < seq; k++ {
			s.missing[k] = struct{}{}
		}
		s.next = seq + 1
	default: // below next: a late one, or one seen before
		if _, ok := s.missing[seq]; ok {
			delete(s.missing, seq)
			s.reordered++
		} else {
			s.dups++
		}
	}
}

// lost counts the numbers 1..published never received, except those whose
// publish failed (they may or may not exist).
func (s *stream) lost(published int64, failed map[int64]bool) int64 {
	var n int64
	for k := range s.missing {
		if k <= published && !failed[k] {
			n++
		}
	}
	for k := max(s.next, 1); k <= published; k++ {
		if !failed[k] {
			n++
		}
	}
	return n
}

// Correctness counts deliveries against the promise: every message once,
// in order.
type Correctness struct {
	Expected  int64 `json:"expected"`  // deliveries owed: messages × their subscribers
	Delivered int64 `json:"delivered"` // deliveries received, duplicates included
	Lost      int64 `json:"lost"`
	Duplicate int64 `json:"duplicates"`
	Reordered int64 `json:"reordered"`
	Gaps      int64 `json:"gaps"`   // gap notices received
	Errors    int64 `json:"errors"` // error notices received
	PubFailed int64 `json:"publish_failed"`
}

// Clean reports whether the promise held.
func (c Correctness) Clean() bool { return c.Lost == 0 && c.Duplicate == 0 && c.Reordered == 0 }

// latencies is a sharded HdrHistogram of microseconds, safe for
// concurrent recording.
type latencies struct {
	shards [16]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
	}
}

const maxLatencyMicros = 120_000_000 // two minutes

func newLatencies() *latencies {
	l := &latencies{}
	for i := range l.shards {
		l.shards[i].h = hdrhistogram.New(1, maxLatencyMicros, 3)
	}
	return l
}

func (l *latencies) record(shard int, d time.Duration) {
	us := max(d.Microseconds(), 1)
	s := &l.shards[shard%len(l.shards)]
	s.mu.Lock()
	_ = s.h.RecordValue(min(us, maxLatencyMicros))
	s.mu.Unlock()
}

func (l *latencies) merged() *hdrhistogram.Histogram {
	h := hdrhistogram.New(1, maxLatencyMicros, 3)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		h.Merge(s.h)
		s.mu.Unlock()
	}
	return h
}

// Latency is a latency distribution's summary, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
	// Percentiles is the distribution, HdrHistogram style: the latency at
	// each percentile 1 − 1/2^k, for charts.
	Percentiles []Percentile `json:"percentiles,omitempty"`
}

// Percentile is one point of a distribution.
type Percentile struct {
	Percentile float64 `json:"p"`
	Ms         float64 `json:"ms"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	l := Latency{Count: h.TotalCount()}
	if l.Count == 0 {
		return l
	}
	l.P50, l.P90, l.P99 = ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(90)), ms(h.ValueAtQuantile(99))
	l.P999, l.Max, l.Mean = ms(h.ValueAtQuantile(99.9)), ms(h.Max()), h.Mean()/1000
	for k := 0; k <= 20; k++ {
		p := 100 * (1 - 1/float64(int64(1)<<k))
		l.Percentiles = append(l.Percentiles, Percentile{Percentile: p, Ms: ms(h.ValueAtQuantile(p))})
		if float64(l.Count)*(1-p/100) < 1 {
			break
		}
	}
	return l
}

// parseData reads {"s":<seq>,"t":<unix ns>} (the bench's own message data,
// compact JSON as the server normalises it) without reflection: the load
// generator has one core and parses every delivery. ok is false for
// anything else (probes).
func parseData(b []byte) (seq, sentNs int64, ok bool) {
	const pre = `{"s":`
	if len(b) < len(pre) || string(b[:len(pre)]) != pre {
		return 0, 0, false
	}
	b = b[len(pre):]
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	seq, err := strconv.ParseInt(string(b[:i]), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	b = b[i:]
	const mid = `,"t":`
	if len(b) < len(mid) || string(b[:len(mid)]) != mid {
		return 0, 0, false
	}
	b = b[len(mid):]
	i = 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	sentNs, err = strconv.ParseInt(string(b[:i]), 10, 64)
	return seq, sentNs, err == nil
}

// appendData appends the data of message seq scheduled at t.
func appendData(b []byte, seq int64, t time.Time, pad int) []byte {
	b = append(b, `{"s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t.UnixNano(), 10)
	if pad > 0 {
		b = append(b, `,"p":"`...)
		for range pad {
			b = append(b, 'x')
		}
		b = append(b, '"')
	}
	return append(b, '}')
}
