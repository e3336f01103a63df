package redisbroker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/redis/go-redis/v9"
)

const (
	// catchUpPage is how many stream entries one catch-up call reads.
	catchUpPage = 512
	// maxPending bounds the live messages held per channel during a
	// catch-up; past it they are dropped and re-read from the stream.
	maxPending = 4096
	// maxConcurrentCatchUps bounds the catch-ups running at once, so that
	// a reconnect of many channels does not exhaust the connection pool.
	maxConcurrentCatchUps = 16
)

type brokerStats struct {
	errors     atomic.Uint64
	reconnects atomic.Uint64
	caughtUp   atomic.Uint64
	lost       atomic.Uint64
	moves      atomic.Uint64
	malformed  atomic.Uint64
}

// shard is one Pub/Sub connection and the channels subscribed on it. Its
// read loop only parses and hands messages to sinks (which never block), so
// it never stalls behind a slow consumer.
type shard struct {
	b    *Broker
	addr string // cluster mode: the master node its channels live on

	// ctl serializes the commands that change the subscription set
	// (subscribe, unsubscribe, replacing the connection), so that they reach
	// Redis in the order the map changes. The read loop never takes it.
	ctl sync.Mutex

	mu     sync.Mutex
	ps     *redis.PubSub     // guarded by mu; replaced when it stops answering
	chans  map[string]*rchan // Pub/Sub channel name → state; guarded by mu
	closed bool              // guarded by mu
	// Cluster mode. go-redis connects a PubSub, and reconnects it, to the
	// node of its first channel's slot: pinned reports that ps was created
	// with a channel of addr. orphans are channels the server unsubscribed
	// (their slot moved), since when. Both guarded by mu.
	pinned  bool
	orphans map[string]time.Time

	lastHeard atomic.Int64 // unix nanos of the last reply read; owned by readLoop
	canary    canary
}

// rchan is one subscribed channel.
type rchan struct {
	channel   string
	confirmed chan struct{} // closed at the first subscribe confirmation

	mu       sync.Mutex // held while delivering, which keeps deliveries in order
	sinks    []notify.Sink
	last     notify.ID // last ID delivered (or the stream's end when subscribing)
	catching bool      // a catch-up runs; live messages go to pending
	gen      int       // counts confirmations; a catch-up of an older one stops
	pending  []*notify.Envelope
	overflow bool // pending overflowed: drop it and read the stream again
	removed  bool
}

func newShard(b *Broker, addr string) *shard {
	s := &shard{b: b, addr: addr, chans: make(map[string]*rchan), orphans: make(map[string]time.Time)}
	if b.cluster != nil {
		s.ps = b.cluster.SSubscribe(b.ctx)
	} else {
		s.ps = b.rdb.Subscribe(b.ctx)
	}
	s.lastHeard.Store(time.Now().UnixNano())
	return s
}

// startShard starts s's goroutines.
func (b *Broker) startShard(s *shard) {
	if b.cluster == nil {
		b.shards = append(b.shards, s)
	}
	b.wg.Add(2)
	go s.readLoop()
	go s.healthLoop()
	b.startCanary(s)
}

// subscribeLocked sends SUBSCRIBE, or on a cluster SSUBSCRIBE, for names,
// which are in s.chans. s.ctl must be held. An unpinned cluster shard gets
// a new PubSub created with names, so that go-redis puts it, and every
// reconnection of it, on the node of their slot.
func (s *shard) subscribeLocked(ctx context.Context, names ...string) error {
	if s.b.cluster == nil {
		return s.current().Subscribe(ctx, names...)
	}
	s.mu.Lock()
	ps, pinned := s.ps, s.pinned
	s.mu.Unlock()
	if pinned {
		return ps.SSubscribe(ctx, names...)
	}
	nps := s.b.cluster.SSubscribe(s.b.ctx, names...)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nps.Close()
	}
	old := s.ps
	s.ps, s.pinned = nps, true
	s.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// unsubscribeLocked sends UNSUBSCRIBE (SUNSUBSCRIBE) for a channel already
