package redisbroker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/redis/go-redis/v9"
)

func redisPresenceBackend(t *testing.T, cfg notify.PresenceConfig) func() brokertest.PresenceBroker {
	srv := redistest.Start(t)
	return func() brokertest.PresenceBroker {
		return newBroker(t, srv, redisbroker.Config{Presence: cfg})
	}
}

func TestRedisBrokerPresence(t *testing.T) {
	brokertest.RunPresence(t, redisPresenceBackend)
}

// TestClusterPresence runs the presence suite on a three-master cluster;
// each scenario starts with empty masters.
func TestClusterPresence(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	admin := c.Client()
	brokertest.RunPresence(t, func(t *testing.T, cfg notify.PresenceConfig) func() brokertest.PresenceBroker {
		err := admin.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			return m.FlushAll(ctx).Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		return func() brokertest.PresenceBroker {
			return newClusterBroker(t, c, redisbroker.Config{Presence: cfg})
		}
	})
}

// A presence payload that does not parse (a foreign writer) is dropped and
// counted like a malformed message; the valid announcements still arrive.
func TestMalformedPresencePayloadIsCounted(t *testing.T) {
	srv := redistest.Start(t)
	b := newBroker(t, srv, redisbroker.Config{Presence: killPresence})
	sink := brokertest.SubscribePresence(t, b, "room.m")
	raw := newClient(t, srv)
	junk := []string{"p\n", "p\nx\n+a\tb", "p\n-1\n+a\tb", "p\n1\n*a\tb", "p\n1\n+a b", "p\n1\n", "p\n1\n+a\tb\n\n", "p\n1\n+\tb", "p\n1\n+a\tbad user"}
	for _, p := range junk {
		if err := raw.Publish(context.Background(), "herald:{room.m}", p).Err(); err != nil {
			t.Fatal(err)
		}
	}
	m := notify.Member{User: "u1", Conn: "c1"}
	b.Join("room.m", m)
	evs := sink.WaitFor(t, 10*time.Second, "the join", func(evs []brokertest.PresenceEvent) bool { return len(evs) > 0 })
	if len(evs) != 1 || len(evs[0].Joins) != 1 || evs[0].Joins[0] != m {
		t.Fatalf("received %+v; want only the join of %v", evs, m)
	}
	if n := b.Stats().Malformed; n != uint64(len(junk)) {
		t.Fatalf("counted %d malformed payloads; want %d", n, len(junk))
	}
}

// Redis restarts empty (no persistence): the members' keys are gone, and
// the next renewal (within Lease/3) writes the local members again and
// announces them.
func TestPresenceSurvivesRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	a, observer := newBroker(t, srv, redisbroker.Config{Presence: killPresence}), newBroker(t, srv, redisbroker.Config{Presence: killPresence})
	sink := brokertest.SubscribePresence(t, observer, "room.r")
	m := notify.Member{User: "u1", Conn: "c1"}
	a.Join("room.r", m)
	sink.WaitFor(t, 10*time.Second, "the join", func(evs []brokertest.PresenceEvent) bool { return len(evs) == 1 })
	srv.Restart()
	// The observer's subscription came back: a reset, whose count is read
	// before or after the renewal wrote the member again; if before, the
	// member's join follows (a join is announced only when Redis lacked
	// the member: the restart emptied it).
	evs := sink.WaitFor(t, 15*time.Second, "a reset and the member announced again", func(evs []brokertest.PresenceEvent) bool {
		reset := false
		for _, ev := range evs[1:] {
			if ev.Reset && ev.Count == 1 {
				return true
			}
			reset = reset || ev.Reset
			if reset && len(ev.Joins) == 1 && ev.Joins[0] == m && ev.Count == 1 {
				return true
			}
		}
		return false
	})
	t.Logf("after the restart: %+v", evs[1:])
	page, err := observer.Members(context.Background(), "room.r", 10, "")
	if err != nil || page.Count != 1 || len(page.Members) != 1 || page.Members[0] != m {
		t.Fatalf("Members after the restart = %+v, %v; want just %v", page, err, m)
	}
}

