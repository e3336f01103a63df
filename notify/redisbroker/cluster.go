package redisbroker

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/redis/go-redis/v9"
)

// Redis Cluster mode.
//
// A channel's stream herald:{ch}:h and its Pub/Sub channel herald:{ch}
// share the hash tag {ch}, hence a slot and a node: the publish script runs
// on that node and SPUBLISHes there. Sharded Pub/Sub only delivers on the
// node (and its replicas) owning the slot, and go-redis pins a PubSub to the
// node of its first channel — an SSUBSCRIBE to another slot on it later
// silently receives nothing. So shards are created per master node (times
// Config.PubSubConns), each PubSub holds channels of its node only, and a
// channel lives in exactly one shard: its home.
//
// When a slot moves (a migration ends with a sunsubscribe push; a failover
// or a MOVED reply changes the slot map), rebalanceLoop moves each channel
// whose slot owner is no longer its shard's node to a shard of the new
// owner and SSUBSCRIBEs it there; the confirmation starts the same catch-up
// from the stream as after any reconnect (onConfirm), so nothing published
// meanwhile is lost and rchan.last drops what was already delivered.

// orphanWait is how long a channel the server unsubscribed waits for the
// slot map to show its new owner before it is resubscribed on the same
// node (the push may have been a race with our own unsubscribe).
const orphanWait = 2 * time.Second

// routes are the cluster-mode shards and channel homes.
type routes struct {
	mu     sync.Mutex
	shards map[string]*shard // "node#i" → shard; guarded by mu
	homes  map[string]*shard // Pub/Sub channel → the shard holding it; guarded by mu
	closed bool              // guarded by mu
}

func (r *routes) init() {
	r.shards = make(map[string]*shard)
	r.homes = make(map[string]*shard)
}

func (r *routes) home(name string) *shard {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.homes[name]
}

// allShards returns every shard; close forbids new ones.
func (b *Broker) allShards(close bool) []*shard {
	if b.cluster == nil {
		return b.shards
	}
	b.routes.mu.Lock()
	defer b.routes.mu.Unlock()
	b.routes.closed = b.routes.closed || close
	all := make([]*shard, 0, len(b.routes.shards))
	for _, s := range b.routes.shards {
		all = append(all, s)
	}
	return all
}

// shardFor returns the shard to subscribe name on: its home if it has one,
// else a shard of its slot's master.
func (b *Broker) shardFor(ctx context.Context, channel, name string) (*shard, error) {
	if b.cluster == nil {
		return b.shards[shardOf(channel, len(b.shards))], nil
	}
	if s := b.routes.home(name); s != nil {
		return s, nil
	}
	owner, err := b.ownerOf(ctx, name)
	if err != nil {
		b.stats.errors.Add(1)
		return nil, notify.Unavailable("subscribe", err)
	}
	return b.shardAt(owner, channel)
}

// shardAt returns (creating it) the shard of node addr for channel.
func (b *Broker) shardAt(addr, channel string) (*shard, error) {
	key := addr + "#" + strconv.Itoa(shardOf(channel, b.cfg.PubSubConns))
	b.routes.mu.Lock()
	defer b.routes.mu.Unlock()
	if b.routes.closed {
		return nil, notify.Unavailable("subscribe", errors.New("broker closed"))
	}
	s := b.routes.shards[key]
	if s == nil {
		s = newShard(b, addr)
		b.routes.shards[key] = s
		b.startShard(s)
	}
	return s, nil
}

// ownerOf returns the address of the master owning name's slot, per
// go-redis's slot map.
func (b *Broker) ownerOf(ctx context.Context, name string) (string, error) {
	c, err := b.cluster.MasterForKey(ctx, name)
	if err != nil {
		return "", err
	}
	return c.Options().Addr, nil
}

