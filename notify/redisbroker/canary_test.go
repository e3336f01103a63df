package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/redis/go-redis/v9"
)

// canaryConfig checks every 50ms, late after 400ms; the health loop replaces
// a silent connection after 3s, so a wedge shows before it is repaired.
var canaryConfig = redisbroker.Config{CanaryInterval: 50 * time.Millisecond, CanaryTimeout: 400 * time.Millisecond, HealthCheck: time.Second}

// waitCanary waits until cond holds for b's canary status.
func waitCanary(t *testing.T, b *redisbroker.Broker, what string, cond func(redisbroker.CanaryStatus) bool) redisbroker.CanaryStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := b.Canary()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; canary %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func healthy(st redisbroker.CanaryStatus) bool { return st.Late == 0 && st.Unheard == 0 }

// TestCanarySeesWedgedPubSub: with the broker's Pub/Sub connections frozen
// by a proxy while its command connections flow — publishes and PING
// succeed, as in centrifugo#1189 — the canary reports each frozen
// connection late: one wedged connection of four, then all of them. It
// turns healthy again by itself, once the health loop replaced the wedged
// connection, or once the freeze ends; and nothing published meanwhile is
// lost.
func TestCanarySeesWedgedPubSub(t *testing.T) {
	srv := redistest.Start(t)
	fz := redistest.NewFreezer(t)
	cfg := canaryConfig
	cfg.Client = redis.NewClient(&redis.Options{Addr: fz.Addr(srv.Addr()), MaxRetries: -1, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = cfg.Client.Close() })
	b := startBroker(t, cfg)
	hub := notify.NewHub(b, notify.HubConfig{})
	t.Cleanup(func() { _ = hub.Close() })
	cl := brokertest.Connect(t, hub)
	cl.Subscribe(t, "news", "")
	ctx := context.Background()

	waitCanary(t, b, "a canary back on every connection", func(st redisbroker.CanaryStatus) bool { return st.Connections == 4 && healthy(st) })
	waitFor(t, "4 subscribed connections through the proxy", func() bool { return fz.Subscribers() == 4 })

	// One wedged connection out of four: a canary per broker would watch
	// it one time in four.
	if n := fz.Wedge(1); n != 1 {
		t.Fatalf("wedged %d connections; want 1", n)
	}
	st := waitCanary(t, b, "the wedged connection late, and counted", func(st redisbroker.CanaryStatus) bool { return st.Late == 1 && st.LateTotal == 1 })
	if err := b.CanaryErr(); err == nil || !strings.Contains(err.Error(), "1 of 4 connections") {
		t.Fatalf("CanaryErr = %v; want 1 of 4 connections late", err)
	}
	if st.Age <= cfg.CanaryTimeout {
		t.Errorf("late with age %v; want > %v", st.Age, cfg.CanaryTimeout)
	}
	// The health loop replaces the silent connection; the canary of its
	// successor comes back.
	waitCanary(t, b, "healthy after the health loop replaced the connection", healthy)

	fz.Freeze()
	if _, err := b.Publish(ctx, notify.Publication{Channel: "news", Data: json.RawMessage(`1`)}); err != nil {
		t.Fatalf("publish while Pub/Sub is frozen: %v", err)
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("ping while Pub/Sub is frozen: %v", err)
	}
	// Each canary loop counts its connection turning late at its next
	// tick: the three never late so far at least (the fourth only if its
	// loop ticked while it was healthy again).
	waitCanary(t, b, "every connection late, and counted", func(st redisbroker.CanaryStatus) bool { return st.Late == 4 && st.LateTotal >= 4 })
	if err := b.CanaryErr(); err == nil || !strings.Contains(err.Error(), "4 of 4 connections") {
		t.Fatalf("CanaryErr = %v; want 4 of 4 connections late", err)
	}
	fz.Thaw()
	waitCanary(t, b, "healthy after the freeze", healthy)
	if err := b.CanaryErr(); err != nil {
		t.Fatalf("CanaryErr after the freeze: %v", err)
	}
	cl.WaitMessages(t, "news", 1, 10*time.Second)
}

