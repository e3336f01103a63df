package client

import (
	"math/rand/v2"
	"time"
)

// ceiling is the largest delay before reconnection attempt n (0 first):
// min(Max, Min·Factorⁿ).
func (b Backoff) ceiling(n int) time.Duration {
	d := float64(b.Min)
	for range n {
		d *= b.Factor
		if d >= float64(b.Max) {
			return b.Max
		}
	}
	return min(time.Duration(d), b.Max)
}

// delay draws the delay before attempt n: full jitter, uniform in
// [0, ceiling(n)].
func (b Backoff) delay(n int, r interface{ Int64N(int64) int64 }) time.Duration {
	return time.Duration(r.Int64N(int64(b.ceiling(n)) + 1))
}

// globalRand is math/rand/v2's generator, safe for concurrent use.
type globalRand struct{}

func (globalRand) Int64N(n int64) int64 { return rand.Int64N(n) }