// claim makes s the home of name unless it has another; s.ctl is held.
func (b *Broker) claim(name string, s *shard) bool {
	if b.cluster == nil {
		return true
	}
	b.routes.mu.Lock()
	defer b.routes.mu.Unlock()
	if h := b.routes.homes[name]; h != nil {
		return h == s
	}
	b.routes.homes[name] = s
	return true
}

// unclaim forgets name's home if it is s; s.ctl is held.
func (b *Broker) unclaim(name string, s *shard) {
	if b.cluster == nil {
		return
	}
	b.routes.mu.Lock()
	defer b.routes.mu.Unlock()
	if b.routes.homes[name] == s {
		delete(b.routes.homes, name)
	}
}

// lockHome returns the shard holding name with its ctl locked, or nil if
// name is not subscribed (cluster mode).
func (b *Broker) lockHome(channel, name string) *shard {
	if b.cluster == nil {
		s := b.shards[shardOf(channel, len(b.shards))]
		s.ctl.Lock()
		return s
	}
	for {
		s := b.routes.home(name)
		if s == nil {
			return nil
		}
		s.ctl.Lock()
		if b.routes.home(name) == s {
			return s
		}
		s.ctl.Unlock() // moved meanwhile
	}
}

// topologyChanged asks go-redis to reload the slot map and rebalanceLoop
// to check every channel's home.
func (b *Broker) topologyChanged() {
	if b.cluster == nil {
		return
	}
	b.cluster.ReloadState(b.ctx)
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// onServerUnsubscribe handles a sunsubscribe: Redis pushes one when the
// channel's slot left this node (the end of a slot migration). Our own
// unsubscribes removed the channel from s.chans before sending, so those
// confirmations are ignored.
func (s *shard) onServerUnsubscribe(name string) {
	if s.b.cluster == nil {
		return
	}
	s.mu.Lock()
	_, ok := s.chans[name]
	if ok {
		s.orphans[name] = time.Now()
	}
	s.mu.Unlock()
	if ok {
		s.b.topologyChanged()
	}
}

// rebalanceLoop checks every channel's home each HealthCheck and whenever
// the topology changed. It is the only goroutine that moves channels, so
// its two-shard locking (source, then destination) cannot deadlock.
func (b *Broker) rebalanceLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.HealthCheck)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		case <-b.kick:
			// Give go-redis's lazy slot-map reload a moment.
			if !sleepCtx(b.ctx, 100*time.Millisecond) {
				return
			}
		}
		for b.rebalance() {
			if !sleepCtx(b.ctx, 100*time.Millisecond) {
				return
			}
		}
	}
}

// rebalance moves every channel whose slot owner is not its shard's node,
// resubscribes orphans whose owner did not change within orphanWait, and
// reports whether orphans are still waiting.
func (b *Broker) rebalance() (waiting bool) {
	for _, s := range b.allShards(false) {
		s.mu.Lock()
		names := make([]string, 0, len(s.chans))
		for name := range s.chans {
			names = append(names, name)
		}
		orphans := make(map[string]time.Time, len(s.orphans))
		for name, t := range s.orphans {
			orphans[name] = t
		}
		s.mu.Unlock()
		for _, name := range names {
			owner, err := b.ownerOf(b.ctx, name)
			if err != nil {
				continue
			}
			since, orphan := orphans[name]
			switch {
			case owner != s.addr:
				b.move(s, name, owner)
			case orphan && time.Since(since) >= orphanWait:
				s.resubscribe(name)
			case orphan:
				waiting = true
			}
		}
	}
	return waiting
}

