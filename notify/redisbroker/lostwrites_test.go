package redisbroker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
	"github.com/heraldhq/herald/notify/redisbroker"
)

// recordingSink records what a broker hands to one subscriber.
type recordingSink struct {
	mu   sync.Mutex
	ids  []notify.ID
	lost int
}

func (s *recordingSink) Deliver(m *notify.Envelope) {
	s.mu.Lock()
	s.ids = append(s.ids, m.ID)
	s.mu.Unlock()
}

func (s *recordingSink) Lost(string) {
	s.mu.Lock()
	s.lost++
	s.mu.Unlock()
}

func (s *recordingSink) snapshot() ([]notify.ID, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]notify.ID(nil), s.ids...), s.lost
}

func (s *recordingSink) waitFor(t *testing.T, what string, cond func(ids []notify.ID, lost int) bool) []notify.ID {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids, lost := s.snapshot()
		if cond(ids, lost) {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: delivered %v, %d gap reports", what, ids, lost)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// loseLastWrites rebuilds channel's stream without its last n entries, as a
// replica promoted before it received them would hold it, and returns the
// stream's new last-generated-id.
func loseLastWrites(t *testing.T, admin *redis.Client, channel string, n int) {
	t.Helper()
	ctx := context.Background()
	key := "herald:{" + channel + "}:h"
	entries, err := admin.XRange(ctx, key, "-", "+").Result()
	if err != nil || len(entries) < n {
		t.Fatalf("XRANGE: %d entries, %v", len(entries), err)
	}
	if err := admin.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries[:len(entries)-n] {
		if err := admin.XAdd(ctx, &redis.XAddArgs{Stream: key, ID: e.ID, Values: e.Values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// lastGenerated is a stream's last-generated-id.
func lastGenerated(t *testing.T, admin *redis.Client, channel string) notify.ID {
	t.Helper()
	info, err := admin.XInfoStream(context.Background(), "herald:{"+channel+"}:h").Result()
	if err != nil {
		t.Fatal(err)
	}
	id, err := notify.ParseID(info.LastGeneratedID)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestStreamLosesWritesAlreadyDelivered covers Redis losing the tail of a
// stream after its messages were delivered: a master that dies before its
// replica got the last writes, or a restart without them. The stream then
// ends before positions that subscribers and clients hold. Nothing is
// delivered twice, the loss is reported as one gap, the stream's IDs move
// past the positions held (so no new message can be taken for one already
// seen), and new messages flow.
func TestStreamLosesWritesAlreadyDelivered(t *testing.T) {
	srv := redistest.Start(t)
	admin := newClient(t, srv)
	pub := newBroker(t, srv, redisbroker.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("broker catch-up", func(t *testing.T) {
		sub := newBroker(t, srv, redisbroker.Config{})
		sink := &recordingSink{}
		if err := sub.Subscribe(ctx, "drill", sink); err != nil {
			t.Fatal(err)
		}
		var published []notify.ID
		for range 5 {
			published = append(published, brokertest.Publish(t, ctx, pub, "drill", 1))
		}
		sink.waitFor(t, "the first 5 messages", func(ids []notify.ID, _ int) bool { return len(ids) == 5 })
		loseLastWrites(t, admin, "drill", 2)

		// The subscriber's Pub/Sub connection drops: its catch-up finds
		// the stream ending before its position.
		if err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		sink.waitFor(t, "a gap report after the resubscription", func(_ []notify.ID, lost int) bool { return lost > 0 })
		if got := lastGenerated(t, admin, "drill"); got.Compare(published[4]) < 0 {
			t.Fatalf("stream's last-generated-id %v is still before the delivered position %v", got, published[4])
		}
		// A second resubscription finds nothing new lost: no second gap.
		before := sub.Stats().Reconnects
		if err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); sub.Stats().Reconnects == before; {
			if time.Now().After(deadline) {
				t.Fatal("the Pub/Sub connection did not resubscribe")
			}
			time.Sleep(5 * time.Millisecond)
		}
		for range 2 {
			published = append(published, brokertest.Publish(t, ctx, pub, "drill", 1))
		}
		ids := sink.waitFor(t, "the 2 messages published after the loss", func(ids []notify.ID, _ int) bool {
			return len(ids) > 0 && ids[len(ids)-1] == published[len(published)-1]
		})
		if len(ids) != len(published) {
			t.Fatalf("delivered %v; want each of %v once (a rewind delivers the stream again)", ids, published)
		}
		for i := range ids {
			if ids[i] != published[i] {
				t.Fatalf("delivered %v; want %v", ids, published)
			}
		}
		if _, lost := sink.snapshot(); lost != 1 {
			t.Fatalf("%d gap reports; want 1 (the loss, once)", lost)
		}
	})

	t.Run("client resume", func(t *testing.T) {
		var published []notify.ID
		for range 5 {
			published = append(published, brokertest.Publish(t, ctx, pub, "room", 1))
		}
		loseLastWrites(t, admin, "room", 2)

		// A client that saw the lost messages resumes on an instance: it
		// is not refused; it gets a gap notice, then the new messages.
		hub := notify.NewHub(newBroker(t, srv, redisbroker.Config{}), notify.HubConfig{})
		t.Cleanup(func() { _ = hub.Close() })
		cl := brokertest.Connect(t, hub)
		if err := cl.Conn.Subscribe(ctx, notify.SubscribeRequest{Channel: "room", Since: published[4].String()}); err != nil {
			t.Fatalf("resuming from a position Redis lost: %v; want a gap notice", err)
		}
		// The stream cannot give a new message an ID the client has seen.
		err := admin.XAdd(ctx, &redis.XAddArgs{Stream: "herald:{room}:h", ID: published[3].String(), Values: []any{"e", "x", "d", "1"}}).Err()
		if err == nil {
			t.Fatalf("XADD %v after the resume succeeded; the stream's IDs were not moved past the client's position", published[3])
		}
		for range 2 {
			published = append(published, brokertest.Publish(t, ctx, pub, "room", 1))
		}
		envs := cl.WaitFor(t, 10*time.Second, "the new messages", func(envs []*notify.Envelope) bool {
			return len(envs) > 0 && envs[len(envs)-1].ID == published[len(published)-1]
		})
		var kinds []string
		for _, e := range envs {
			kinds = append(kinds, e.Type)
		}
		if len(envs) != 4 || envs[0].Type != notify.TypeSubscribed || envs[1].Type != notify.TypeGap ||
			envs[2].ID != published[5] || envs[3].ID != published[6] {
			t.Fatalf("resumed client got %v; want subscribed, gap, the 2 new messages", kinds)
		}

		// A position further ahead than any clock skew is still refused.
		far := notify.ID{Ms: published[6].Ms + 3_600_000}
		err = brokertest.Connect(t, hub).Conn.Subscribe(ctx, notify.SubscribeRequest{Channel: "room", Since: far.String()})
		if !errors.Is(err, notify.ErrUnknownPosition) {
			t.Fatalf("future position: %v; want unknown_position", err)
		}
	})
}
