package redisbroker_test

import (
	"context"
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
	if n, err := newClient(t, srv).Exists(context.Background(), "herald:{room.r}:pl").Result(); err != nil || n != 0 {
		t.Fatalf("after the restart the lease key exists: %d, %v", n, err)
	}
	evs := sink.WaitFor(t, 15*time.Second, "the member announced again", func(evs []brokertest.PresenceEvent) bool { return len(evs) >= 2 })
	if j := evs[1].Joins; len(j) != 1 || j[0] != m || evs[1].Count != 1 {
		t.Fatalf("after the restart got %+v; want the join of %v again, count 1", evs[1], m)
	}
	page, err := observer.Members(context.Background(), "room.r", 10, "")
	if err != nil || page.Count != 1 || len(page.Members) != 1 || page.Members[0] != m {
		t.Fatalf("Members after the restart = %+v, %v; want just %v", page, err, m)
	}
}
