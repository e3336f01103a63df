package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Pub/Sub canary.
//
// A Pub/Sub connection can stop delivering while everything else looks
// well: publishes succeed (they travel on the command connections), Redis
// answers PING there, and the health loop only sees a connection that went
// entirely silent (centrifugo#1189: after a Redis failover the Pub/Sub loop
// wedged while publishes returned 200 and /health stayed green). So each
// Pub/Sub connection has a canary: every CanaryInterval the broker PUBLISHes
// the current time on a private channel subscribed on that connection, and
// the read loop notes when it comes back. That is the path of a message —
// a command connection, Redis, this Pub/Sub connection, the read loop — less
// the stream: the canary is only published, so it writes no history. A
// connection whose newest returned canary was sent more than CanaryTimeout
// ago is late; CanaryErr reports it, for readiness probes.
//
// One canary per connection, because connections wedge one at a time: with
// PubSubConns connections a single canary would watch one of them and miss
// the channels of the others. Channel names are unique per broker (a random
// instance ID) and per connection, and cannot be a Herald channel's:
//
//   - one Redis: Prefix + "canary:" + instance + ":" + n — a Herald
//     channel's Pub/Sub name is Prefix + "{" + channel + "}";
//   - Redis Cluster: sharded Pub/Sub only delivers on the node owning the
//     channel's slot, so the canary borrows the hash tag of a channel the
//     connection holds — name + "~canary:" + instance + ":" + n, which ends
//     without the "}" every Herald name ends with — and follows it when the
//     channel leaves. A cluster connection holding no channel delivers
//     nothing and has no canary.
//
// The canary never replaces a connection: the health loop does that when a
// connection goes silent (3×HealthCheck). Under CPU starvation the canary
// comes back late and readiness turns 503 until it catches up, which takes
// a starved instance out of its balancer for a while but cannot start the
// resubscription storm a replacement would; and each canary that comes back
// counts as traffic for the health loop, which then sends fewer PINGs.

// canaries is the broker's canary state.
type canaries struct {
	instance  string    // random; names this broker's canary channels
	epoch     time.Time // canary times are nanoseconds since it, on the monotonic clock
	next      atomic.Uint64
	lateTotal atomic.Uint64
}

// canary is one shard's.
type canary struct {
	n     uint64                 // numbers the shard's canary channel; set before canaryLoop starts
	name  atomic.Pointer[string] // the channel subscribed on the shard's connection, nil if none; set by canaryLoop with shard.ctl held
	tag   string                 // cluster: the Herald Pub/Sub channel whose slot name shares; owned by canaryLoop
	back  atomic.Int64           // when the newest canary that came back was sent (at first: when name was subscribed)
	heard atomic.Pointer[string] // name, once one of its canaries came back
	late  bool                   // owned by canaryLoop
}

func (c *canaries) init() {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	c.instance, c.epoch = hex.EncodeToString(id), time.Now()
}

func (b *Broker) canaryNow() int64 { return int64(time.Since(b.canaries.epoch)) }

// startCanary starts s's canary loop unless the canary is disabled.
func (b *Broker) startCanary(s *shard) {
	if b.cfg.CanaryInterval < 0 {
		return
	}
	s.canary.n = b.canaries.next.Add(1)
	b.wg.Add(1)
	go s.canaryLoop()
}

