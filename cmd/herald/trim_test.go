package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The trimmer trims once after a storm has settled, never while the count
// moves, and not for a drift.
func TestMemoryTrimmer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var conns, trims atomic.Int64
		m := newMemoryTrimmer(func() int { return int(conns.Load()) }, slog.New(slog.DiscardHandler))
		m.trim = func() { trims.Add(1) }
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go m.run(ctx)
		step := func(n int64, seconds int) {
			for range seconds {
				conns.Add(n)
				time.Sleep(time.Second)
			}
			synctest.Wait()
		}
		step(2000, 5) // a storm: 10,000 connections in 5 s
		if n := trims.Load(); n != 0 {
			t.Fatalf("%d trims while connections arrived", n)
		}
		step(0, 3) // settled
		if n := trims.Load(); n != 1 {
			t.Fatalf("%d trims after the storm settled; want 1", n)
		}
		step(0, 30) // quiet
		step(5, 60) // a drift of 300 connections
		if n := trims.Load(); n != 1 {
			t.Fatalf("%d trims for quiet and drift; want still 1", n)
		}
		step(-3000, 2) // a storm of departures
		step(0, 3)
		if n := trims.Load(); n != 2 {
			t.Fatalf("%d trims after 6,000 connections left; want 2", n)
		}
		step(200, 4) // 800 more: under the storm size
		step(0, 3)
		if n := trims.Load(); n != 2 {
			t.Fatalf("%d trims after 800 connections; want still 2", n)
		}
	})
}