// TestCanaryConfigErrors: a timeout that does not exceed the interval is
// refused; a negative interval disables the canary.
func TestCanaryConfigErrors(t *testing.T) {
	srv := redistest.Start(t)
	for _, cfg := range []redisbroker.Config{
		{CanaryInterval: time.Second, CanaryTimeout: time.Second},
		{CanaryInterval: time.Second, CanaryTimeout: -time.Second},
		{CanaryTimeout: time.Second}, // the interval's default is 2s
	} {
		cfg.Client = newClient(t, srv)
		if b, err := redisbroker.New(cfg); err == nil || !strings.Contains(err.Error(), "CanaryTimeout") {
			if b != nil {
				_ = b.Close()
			}
			t.Errorf("New(interval %v, timeout %v) = %v; want a CanaryTimeout error", cfg.CanaryInterval, cfg.CanaryTimeout, err)
		}
	}
	b := newBroker(t, srv, redisbroker.Config{CanaryInterval: -1})
	time.Sleep(100 * time.Millisecond)
	if st := b.Canary(); st != (redisbroker.CanaryStatus{}) || b.CanaryErr() != nil {
		t.Fatalf("disabled canary: %+v, %v", st, b.CanaryErr())
	}
}

// TestCanaryOnCluster: on Redis Cluster each Pub/Sub connection holding
// channels (one per master here) has a canary on its own node; a freeze
// makes them all late, a thaw healthy. When the channel whose slot a canary
// shares moves to another master, the canary moves to a channel still on
// its node and comes back there.
func TestCanaryOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	fz := redistest.NewFreezer(t)
	cfg := canaryConfig
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), Dialer: fz.Dial, MaxRetries: -1, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = cc.Close() })
	cfg.Client, cfg.PubSubConns = cc, 1
	b := startBroker(t, cfg)
	hub := notify.NewHub(b, notify.HubConfig{})
	t.Cleanup(func() { _ = hub.Close() })
	cl := brokertest.Connect(t, hub)
	all := func(st redisbroker.CanaryStatus) bool { return st.Connections == 3 && healthy(st) }

	// One channel per master: each canary shares its slot.
	first := channelPerMaster(c, 0)
	for _, ch := range first {
		cl.Subscribe(t, ch, "")
	}
	waitCanary(t, b, "a canary back on each master's connection", all)
	fz.Freeze()
	waitCanary(t, b, "every connection late", func(st redisbroker.CanaryStatus) bool { return st.Late == 3 })
	fz.Thaw()
	waitCanary(t, b, "healthy after the freeze", all)

	// A second channel per master, then the first ones move on.
	for _, ch := range channelPerMaster(c, 1000) {
		cl.Subscribe(t, ch, "")
	}
	masters := c.Masters()
	moves := b.Stats().Moves
	for i, m := range masters {
		c.MigrateSlot(c.Slot("herald:{"+first[m.Addr()]+"}"), masters[(i+1)%len(masters)])
	}
	waitFor(t, "3 channels moved", func() bool { return b.Stats().Moves >= moves+3 })
	waitCanary(t, b, "every moved canary back", all)
	fz.Freeze()
	waitCanary(t, b, "every connection late after the moves", func(st redisbroker.CanaryStatus) bool { return st.Late == 3 })
	fz.Thaw()
	waitCanary(t, b, "healthy again", all)
}

// channelPerMaster returns a channel on each master, by master address,
// numbered from start.
func channelPerMaster(c *redistest.Cluster, start int) map[string]string {
	chans := map[string]string{}
	for i := start; len(chans) < len(c.Masters()); i++ {
		ch := fmt.Sprintf("room.%d", i)
		m := c.MasterOf(c.Slot("herald:{" + ch + "}")).Addr()
		if chans[m] == "" {
			chans[m] = ch
		}
	}
	return chans
}