func (s *shard) canaryLoop() {
	defer s.b.wg.Done()
	t := time.NewTicker(s.b.cfg.CanaryInterval)
	defer t.Stop()
	for {
		s.canaryTick()
		select {
		case <-s.b.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// canaryTick notes whether the canary is late, then sends the next one.
func (s *shard) canaryTick() {
	ctx, cancel := context.WithTimeout(s.b.ctx, s.b.cfg.CanaryTimeout)
	defer cancel()
	name := s.ensureCanary(ctx)
	s.noteLate(name != "")
	if name == "" {
		return
	}
	if err := s.publishCanary(ctx, name); err != nil && s.b.ctx.Err() == nil {
		s.b.cfg.Logger.Debug("redis pubsub canary publish failed", "channel", name, "err", err)
	}
}

// publishCanary publishes the current time on name. On a cluster it goes
// to the master the slot map names, which wantCanary checked is s's node,
// and does not follow a MOVED reply: the canary checks s's node, and a
// redirection would also make go-redis reload its slot map, possibly from
// a node that has not yet heard of a migration, delaying the reload that
// rebalanceLoop asks for.
func (s *shard) publishCanary(ctx context.Context, name string) error {
	payload := strconv.FormatInt(s.b.canaryNow(), 10)
	if s.b.cluster == nil {
		return s.b.rdb.Publish(ctx, name, payload).Err()
	}
	node, err := s.b.cluster.MasterForKey(ctx, name)
	if err != nil {
		return err
	}
	return node.SPublish(ctx, name, payload).Err()
}

// noteLate counts and logs the canary turning late, and back.
func (s *shard) noteLate(checked bool) {
	if !checked {
		s.canary.late = false
		return
	}
	age := time.Duration(s.b.canaryNow() - s.canary.back.Load())
	late := age > s.b.cfg.CanaryTimeout
	switch {
	case late && !s.canary.late:
		s.b.canaries.lateTotal.Add(1)
		s.b.cfg.Logger.Warn("redis pubsub connection delivers no canary", "node", s.addr, "since", age.Round(time.Millisecond))
	case !late && s.canary.late:
		s.b.cfg.Logger.Info("redis pubsub connection delivers again", "node", s.addr)
	}
	s.canary.late = late
}

// heardCanary records a canary the read loop received and reports whether
// m was one.
func (s *shard) heardCanary(m *redis.Message) bool {
	name := s.canary.name.Load()
	if name == nil || m.Channel != *name {
		return false
	}
	sent, err := strconv.ParseInt(m.Payload, 10, 64)
	if err != nil {
		return true // not ours: only this broker knows the name
	}
	for {
		old := s.canary.back.Load()
		if sent <= old || s.canary.back.CompareAndSwap(old, sent) {
			break
		}
	}
	s.canary.heard.Store(name)
	return true
}

// canaryName is the canary channel subscribed on s's connection, "" if
// none; it changes only with s.ctl held.
func (s *shard) canaryName() string {
	if n := s.canary.name.Load(); n != nil {
		return *n
	}
	return ""
}

// ensureCanary subscribes s's canary channel if it is not, or moves it (on a
// cluster, when the channel it shared a slot with left s), and returns it.
func (s *shard) ensureCanary(ctx context.Context) string {
	want, tag := s.wantCanary(ctx)
	if want == s.canaryName() {
		return want
	}
	s.ctl.Lock()
	defer s.ctl.Unlock()
	old := s.canaryName()
	s.mu.Lock()
	ps, closed := s.ps, s.closed
	s.mu.Unlock()
	if closed {
		return ""
	}
	if want == old {
		return want
	}
	if want != "" {
		if old == "" {
			// A first canary starts on time. A moved one keeps the
			// connection's record: moving must not hide a wedge.
			s.canary.back.Store(s.b.canaryNow())
		}
		s.canary.name.Store(&want)
		s.canary.tag = tag
	} else {
		s.canary.name.Store(nil)
	}
	s.b.cfg.Logger.Debug("redis pubsub canary channel", "node", s.addr, "from", old, "to", want)
	if old != "" && ps != nil {
		_ = s.unsubscribeLocked(ctx, ps, old)
	}
	if want != "" {
		// A failed write is retried by go-redis's reconnect, which
		// resubscribes every recorded channel.
		if err := s.subscribeLocked(ctx, want); err != nil {
			s.b.cfg.Logger.Debug("pubsub canary subscribe write failed; will resubscribe on reconnect", "channel", want, "err", err)
		}
	}
	return want
}

// wantCanary is the canary channel s should have, and on a cluster the
// channel whose slot it shares: the current one while that channel is still
// s's and on s's node, else another of s's channels, else none.
func (s *shard) wantCanary(ctx context.Context) (name, tag string) {
	suffix := "canary:" + s.b.canaries.instance + ":" + strconv.FormatUint(s.canary.n, 10)
	if s.b.cluster == nil {
		return s.b.cfg.Prefix + suffix, ""
	}
	const tries = 16
	candidates := make([]string, 0, tries)
	s.mu.Lock()
	if cur := s.canaryName(); cur != "" && s.chans[s.canary.tag] != nil {
		candidates = append(candidates, s.canary.tag)
	}
	for name := range s.chans {
		if len(candidates) == tries {
			break
		}
		candidates = append(candidates, name)
	}
	s.mu.Unlock()
	for _, c := range candidates {
		if owner, err := s.b.ownerOf(ctx, c); err == nil && owner == s.addr {
			return c + "~" + suffix, c
		}
	}
	return "", ""
}

// CanaryStatus describes the Pub/Sub canaries (see Config.CanaryInterval).
type CanaryStatus struct {
	Connections int           // Pub/Sub connections with a canary
	Late        int           // of them, those whose canary is late
	Unheard     int           // of them, those whose canary channel has not delivered yet
	Age         time.Duration // the largest time since the newest canary that came back on a connection was sent
	LateTotal   uint64        // times a connection's canary turned late
}

// Canary returns the state of the Pub/Sub canaries; zero if disabled.
func (b *Broker) Canary() CanaryStatus {
	var st CanaryStatus
	if b.cfg.CanaryInterval < 0 {
		return st
	}
	now := b.canaryNow()
	for _, s := range b.allShards(false) {
		name := s.canary.name.Load()
		if name == nil {
			continue
		}
		age := time.Duration(now - s.canary.back.Load())
		st.Connections++
		st.Age = max(st.Age, age)
		if age > b.cfg.CanaryTimeout {
			st.Late++
		}
		if s.canary.heard.Load() != name {
			st.Unheard++
		}
	}
	st.LateTotal = b.canaries.lateTotal.Load()
	return st
}

// CanaryErr is nil unless a Pub/Sub connection's canary is late: that
// connection stopped delivering, or the instance is too starved to read it.
// For readiness probes.
func (b *Broker) CanaryErr() error {
	st := b.Canary()
	if st.Late == 0 {
		return nil
	}
	return fmt.Errorf("redis pubsub: no canary came back for %v on %d of %d connections (timeout %v)",
		st.Age.Round(100*time.Millisecond), st.Late, st.Connections, b.cfg.CanaryTimeout)
}

// canaryDefaults fills in and checks the canary's configuration.
func canaryDefaults(cfg *Config) error {
	if cfg.CanaryInterval < 0 {
		return nil
	}
	if cfg.CanaryInterval == 0 {
		cfg.CanaryInterval = 2 * time.Second
	}
	if cfg.CanaryTimeout == 0 {
		cfg.CanaryTimeout = 5 * cfg.CanaryInterval
	}
	if cfg.CanaryTimeout <= cfg.CanaryInterval {
		return fmt.Errorf("redisbroker: CanaryTimeout (%v) must be longer than CanaryInterval (%v)", cfg.CanaryTimeout, cfg.CanaryInterval)
	}
	return nil
}