// move makes name's home a shard of node owner and subscribes it there.
func (b *Broker) move(src *shard, name, owner string) {
	src.ctl.Lock()
	defer src.ctl.Unlock()
	rc := src.lookup(name)
	if rc == nil {
		return
	}
	dst, err := b.shardAt(owner, rc.channel)
	if err != nil {
		return
	}
	ps := src.drop(name)
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.HealthCheck)
	defer cancel()
	if ps != nil {
		_ = src.unsubscribeLocked(ctx, ps, name)
	}

	dst.ctl.Lock()
	defer dst.ctl.Unlock()
	dst.mu.Lock()
	if dst.closed {
		dst.mu.Unlock()
		return
	}
	dst.chans[name] = rc
	dst.mu.Unlock()
	b.routes.mu.Lock()
	b.routes.homes[name] = dst
	b.routes.mu.Unlock()
	b.stats.moves.Add(1)
	b.cfg.Logger.Info("redis cluster: channel moved", "channel", rc.channel, "from", src.addr, "to", owner)
	if err := dst.subscribeLocked(ctx, name); err != nil {
		b.cfg.Logger.Debug("pubsub ssubscribe write failed; will resubscribe on reconnect", "channel", rc.channel, "err", err)
	}
}

// resubscribe sends SSUBSCRIBE again for an orphan still owned by s.addr.
func (s *shard) resubscribe(name string) {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	s.mu.Lock()
	_, ok := s.chans[name]
	delete(s.orphans, name)
	s.mu.Unlock()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(s.b.ctx, s.b.cfg.HealthCheck)
	defer cancel()
	_ = s.subscribeLocked(ctx, name)
}

// runOnSlotOwner runs a script on the master of its key's slot, without
// go-redis's cluster retries: they resend a command after a connection
// error, and a publish that had reached Redis would be stored twice. A
// MOVED or ASK reply means the script did not run: it is sent again through
// go-redis's cluster routing, which follows redirections, and the channel
// homes are checked.
func (b *Broker) runOnSlotOwner(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	node, err := b.cluster.MasterForKey(ctx, keys[0])
	if err != nil {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd
	}
	cmd := runOn(ctx, node, s, keys, args...)
	var rerr redis.Error
	switch err := cmd.Err(); {
	case isRedirect(err):
		b.topologyChanged()
		cmd = runOn(ctx, b.cluster, s, keys, args...)
	case err != nil && !errors.As(err, &rerr):
		b.topologyChanged() // the node may be down: look for its successor
	}
	return cmd
}

func isRedirect(err error) bool {
	return redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK")
}

// publishBatchCluster sends one pipeline per master, concurrently. A
// message refused with NOSCRIPT or a redirection did not run and is sent
// again alone.
func (b *Broker) publishBatchCluster(ctx context.Context, ps []notify.Publication) ([]notify.ID, error) {
	type group struct {
		node *redis.Client
		idx  []int
	}
	groups := make(map[string]*group)
	for i, p := range ps {
		node, err := b.cluster.MasterForKey(ctx, b.streamKey(p.Channel))
		if err != nil {
			b.stats.errors.Add(1)
			return nil, notify.Unavailable("publish batch", err)
		}
		addr := node.Options().Addr
		if groups[addr] == nil {
			groups[addr] = &group{node: node}
		}
		groups[addr].idx = append(groups[addr].idx, i)
	}
	cmds := make([]*redis.Cmd, len(ps))
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Go(func() {
			pipe := g.node.Pipeline()
			for _, i := range g.idx {
				cmds[i] = b.publish.EvalSha(ctx, pipe, []string{b.streamKey(ps[i].Channel)}, b.publishArgs(ps[i])...)
			}
			_, _ = pipe.Exec(ctx)
		})
	}
	wg.Wait()
	ids := make([]notify.ID, 0, len(ps))
	for i, c := range cmds {
		if err := c.Err(); redis.HasErrorPrefix(err, "NOSCRIPT") || isRedirect(err) {
			c = b.run(ctx, b.publish, []string{b.streamKey(ps[i].Channel)}, b.publishArgs(ps[i])...)
		}
		s, err := c.Text()
		if err != nil {
			b.stats.errors.Add(1)
			return ids, notify.Unavailable("publish batch", err)
		}
		id, err := notify.ParseID(s)
		if err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}
