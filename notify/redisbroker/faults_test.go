package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
	"github.com/heraldhq/herald/notify/redisbroker"
)

// faultRun publishes a numbered stream of messages from one instance while a
// subscriber on another instance receives them, and injects a fault midway.
// It checks promise 3: publishes that fail return an error; every publish
// that succeeded is delivered, exactly once, in order.
func faultRun(t *testing.T, srv *redistest.Server, total int, fault func()) (sub *redisbroker.Broker, failed int) {
	t.Helper()
	return faultRunWith(t, func() *redisbroker.Broker { return newBroker(t, srv, redisbroker.Config{}) }, total, fault)
}

// faultRunWith is faultRun with brokers made by newInstance.
func faultRunWith(t *testing.T, newInstance func() *redisbroker.Broker, total int, fault func()) (sub *redisbroker.Broker, failed int) {
	t.Helper()
	pub := newInstance()
	sub = newInstance()
	hub := notify.NewHub(sub, notify.HubConfig{})
	t.Cleanup(func() { _ = hub.Close() })
	cl := brokertest.Connect(t, hub)
	cl.Subscribe(t, "drill", "")

	type result struct {
		id  notify.ID
		err error
	}
	results := make([]result, total)
	var wg sync.WaitGroup
	wg.Add(1)
	faultAt := make(chan struct{})
	go func() {
		defer wg.Done()
		for i := 0; i < total; i++ {
			if i == total/3 {
				close(faultAt)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			id, err := pub.Publish(ctx, notify.Publication{Channel: "drill", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
			cancel()
			results[i] = result{id, err}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	<-faultAt
	fault()
	wg.Wait()

	var ok []notify.ID
	okByN := map[int]notify.ID{}
	for i, r := range results {
		if r.err != nil {
			failed++
			continue
		}
		ok = append(ok, r.id)
		okByN[i] = r.id
	}
	last := ok[len(ok)-1]
	envs := cl.WaitFor(t, 30*time.Second, "the last successful publish", func(envs []*notify.Envelope) bool {
		for _, e := range envs {
			if e.ID == last {
				return true
			}
		}
		return false
	})
	seen := map[int]bool{}
	var prev notify.ID
	for _, e := range envs {
		switch e.Type {
		case notify.TypeGap:
			t.Fatalf("unexpected gap notice %s", e.JSON())
		case notify.TypeMessage:
		default:
			continue
		}
		if !e.ID.After(prev) {
			t.Fatalf("message %v after %v: out of order or duplicate", e.ID, prev)
		}
		prev = e.ID
		var d struct{ N int }
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatal(err)
		}
		if seen[d.N] {
			t.Fatalf("message #%d delivered twice", d.N)
		}
		seen[d.N] = true
		if id, was := okByN[d.N]; was && id != e.ID {
			t.Fatalf("message #%d delivered with ID %v; publish returned %v", d.N, e.ID, id)
		}
	}
	for n := range okByN {
		if !seen[n] {
			t.Fatalf("message #%d was published successfully but never delivered", n)
		}
	}
	st := sub.Stats()
	t.Logf("%d publishes: %d succeeded, %d failed with an error, %d delivered (%d of them after failing at the publisher), 0 lost, 0 duplicated; subscriber broker: %d resubscriptions, %d channel moves, %d messages recovered from the stream",
		total, len(ok), failed, len(seen), len(seen)-len(ok), st.Reconnects, st.Moves, st.CatchUps)
	return sub, failed
}

func TestNoLossWhenRedisRestarts(t *testing.T) {
	srv := redistest.Start(t, redistest.Persistent())
	sub, failed := faultRun(t, srv, 600, func() {
		srv.Kill()
		time.Sleep(500 * time.Millisecond)
		srv.Restart()
	})
	if failed == 0 {
		t.Errorf("no publish failed while Redis was down: the fault did not happen")
	}
	if sub.Stats().Reconnects == 0 {
		t.Errorf("the subscriber's Pub/Sub never resubscribed")
	}
}

func TestNoLossWhenPubSubConnectionsAreKilled(t *testing.T) {
	srv := redistest.Start(t)
	admin := newClient(t, srv)
	sub, failed := faultRun(t, srv, 600, func() {
		for i := 0; i < 3; i++ {
			if err := admin.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
				t.Errorf("CLIENT KILL TYPE pubsub: %v", err)
			}
			time.Sleep(150 * time.Millisecond)
		}
	})
	if failed != 0 {
		t.Errorf("%d publishes failed; killing Pub/Sub connections must not affect publishing", failed)
	}
	if sub.Stats().Reconnects == 0 {
		t.Errorf("the subscriber's Pub/Sub never resubscribed")
	}
}

func TestNoLossWhenRedisPauses(t *testing.T) {
	srv := redistest.Start(t)
	_, failed := faultRun(t, srv, 600, func() {
		srv.Pause()
		time.Sleep(2500 * time.Millisecond)
		srv.Resume()
	})
	if failed == 0 {
		t.Errorf("no publish failed while Redis was paused: the fault did not happen")
	}
}
