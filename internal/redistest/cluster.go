package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of private redis-server processes on loopback
// ports, created with redis-cli --cluster create and stopped when the test
// ends. Nodes can be killed and restarted (Server.Kill, Server.Restart),
// failed over and have slots migrated, for fault tests.
type Cluster struct {
	t     testing.TB
	Nodes []*Server // every node, masters first as created
}

// StartCluster starts masters×(1+replicasPerMaster) nodes and joins them
// into a cluster with a node timeout of 1s (failures are detected within
// about 2s). Options apply to every node.
func StartCluster(t testing.TB, masters, replicasPerMaster int, opts ...Option) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli not found in PATH: install it (Debian: apt-get install -y redis-tools) or run `make test`, which installs it")
	}
	c := &Cluster{t: t}
	opts = append([]Option{Args("--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
		"--cluster-replica-validity-factor", "0")}, opts...)
	for range masters * (1 + replicasPerMaster) {
		c.Nodes = append(c.Nodes, Start(t, opts...))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(20 * time.Second)
	return c
}

// Addrs are the nodes' host:port addresses.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL is the cluster's redis-cluster:// URL, listing every node as a seed.
func (c *Cluster) URL() string {
	return "redis-cluster://" + strings.Join(c.Addrs(), ",")
}

// Client returns a cluster client that never retries a command (a retried
// publish could publish twice), closed when the test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        c.Addrs(),
		MaxRetries:   -1,
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
	})
	c.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Slot is the hash slot of key.
func (c *Cluster) Slot(key string) int {
	c.t.Helper()
	n, err := c.do(c.live(), "cluster", "keyslot", key).Int()
	if err != nil {
		c.t.Fatalf("redistest: CLUSTER KEYSLOT: %v", err)
	}
	return n
}

// MasterOf returns the node serving slot, as a live node sees it.
func (c *Cluster) MasterOf(slot int) *Server {
	c.t.Helper()
	slots, err := c.slots(c.live())
	if err != nil {
		c.t.Fatalf("redistest: CLUSTER SLOTS: %v", err)
	}
	for _, r := range slots {
		if int(r.Start) <= slot && slot <= int(r.End) && len(r.Nodes) > 0 {
			return c.byAddr(r.Nodes[0].Addr)
		}
	}
	c.t.Fatalf("redistest: no master for slot %d", slot)
	return nil
}

// Masters returns the running masters.
func (c *Cluster) Masters() []*Server {
	var ms []*Server
	for _, n := range c.Nodes {
		if n.Running() && c.role(n) == "master" {
			ms = append(ms, n)
		}
	}
	return ms
}

// ReplicaOf returns a running replica of master m, or nil.
func (c *Cluster) ReplicaOf(m *Server) *Server {
	id := c.ID(m)
	for _, n := range c.Nodes {
		if n == m || !n.Running() {
			continue
		}
		info, err := c.do(n, "role").Slice()
		if err == nil && len(info) >= 3 && info[0] == "slave" {
			host := fmt.Sprint(info[1])
			port := fmt.Sprint(info[2])
			if host+":"+port == m.Addr() || c.masterID(n) == id {
				return n
			}
		}
	}
	return nil
}

// ID is the node's cluster ID.
func (c *Cluster) ID(n *Server) string {
	c.t.Helper()
	id, err := c.do(n, "cluster", "myid").Text()
	if err != nil {
		c.t.Fatalf("redistest: CLUSTER MYID: %v", err)
	}
	return id
}

