package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/redis/go-redis/v9"
)

func newClusterBroker(t testing.TB, c *redistest.Cluster, cfg redisbroker.Config) *redisbroker.Broker {
	t.Helper()
	cfg.Client = c.Client()
	return startBroker(t, cfg)
}

// TestClusterConformance runs the broker conformance suite (fan-out across
// instances, resume exactly once, gaps, …) on a three-master cluster. One
// cluster serves every scenario; each starts with empty masters.
func TestClusterConformance(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0, redistest.Args("--stream-node-max-entries", "10"))
	admin := c.Client()
	brokertest.Run(t, func(t *testing.T, opts brokertest.Options) func() notify.Broker {
		err := admin.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			return m.FlushAll(ctx).Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		return func() notify.Broker {
			return newClusterBroker(t, c, redisbroker.Config{HistorySize: int64(opts.HistorySize)})
		}
	})
}

// TestClusterSpreadsChannels: channels on slots of every master, published
// on one instance, reach subscribers on another, each through a Pub/Sub
// connection on its own master; a batch spans masters.
func TestClusterSpreadsChannels(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	pub := newClusterBroker(t, c, redisbroker.Config{})
	sub := newClusterBroker(t, c, redisbroker.Config{})
	hub := notify.NewHub(sub, notify.HubConfig{})
	t.Cleanup(func() { _ = hub.Close() })
	cl := brokertest.Connect(t, hub)
	const n = 30
	masters := map[string]bool{}
	for i := range n {
		ch := fmt.Sprintf("room.%d", i)
		masters[c.MasterOf(c.Slot("herald:{"+ch+"}")).Addr()] = true
		cl.Subscribe(t, ch, "")
	}
	if len(masters) != 3 {
		t.Fatalf("channels on %d masters; want 3", len(masters))
	}
	ctx := context.Background()
	var batch []notify.Publication
	for i := range n {
		ch := fmt.Sprintf("room.%d", i)
		if _, err := pub.Publish(ctx, notify.Publication{Channel: ch, Data: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, notify.Publication{Channel: ch, Data: json.RawMessage(`2`)})
	}
	if ids, err := pub.PublishBatch(ctx, batch); err != nil || len(ids) != n {
		t.Fatalf("PublishBatch = %d IDs, %v", len(ids), err)
	}
	cl.WaitFor(t, 10*time.Second, "every message", func(envs []*notify.Envelope) bool {
		got := 0
		for _, e := range envs {
			if e.Type == notify.TypeMessage {
				got++
			}
		}
		return got == 2*n
	})
}

// TestClusterNoLossDuringSlotMigration moves the channel's slot to another
// master while publishing: the source node's sunsubscribe push and the
// publisher's MOVED replies lead to a resubscription on the new node and a
// catch-up from the (migrated) stream.
func TestClusterNoLossDuringSlotMigration(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	slot := c.Slot("herald:{drill}")
	sub, failed := faultRunWith(t, func() *redisbroker.Broker { return newClusterBroker(t, c, redisbroker.Config{}) }, 600, func() {
		from := c.MasterOf(slot)
		for _, m := range c.Masters() {
			if m != from {
				c.MigrateSlot(slot, m)
				break
			}
		}
		time.Sleep(300 * time.Millisecond)
		c.MigrateSlot(slot, from) // and back
	})
	if failed != 0 {
		t.Errorf("%d publishes failed during a slot migration; redirections must be followed", failed)
	}
	if sub.Stats().Moves < 2 {
		t.Errorf("the channel moved %d times; want 2", sub.Stats().Moves)
	}
}

// TestClusterNoLossDuringManualFailover promotes the channel master's
// replica with CLUSTER FAILOVER while publishing.
func TestClusterNoLossDuringManualFailover(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1)
	slot := c.Slot("herald:{drill}")
	sub, _ := faultRunWith(t, func() *redisbroker.Broker { return newClusterBroker(t, c, redisbroker.Config{}) }, 600, func() {
		m := c.MasterOf(slot)
		r := c.ReplicaOf(m)
		if r == nil {
			t.Fatal("no replica")
		}
		c.Failover(r)
	})
	t.Logf("channel moves after the failover: %d", sub.Stats().Moves)
}

// TestClusterNoLossWhenMasterKilled kills the channel's master with SIGKILL
// while publishing; its replica takes over after the node timeout.
// Replication is asynchronous: a write not yet sent to the replica dies with
// the master (and a subscriber that saw it live gets a gap notice). So the
// master's writes are paused (CLIENT PAUSE WRITE) and the replica allowed
// to catch up (WAIT) before the kill: the test checks Herald's failover
// handling, not Redis's replication.
func TestClusterNoLossWhenMasterKilled(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1)
	slot := c.Slot("herald:{drill}")
	admin := c.Client()
	sub, failed := faultRunWith(t, func() *redisbroker.Broker { return newClusterBroker(t, c, redisbroker.Config{}) }, 2000, func() {
		ctx := context.Background()
		m := c.MasterOf(slot)
		node, err := admin.MasterForKey(ctx, "herald:{drill}")
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Do(ctx, "client", "pause", 10000, "write").Err(); err != nil {
			t.Fatal(err)
		}
		waitReplicated(t, node)
		start := time.Now()
		m.Kill()
		for c.MasterOf(slot) == m {
			time.Sleep(20 * time.Millisecond)
		}
		c.WaitOK(15 * time.Second)
		t.Logf("failover took %v after the kill", time.Since(start).Round(time.Millisecond))
	})
	if failed == 0 {
		t.Errorf("no publish failed while the master was down: the fault did not happen")
	}
	if ok := 2000 - failed; ok < 2000/3+200 {
		t.Errorf("only %d publishes succeeded: publishing did not recover after the failover", ok)
	}
	t.Logf("channel moves after the failover: %d", sub.Stats().Moves)
}

// waitReplicated waits until master's replicas acknowledged its whole
// replication stream (ROLE: offsets).
func waitReplicated(t *testing.T, master *redis.Client) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		role, err := master.Do(context.Background(), "role").Slice()
		if err != nil {
			t.Fatal(err)
		}
		offset, _ := role[1].(int64)
		replicas, _ := role[2].([]any)
		done := len(replicas) > 0
		for _, r := range replicas {
			f, _ := r.([]any)
			if len(f) < 3 || fmt.Sprint(f[2]) != fmt.Sprint(offset) {
				done = false
			}
		}
		if done {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the replica did not catch up")
}