// removed from s.chans. s.ctl must be held. go-redis forgets the channel
// even if the write fails, so a reconnect does not resubscribe it.
func (s *shard) unsubscribeLocked(ctx context.Context, ps *redis.PubSub, name string) error {
	if s.b.cluster == nil {
		return ps.Unsubscribe(ctx, name)
	}
	return ps.SUnsubscribe(ctx, name)
}

func (s *shard) current() *redis.PubSub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ps
}

func (s *shard) lookup(name string) *rchan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chans[name]
}

func (s *shard) close() {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	s.mu.Lock()
	ps := s.ps
	s.ps, s.closed = nil, true
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
}

// Subscribe implements notify.Broker: it returns once Redis confirmed the
// subscription.
func (b *Broker) Subscribe(ctx context.Context, channel string, sink notify.Sink) error {
	if err := notify.ValidateChannel(channel); err != nil {
		return err
	}
	name := b.pubsubChannel(channel)
	var (
		last  notify.ID
		known bool
	)
	for {
		s, err := b.shardFor(ctx, channel, name)
		if err != nil {
			return err
		}
		if s.lookup(name) == nil && !known {
			// The stream's end before SUBSCRIBE: the first catch-up
			// starts there, covering what is published until Redis
			// confirms.
			var err error
			if last, err = b.lastID(ctx, channel); err != nil {
				return err
			}
			known = true
		}
		s.ctl.Lock()
		rc := s.lookup(name)
		if rc == nil && !known {
			s.ctl.Unlock()
			continue
		}
		if rc == nil && !b.claim(name, s) {
			s.ctl.Unlock() // subscribed meanwhile on another shard
			continue
		}
		if rc == nil {
			rc = &rchan{channel: channel, confirmed: make(chan struct{}), last: last, sinks: []notify.Sink{sink}}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				b.unclaim(name, s)
				s.ctl.Unlock()
				return notify.Unavailable("subscribe", errors.New("broker closed"))
			}
			s.chans[name] = rc
			s.mu.Unlock()
			// A failed write is retried by go-redis's reconnect, which
			// resubscribes every recorded channel.
			if err := s.subscribeLocked(ctx, name); err != nil {
				b.cfg.Logger.Debug("pubsub subscribe write failed; will resubscribe on reconnect", "channel", channel, "err", err)
			}
		} else {
			rc.mu.Lock()
			if !slices.Contains(rc.sinks, sink) {
				rc.sinks = append(rc.sinks, sink)
			}
			rc.mu.Unlock()
		}
		s.ctl.Unlock()
		select {
		case <-rc.confirmed:
			return nil
		case <-ctx.Done():
			_ = b.Unsubscribe(context.WithoutCancel(ctx), channel, sink)
			return notify.Unavailable("subscribe", ctx.Err())
		}
	}
}

// Unsubscribe implements notify.Broker.
func (b *Broker) Unsubscribe(ctx context.Context, channel string, sink notify.Sink) error {
	name := b.pubsubChannel(channel)
	s := b.lockHome(channel, name)
	if s == nil {
		return nil
	}
	defer s.ctl.Unlock()
	rc := s.lookup(name)
	if rc == nil {
		return nil
	}
	rc.mu.Lock()
	if i := slices.Index(rc.sinks, sink); i >= 0 {
		rc.sinks = slices.Delete(rc.sinks, i, i+1)
	}
	empty := len(rc.sinks) == 0
	if empty {
		rc.removed, rc.pending = true, nil
	}
	rc.mu.Unlock()
	if !empty {
		return nil
	}
	ps := s.drop(name)
	b.unclaim(name, s)
	if ps == nil {
		return nil
	}
	if err := s.unsubscribeLocked(ctx, ps, name); err != nil {
		return notify.Unavailable("unsubscribe", err)
	}
	return nil
}

