package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"
)

// After a storm of connections (a deploy, a reconnect after an outage) the
// Go runtime keeps the storm's garbage — net/http's 8 KiB of buffers per
// hijacked connection, handshakes, tokens — until its next GC, and keeps
// the pages until its scavenger returns them, slowly; each idle
// connection's reader goroutine keeps the 8 KiB stack it started with
// until a GC shrinks it. Measured (herald bench peer, 10,000 idle
// WebSocket connections, RSS growth 10 s after the last): 18.2 KiB per
// connection without a trim, 12.1 KiB with one; the runtime gets there by
// itself within a few minutes (its forced GC every 2 minutes, then the
// scavenger).
//
// memoryTrimmer trims once the connection count has moved by a storm's worth
// and then held steady: one forced GC that returns free memory to the OS
// (debug.FreeOSMemory: a collection of tens of milliseconds of CPU on a
// 100 MB heap, most of it concurrent). A server whose count keeps moving is
// never trimmed while it moves; one that only drifts is never trimmed.
type memoryTrimmer struct {
	count  func() int    // the open connections now
	trim   func()        // return memory to the OS
	every  time.Duration // how often count is read
	steady int           // reads without a change (under 1%) before a trim
	log    *slog.Logger
}

// minStorm is the smallest change of the connection count that is worth a
// trim: a thousand connections' garbage is some 10 MB.
const minStorm = 1000

func newMemoryTrimmer(count func() int, log *slog.Logger) *memoryTrimmer {
	return &memoryTrimmer{count: count, trim: debug.FreeOSMemory, every: time.Second, steady: 2, log: log}
}

// run trims as described until ctx is done.
func (m *memoryTrimmer) run(ctx context.Context) {
	t := time.NewTicker(m.every)
	defer t.Stop()
	base := m.count() // the count at the last trim
	last, still := base, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := m.count()
		if moved(last, n) {
			still = 0
		} else {
			still++
		}
		last = n
		if still == m.steady && stormed(base, n) {
			start := time.Now()
			m.trim()
			m.log.Debug("returned memory to the OS after a connection storm", "connections", n, "before", base, "took", time.Since(start))
			base = n
		}
	}
}

// moved reports a change of the count by more than 1% (and more than a
// few connections) since the last read.
func moved(last, n int) bool {
	d := abs(n - last)
	return d > 8 && d*100 > max(last, n)
}

// stormed reports a change since the last trim worth a trim: at least
// minStorm connections and a tenth of the count.
func stormed(base, n int) bool {
	d := abs(n - base)
	return d >= minStorm && d*10 >= max(base, n)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