// Failover runs CLUSTER FAILOVER on replica (a manual, lossless failover
// to it) and waits until the cluster agrees.
func (c *Cluster) Failover(replica *Server) {
	c.t.Helper()
	if err := c.do(replica, "cluster", "failover").Err(); err != nil {
		c.t.Fatalf("redistest: CLUSTER FAILOVER: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.role(replica) != "master" {
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: %s did not become master", replica.Addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.WaitOK(10 * time.Second)
}

// MigrateSlot moves slot and its keys to node to, the way redis-cli
// --cluster reshard does: SETSLOT IMPORTING/MIGRATING, MIGRATE every key,
// SETSLOT NODE on both nodes then on every other master.
func (c *Cluster) MigrateSlot(slot int, to *Server) {
	c.t.Helper()
	from := c.MasterOf(slot)
	if from == to {
		return
	}
	fromID, toID := c.ID(from), c.ID(to)
	s := strconv.Itoa(slot)
	c.must(to, "cluster", "setslot", s, "importing", fromID)
	c.must(from, "cluster", "setslot", s, "migrating", toID)
	host, port, _ := strings.Cut(to.Addr(), ":")
	for {
		keys, err := c.do(from, "cluster", "getkeysinslot", s, "100").StringSlice()
		if err != nil {
			c.t.Fatalf("redistest: CLUSTER GETKEYSINSLOT: %v", err)
		}
		if len(keys) == 0 {
			break
		}
		args := []string{"migrate", host, port, "", "0", "5000", "keys"}
		c.must(from, append(args, keys...)...)
	}
	c.must(to, "cluster", "setslot", s, "node", toID)
	c.must(from, "cluster", "setslot", s, "node", toID)
	for _, m := range c.Masters() {
		if m != to && m != from {
			_ = c.do(m, "cluster", "setslot", s, "node", toID).Err()
		}
	}
	c.WaitOK(10 * time.Second)
}

// WaitOK waits until every running node reports cluster_state:ok and they
// all agree on the slot map.
func (c *Cluster) WaitOK(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, why := c.consistent()
		if ok {
			return
		}
		last = why
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: cluster not ok after %v: %s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) consistent() (bool, string) {
	var first string
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		info, err := c.do(n, "cluster", "info").Text()
		if err != nil {
			return false, err.Error()
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return false, n.Addr() + " cluster_state not ok"
		}
		slots, err := c.slots(n)
		if err != nil {
			return false, err.Error()
		}
		var sig []string
		for _, r := range slots {
			sig = append(sig, fmt.Sprintf("%d-%d@%s", r.Start, r.End, r.Nodes[0].Addr))
		}
		slices.Sort(sig)
		s := strings.Join(sig, ",")
		if first == "" {
			first = s
		} else if s != first {
			return false, "nodes disagree on the slot map"
		}
	}
	return true, ""
}

func (c *Cluster) role(n *Server) string {
	info, err := c.do(n, "role").Slice()
	if err != nil || len(info) == 0 {
		return ""
	}
	return fmt.Sprint(info[0])
}

func (c *Cluster) masterID(n *Server) string {
	nodes, err := c.do(n, "cluster", "nodes").Text()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && strings.Contains(f[2], "myself") {
			return f[3]
		}
	}
	return ""
}

func (c *Cluster) byAddr(addr string) *Server {
	for _, n := range c.Nodes {
		if n.Addr() == addr {
			return n
		}
	}
	c.t.Fatalf("redistest: unknown node %s", addr)
	return nil
}

func (c *Cluster) live() *Server {
	for _, n := range c.Nodes {
		if n.Running() {
			return n
		}
	}
	c.t.Fatalf("redistest: no running node")
	return nil
}

func (c *Cluster) slots(n *Server) ([]redis.ClusterSlot, error) {
	cl := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	//lint:ignore SA1019 CLUSTER SLOTS is the view go-redis's cluster client routes by.
	return cl.ClusterSlots(ctx).Result()
}

func (c *Cluster) do(n *Server, args ...string) *redis.Cmd {
	cl := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := make([]any, len(args))
	for i, s := range args {
		a[i] = s
	}
	cmd := cl.Do(ctx, a...)
	_ = cmd.Err()
	return cmd
}

func (c *Cluster) must(n *Server, args ...string) {
	c.t.Helper()
	if err := c.do(n, args...).Err(); err != nil {
		c.t.Fatalf("redistest: %s on %s: %v", strings.Join(args[:min(len(args), 4)], " "), n.Addr(), err)
	}
}