// Changes written while Redis does not answer are written again once it
// does: long before renewal (Lease/3 = 20 s) or expiry (60 s) would repair
// them.
func TestPresenceFlushRetried(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisbroker.Config{Presence: notify.PresenceConfig{Interval: 100 * time.Millisecond, Lease: time.Minute}}
	a, observer := newBroker(t, srv, cfg), newBroker(t, srv, cfg)
	sink := brokertest.SubscribePresence(t, observer, "room.f")
	gone, joins := notify.Member{User: "u1", Conn: "c1"}, notify.Member{User: "u2", Conn: "c2"}
	a.Join("room.f", gone)
	sink.WaitFor(t, 10*time.Second, "the first join", func(evs []brokertest.PresenceEvent) bool { return len(evs) == 1 })
	srv.Pause()
	a.Leave("room.f", gone)
	a.Join("room.f", joins)
	time.Sleep(1500 * time.Millisecond) // the flush fails (1 s read timeout)
	srv.Resume()
	// The observer's Pub/Sub connection may have been replaced during
	// the pause too: then it misses the announcement and says so with a
	// reset envelope.
	evs := sink.WaitFor(t, 10*time.Second, "the changes made during the pause, or a reset", func(evs []brokertest.PresenceEvent) bool {
		p := brokertest.Present(evs)
		return (len(p) == 1 && p[joins.Conn] == joins) || evs[len(evs)-1].Reset
	})
	if errs := a.Stats().Errors; errs == 0 {
		t.Fatalf("no failed Redis call during the pause: the test did not test a retry (%+v)", evs)
	}
	if last := evs[len(evs)-1]; last.Reset && observer.Stats().Reconnects == 0 {
		t.Fatalf("a reset envelope without a reconnect: %+v", evs)
	}
	t.Logf("observer received %+v (reconnects %d)", evs, observer.Stats().Reconnects)
	page, err := observer.Members(context.Background(), "room.f", 10, "")
	if err != nil || page.Count != 1 || page.Members[0] != joins {
		t.Fatalf("Members = %+v, %v; want just %v", page, err, joins)
	}
}

// 1,500 ended leases (members of instances long dead) and a join in one
// flush: removed 1,000 per script, announced in payloads of at most
// MaxPresenceDiff changes whose counts follow each other.
func TestPresenceExpiryAnnouncedInBoundedPayloads(t *testing.T) {
	srv := redistest.Start(t)
	a := newBroker(t, srv, redisbroker.Config{Presence: killPresence})
	sink := brokertest.SubscribePresence(t, a, "room.e")
	raw := newClient(t, srv)
	ctx := context.Background()
	const dead = 1500
	for i := range dead {
		m := fmt.Sprintf("dead-%04d\tu", i)
		if err := raw.ZAdd(ctx, "herald:{room.e}:pl", redis.Z{Score: 1, Member: m}).Err(); err != nil {
			t.Fatal(err)
		}
		if err := raw.ZAdd(ctx, "herald:{room.e}:pm", redis.Z{Score: 0, Member: m}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	m := notify.Member{User: "u1", Conn: "c1"}
	a.Join("room.e", m)
	evs := sink.WaitFor(t, 10*time.Second, "every dead member's leave", func(evs []brokertest.PresenceEvent) bool {
		leaves := 0
		for _, ev := range evs {
			leaves += len(ev.Leaves)
		}
		return leaves == dead
	})
	count := dead
	for i, ev := range evs {
		if k := len(ev.Joins) + len(ev.Leaves); k > notify.MaxPresenceDiff {
			t.Fatalf("envelope %d has %d changes; want at most %d", i, k, notify.MaxPresenceDiff)
		}
		count += len(ev.Joins) - len(ev.Leaves)
		if ev.Count != count {
			t.Fatalf("envelope %d: count %d; want %d after its changes (%+v)", i, ev.Count, count, evs)
		}
	}
	if p := brokertest.Present(evs); len(p) != 1 || p[m.Conn] != m || count != 1 {
		t.Fatalf("present %v, count %d; want just %v", p, count, m)
	}
}

// TestPresenceCloseLeavesAtOnce: an instance that closes (a graceful
// shutdown or drain) removes its members at once, its queued changes
// included, instead of leaving them visible until their lease ends.
func TestPresenceCloseLeavesAtOnce(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisbroker.Config{Presence: notify.PresenceConfig{Interval: 50 * time.Millisecond, Lease: time.Minute}}
	observer, leaving := newBroker(t, srv, cfg), newBroker(t, srv, cfg)
	const channel = "room.close"
	sink := brokertest.SubscribePresence(t, observer, channel)
	for i := range 3 {
		leaving.Join(channel, notify.Member{User: "u", Conn: fmt.Sprintf("c%d", i)})
	}
	sink.WaitFor(t, 10*time.Second, "three members", func(evs []brokertest.PresenceEvent) bool { return len(brokertest.Present(evs)) == 3 })
	leaving.Join(channel, notify.Member{User: "u", Conn: "queued"}) // still queued at Close
	leaving.Leave(channel, notify.Member{User: "u", Conn: "c0"})
	if err := leaving.Close(); err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, 10*time.Second, "every member to leave at Close (the lease is a minute)", func(evs []brokertest.PresenceEvent) bool {
		return len(evs) > 0 && len(brokertest.Present(evs)) == 0
	})
	page, err := observer.Members(context.Background(), channel, 10, "")
	if err != nil || page.Count != 0 {
		t.Fatalf("Members after Close = %+v, %v; want none", page, err)
	}
}