// readLoop reads the shard's Pub/Sub connection until the broker closes.
// go-redis reconnects and resubscribes on the next Receive after an error;
// the confirmations that follow start catch-ups.
func (s *shard) readLoop() {
	defer s.b.wg.Done()
	failures := 0
	for {
		ps := s.current()
		if ps == nil {
			return
		}
		msg, err := ps.Receive(s.b.ctx)
		if err != nil {
			if s.b.ctx.Err() != nil {
				return
			}
			if ps != s.current() {
				continue // replaced by a pinned or fresh PubSub
			}
			s.b.topologyChanged()
			failures++
			if !sleepCtx(s.b.ctx, backoff(failures)) {
				return
			}
			continue
		}
		failures = 0
		s.lastHeard.Store(time.Now().UnixNano())
		switch m := msg.(type) {
		case *redis.Message:
			s.onMessage(m)
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe", "ssubscribe":
				s.onConfirm(m.Channel)
			case "sunsubscribe":
				s.onServerUnsubscribe(m.Channel)
			}
		}
	}
}

// healthLoop pings an idle connection and replaces one that stopped
// answering (a paused or unreachable Redis keeps TCP open but silent).
func (s *shard) healthLoop() {
	defer s.b.wg.Done()
	every := s.b.cfg.HealthCheck
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.b.ctx.Done():
			return
		case <-t.C:
		}
		idle := time.Since(time.Unix(0, s.lastHeard.Load()))
		switch {
		case idle >= 3*every:
			s.replace()
		case idle >= every:
			if ps := s.current(); ps != nil {
				ctx, cancel := context.WithTimeout(s.b.ctx, every)
				_ = ps.Ping(ctx) // the PONG arrives through Receive
				cancel()
			}
		}
	}
}

// replace swaps the shard's Pub/Sub connection for a new one subscribed to
// the same channels. Their confirmations start catch-ups.
func (s *shard) replace() {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	names := make([]string, 0, len(s.chans)+1)
	for name := range s.chans {
		names = append(names, name)
	}
	if c := s.canaryName(); c != "" {
		names = append(names, c)
	}
	if s.b.cluster != nil {
		// subscribeLocked pins a new PubSub to the channels' node.
		s.pinned = false
		s.mu.Unlock()
		s.lastHeard.Store(time.Now().UnixNano())
		s.b.cfg.Logger.Warn("redis pubsub connection unresponsive; replacing it", "node", s.addr, "channels", len(names))
		s.b.topologyChanged()
		if len(names) > 0 {
			ctx, cancel := context.WithTimeout(s.b.ctx, s.b.cfg.HealthCheck)
			_ = s.subscribeLocked(ctx, names...)
			cancel()
		}
		return
	}
	old := s.ps
	s.ps = s.b.rdb.Subscribe(s.b.ctx)
	ps := s.ps
	s.mu.Unlock()
	s.lastHeard.Store(time.Now().UnixNano())
	s.b.cfg.Logger.Warn("redis pubsub connection unresponsive; replacing it", "channels", len(names))
	_ = old.Close()
	if len(names) > 0 {
		ctx, cancel := context.WithTimeout(s.b.ctx, s.b.cfg.HealthCheck)
		if err := ps.Subscribe(ctx, names...); err != nil {
			s.b.cfg.Logger.Debug("pubsub resubscribe write failed; will retry on reconnect", "err", err)
		}
		cancel()
	}
}

// drop removes channel name from the shard and returns the shard's Pub/Sub
// connection (nil if it has none), to unsubscribe it there.
func (s *shard) drop(name string) *redis.PubSub {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.chans, name)
	delete(s.orphans, name)
	// The canary, subscribed only while s holds channels of its node,
	// keeps the connection on that node.
	s.pinned = s.pinned && (len(s.chans) > 0 || s.canaryName() != "")
	return s.ps
}

func (s *shard) onMessage(m *redis.Message) {
	if s.heardCanary(m) {
		return
	}
	rc := s.lookup(m.Channel)
	if rc == nil {
		return
	}
	if strings.HasPrefix(m.Payload, presencePrefix) {
		s.deliverPresence(rc, m.Payload)
		return
	}
	env, err := parsePayload(rc.channel, m.Payload)
	if err != nil {
		s.b.stats.malformed.Add(1)
		s.b.malformedLog.log(s.b.cfg.Logger, rc.channel, err)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case rc.removed:
	case rc.catching:
		if len(rc.pending) < maxPending {
			rc.pending = append(rc.pending, env)
		} else {
			rc.overflow = true
		}
	default:
		rc.deliverLocked(env)
	}
}

// onConfirm starts a catch-up for a channel Redis (re)confirmed: messages
// published while it was not subscribed are read from its stream.
func (s *shard) onConfirm(name string) {
	rc := s.lookup(name)
	if rc == nil {
		return
	}
	rc.mu.Lock()
	select {
	case <-rc.confirmed:
		s.b.stats.reconnects.Add(1)
		s.b.presenceReset(rc)
	default:
		close(rc.confirmed)
	}
	rc.gen++
	gen := rc.gen
	rc.catching, rc.pending, rc.overflow = true, nil, false
	rc.mu.Unlock()
	s.b.wg.Add(1)
	go s.b.catchUp(rc, gen)
}

// catchUp delivers what rc's stream holds after rc.last, then the live
// messages held meanwhile, and returns rc to live delivery. Every message
// published after the confirmation is either in the stream when a read runs
// or in pending, so none is missed; rc.last drops duplicates.
func (b *Broker) catchUp(rc *rchan, gen int) {
	defer b.wg.Done()
	select {
	case b.catchUpSlots <- struct{}{}:
		defer func() { <-b.catchUpSlots }()
	case <-b.ctx.Done():
		return
	}
	for failures := 0; ; {
		rc.mu.Lock()
		if rc.gen != gen || rc.removed {
			rc.mu.Unlock()
			return
		}
		after := rc.last
		rc.mu.Unlock()

		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		h, err := b.History(ctx, rc.channel, after, catchUpPage)
		cancel()
		unknown := errors.Is(err, notify.ErrUnknownPosition)
		if unknown {
			// The stream ends before our position: move its IDs past
			// it first, so that no message published from now on gets
			// an ID our subscribers would drop as already seen.
			ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
			if aerr := b.AdvanceIDs(ctx, rc.channel, after); aerr != nil {
				err, unknown = aerr, false // retried below
			}
			cancel()
		}
		if err != nil && !unknown {
			failures++
			if !sleepCtx(b.ctx, backoff(failures)) {
				return
			}
			continue
		}
		if rc.caughtUp(b, gen, after, h, unknown) {
			return
		}
	}
}

// caughtUp applies one page of catch-up and reports whether the catch-up is
// complete (or superseded).
func (rc *rchan) caughtUp(b *Broker, gen int, after notify.ID, h notify.History, unknown bool) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.gen != gen || rc.removed {
		return true
	}
	if rc.last != after {
		return false // cannot happen while catching; read again to be safe
	}
	if unknown {
		// The stream ended before our position: Redis lost writes we
		// delivered (a replica promoted before it had them, or a restart
		// without them). catchUp has moved the stream's IDs past our
		// position, so new messages flow on after it. Keep the position:
		// rewinding would deliver again what the stream still holds. A
		// message published before the move with an ID at or before ours
		// (a promoted replica's clock behind the old master's) cannot be
		// told from one we saw: report a gap.
		h.Gap = true
	}
	if h.Gap {
		b.stats.lost.Add(1)
		for _, sk := range rc.sinks {
			sk.Lost(rc.channel)
		}
	}
	for _, m := range h.Messages {
		if rc.deliverLocked(m) {
			b.stats.caughtUp.Add(1)
		}
	}
	if len(h.Messages) == catchUpPage {
		return false
	}
	if rc.overflow {
		rc.overflow, rc.pending = false, nil
		return false
	}
	for _, m := range rc.pending {
		rc.deliverLocked(m)
	}
	rc.pending, rc.catching = nil, false
	return true
}

// deliverLocked hands m to the sinks unless it is not newer than the last
// delivered message.
func (rc *rchan) deliverLocked(m *notify.Envelope) bool {
	if !m.ID.After(rc.last) {
		return false
	}
	rc.last = m.ID
	for _, sk := range rc.sinks {
		sk.Deliver(m)
	}
	return true
}

func backoff(failures int) time.Duration {
	return min(time.Duration(failures)*50*time.Millisecond, time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
