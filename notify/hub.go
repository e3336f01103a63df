package notify

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// HubConfig configures a Hub. Zero values are the defaults.
type HubConfig struct {
	// QueueLength bounds each connection's outgoing queue (and the live
	// messages held per subscription while it resumes). A connection that
	// overflows it is closed with ErrLagged. Default 1024.
	QueueLength int
	// MaxChannels bounds the channels per connection. Default 256.
	MaxChannels int
	// MaxConnsPerUser bounds the connections of one user. Default 64;
	// negative means unlimited.
	MaxConnsPerUser int
	// HistoryPage is how many messages a resume reads per broker call.
	// Default 500.
	HistoryPage int
	// Linger keeps a channel's broker subscription this long after its last
	// local subscriber leaves, so that a quick resubscribe is free. Default
	// 2s; negative means none.
	Linger time.Duration
	// SubscribeTimeout bounds the broker subscription made for a channel's
	// first local subscriber. Default 10s.
	SubscribeTimeout time.Duration
	// Presence, if set, keeps the channels' members: subscriptions made
	// with SubscribeRequest.Presence join it and receive its presence
	// envelopes. Nil means presence is off: such a subscription fails with
	// ErrPresenceDisabled.
	Presence Presence
	// PresenceSnapshot is how many members a subscribed notice's presence
	// snapshot lists at most (the count is always exact). Default 100; at
	// most MaxPresencePage.
	PresenceSnapshot int
	// Logger receives broker unsubscribe failures; nil means silent.
	Logger *slog.Logger
}

func (cfg *HubConfig) setDefaults() {
	if cfg.QueueLength <= 0 {
		cfg.QueueLength = 1024
	}
	if cfg.MaxChannels <= 0 {
		cfg.MaxChannels = 256
	}
	if cfg.MaxConnsPerUser == 0 {
		cfg.MaxConnsPerUser = 64
	}
	if cfg.HistoryPage <= 0 {
		cfg.HistoryPage = 500
	}
	if cfg.Linger == 0 {
		cfg.Linger = 2 * time.Second
	} else if cfg.Linger < 0 {
		cfg.Linger = 0
	}
	if cfg.SubscribeTimeout <= 0 {
		cfg.SubscribeTimeout = 10 * time.Second
	}
	if cfg.PresenceSnapshot <= 0 {
		cfg.PresenceSnapshot = 100
	}
	cfg.PresenceSnapshot = min(cfg.PresenceSnapshot, MaxPresencePage)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

const (
	channelShards = 64
	userShards    = 16
)

// Hub is an instance's connection manager: it registers local connections,
// keeps one broker subscription per channel that has local subscribers, and
// fans each message the broker delivers out to the local subscribers'
// queues without ever blocking.
type Hub struct {
	broker Broker
	cfg    HubConfig
	sink   *hubSink

	channels [channelShards]channelShard
	users    [userShards]userShard
	closed   atomic.Bool
	stats    hubStats
}

type channelShard struct {
	mu       sync.RWMutex
	channels map[string]*channelState // guarded by mu
}

// channelState is a channel with local subscribers (or lingering after the
// last one left).
type channelState struct {
	name string
	// mu guards subs. Dispatch holds it for reading during one fan-out (one
	// lock per message, none per subscriber); subscribe and unsubscribe
	// hold it for writing for an O(1) append or swap-remove.
	mu   sync.RWMutex
	subs []*subscription // order is arbitrary; each knows its index

	presence presenceState // presence resets of the channel (presence_reset.go)

	ready chan struct{} // closed when the broker subscription is made or failed
	err   error         // the broker subscription's failure; written before ready closes

	// Guarded by the shard's mu:
	count     int // len(subs), readable under the shard's mu
	lingerGen int
	linger    *time.Timer
	leaving   chan struct{} // non-nil while the broker unsubscribe runs; closed after
}

type userShard struct {
	mu    sync.Mutex
	conns map[string]map[*Conn]struct{} // user → connections; guarded by mu
}

type hubStats struct {
	delivered atomic.Uint64
	dropped   [dropReasons]atomic.Uint64
}

// HubStats are a hub's counters and gauges.
type HubStats struct {
	Connections int    // open connections
	Channels    int    // channels with a broker subscription
	Delivered   uint64 // messages queued to subscribers, in total
	// Dropped counts the connections the server closed, by reason (index
	// DropReason; DropNone stays zero).
	Dropped [dropReasons]uint64
}

// Lagged is how many connections were closed for falling behind: their
// queue overflowed or a write to them timed out.
func (s HubStats) Lagged() uint64 {
	return s.Dropped[DropQueueOverflow] + s.Dropped[DropWriteTimeout]
}

// NewHub returns a hub delivering the messages of broker.
func NewHub(broker Broker, cfg HubConfig) *Hub {
	cfg.setDefaults()
	h := &Hub{broker: broker, cfg: cfg}
	h.sink = &hubSink{h}
	for i := range h.channels {
		h.channels[i].channels = make(map[string]*channelState)
	}
	for i := range h.users {
		h.users[i].conns = make(map[string]map[*Conn]struct{})
	}
	return h
}

// Broker returns the hub's broker, through which messages are published.
func (h *Hub) Broker() Broker { return h.broker }

// Presence returns the hub's presence (HubConfig.Presence), nil when
// presence is off.
func (h *Hub) Presence() Presence { return h.cfg.Presence }

// Connect registers a connection of user ("" for an anonymous connection).
// It does not subscribe the user's personal channel: the transport does, with
// the client's resume position. It fails with ErrTooManyConnections past
// MaxConnsPerUser and with ErrShutdown once the hub is closed.
func (h *Hub) Connect(user string, opts ConnOptions) (*Conn, error) {
	if user != "" {
		if err := ValidateUser(user); err != nil {
			return nil, err
		}
	}
	c := &Conn{hub: h, id: newConnID(), user: user, wake: opts.Wake, done: make(chan struct{})}
	us := &h.users[shardIndex(user, userShards)]
	us.mu.Lock()
	defer us.mu.Unlock()
	if h.closed.Load() {
		return nil, ErrShutdown
	}
	conns := us.conns[user]
	if user != "" && h.cfg.MaxConnsPerUser > 0 && len(conns) >= h.cfg.MaxConnsPerUser {
		return nil, errorf(ErrTooManyConnections, "user %q has %d connections; the limit is %d", user, len(conns), h.cfg.MaxConnsPerUser)
	}
	if conns == nil {
		conns = make(map[*Conn]struct{})
		us.conns[user] = conns
	}
	conns[c] = struct{}{}
	return c, nil
}

// UserConns returns the open connections of user.
func (h *Hub) UserConns(user string) []*Conn {
	us := &h.users[shardIndex(user, userShards)]
	us.mu.Lock()
	defer us.mu.Unlock()
	conns := make([]*Conn, 0, len(us.conns[user]))
	for c := range us.conns[user] {
		conns = append(conns, c)
	}
	return conns
}

// Conns returns every open connection.
func (h *Hub) Conns() []*Conn {
	var conns []*Conn
	for i := range h.users {
		us := &h.users[i]
		us.mu.Lock()
		for _, cs := range us.conns {
			for c := range cs {
				conns = append(conns, c)
			}
		}
		us.mu.Unlock()
	}
	return conns
}

// Stats returns the hub's current counters.
func (h *Hub) Stats() HubStats {
	st := HubStats{Delivered: h.stats.delivered.Load()}
	for r := range st.Dropped {
		st.Dropped[r] = h.stats.dropped[r].Load()
	}
	for i := range h.users {
		us := &h.users[i]
		us.mu.Lock()
		for _, conns := range us.conns {
			st.Connections += len(conns)
		}
		us.mu.Unlock()
	}
	for i := range h.channels {
		sh := &h.channels[i]
		sh.mu.RLock()
		st.Channels += len(sh.channels)
		sh.mu.RUnlock()
	}
	return st
}

// Close closes every connection with ErrShutdown and drops the hub's broker
// subscriptions. The broker itself stays open: it is the caller's.
func (h *Hub) Close() error {
	h.closed.Store(true)
	for _, c := range h.Conns() {
		c.Close(ErrShutdown)
	}
	for i := range h.channels {
		sh := &h.channels[i]
		sh.mu.Lock()
		var names []string
		for name, cs := range sh.channels {
			if cs.linger != nil {
				cs.linger.Stop()
			}
			cs.lingerGen++
			if cs.leaving == nil {
				names = append(names, name)
			}
		}
		clear(sh.channels)
		sh.mu.Unlock()
		for _, name := range names {
			h.unsubscribeBroker(name)
		}
	}
	return nil
}

// attach registers s with its channel, subscribing the broker for the
// channel's first local subscriber, and returns once the broker subscription
// is live.
func (h *Hub) attach(ctx context.Context, s *subscription) error {
	sh := h.channelShard(s.channel)
	for {
		sh.mu.Lock()
		if h.closed.Load() {
			sh.mu.Unlock()
			return ErrShutdown
		}
		cs := sh.channels[s.channel]
		if cs != nil && cs.leaving != nil {
			// The broker unsubscribe must finish first, or it could
			// undo the subscribe we are about to make.
			wait := cs.leaving
			sh.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		first := cs == nil
		if first {
			cs = &channelState{name: s.channel, ready: make(chan struct{})}
			sh.channels[s.channel] = cs
		}
		if cs.linger != nil {
			cs.linger.Stop()
			cs.linger = nil
		}
		cs.lingerGen++
		cs.addLocked(s)
		sh.mu.Unlock()

		if first {
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.SubscribeTimeout)
			cs.err = h.broker.Subscribe(bctx, s.channel, h.sink)
			cancel()
			close(cs.ready)
			if cs.err != nil {
				h.dropFailed(cs)
				return cs.err
			}
			h.lingerIfEmpty(cs)
			return nil
		}
		select {
		case <-cs.ready:
		case <-ctx.Done():
			h.detach(s)
			return ctx.Err()
		}
		return cs.err
	}
}

// detach removes s from its channel, and from the channel's members if it
// joined them; the channel's broker subscription goes after Linger if no
// local subscriber remains.
func (h *Hub) detach(s *subscription) {
	h.remove(s)
	s.leave(h.cfg.Presence) // outside the shard lock: Leave may take the presence's locks
}

func (h *Hub) remove(s *subscription) {
	sh := h.channelShard(s.channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cs := sh.channels[s.channel]
	if cs == nil || !cs.removeLocked(s) {
		return
	}
	select {
	case <-cs.ready:
		if cs.err == nil {
			h.scheduleLingerLocked(sh, cs)
		}
	default:
		// The first subscriber's attach is still subscribing the broker;
		// it schedules the linger when it finishes.
	}
}

func (h *Hub) lingerIfEmpty(cs *channelState) {
	sh := h.channelShard(cs.name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.channels[cs.name] == cs {
		h.scheduleLingerLocked(sh, cs)
	}
}

func (h *Hub) scheduleLingerLocked(sh *channelShard, cs *channelState) {
	if cs.count > 0 || cs.leaving != nil || cs.linger != nil {
		return
	}
	cs.lingerGen++
	gen := cs.lingerGen
	cs.linger = time.AfterFunc(h.cfg.Linger, func() { h.expire(sh, cs, gen) })
}

// expire drops the broker subscription of a channel whose linger ran out.
func (h *Hub) expire(sh *channelShard, cs *channelState, gen int) {
	sh.mu.Lock()
	if sh.channels[cs.name] != cs || cs.lingerGen != gen || cs.count > 0 || cs.leaving != nil {
		sh.mu.Unlock()
		return
	}
	cs.linger = nil
	cs.leaving = make(chan struct{})
	sh.mu.Unlock()

	h.unsubscribeBroker(cs.name)

	sh.mu.Lock()
	if sh.channels[cs.name] == cs {
		delete(sh.channels, cs.name)
	}
	close(cs.leaving)
	sh.mu.Unlock()
}

func (h *Hub) unsubscribeBroker(channel string) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
	defer cancel()
	if err := h.broker.Unsubscribe(ctx, channel, h.sink); err != nil {
		h.cfg.Logger.Warn("broker unsubscribe failed", "channel", channel, "err", err)
	}
}

// dropFailed forgets a channel whose broker subscription failed; its waiting
// subscribers see cs.err.
func (h *Hub) dropFailed(cs *channelState) {
	sh := h.channelShard(cs.name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.channels[cs.name] == cs {
		delete(sh.channels, cs.name)
	}
}

// afterClose detaches a closed connection's subscriptions and unregisters
// it.
func (h *Hub) afterClose(c *Conn, subs []*subscription) {
	for _, s := range subs {
		h.detach(s)
	}
	us := &h.users[shardIndex(c.user, userShards)]
	us.mu.Lock()
	if conns := us.conns[c.user]; conns != nil {
		delete(conns, c)
		if len(conns) == 0 {
			delete(us.conns, c.user)
		}
	}
	us.mu.Unlock()
	c.signal()
}

// dispatch queues m on every local subscriber of its channel. It takes no
// lock per subscriber beyond the subscriber's own queue lock, allocates
// nothing, and never blocks.
func (h *Hub) dispatch(m *Envelope) {
	sh := h.channelShard(m.Channel)
	sh.mu.RLock()
	cs := sh.channels[m.Channel]
	sh.mu.RUnlock()
	if cs == nil {
		return
	}
	cs.mu.RLock()
	for _, s := range cs.subs {
		s.conn.deliver(s, m)
	}
	n := len(cs.subs)
	cs.mu.RUnlock()
	h.stats.delivered.Add(uint64(n))
}

// dispatchPresence queues a presence envelope on the local subscribers of
// its channel that asked for presence. Like dispatch, it never blocks. A
// reset starts a new snapshot (presence_reset.go); diffs that come while it
// is read are held and follow it.
func (h *Hub) dispatchPresence(p *Envelope) {
	cs := h.channelState(p.Channel)
	if cs == nil {
		return
	}
	ps := &cs.presence
	ps.mu.Lock()
	defer ps.mu.Unlock()
	switch {
	case p.reset:
		h.resetPresenceLocked(cs, p)
	case ps.resetting:
		ps.holdLocked(p)
	default:
		cs.deliverPresence(p)
	}
}

// deliverPresence queues p on cs's presence subscriptions.
func (cs *channelState) deliverPresence(p *Envelope) {
	cs.mu.RLock()
	defer cs.mu.RUnlock()
	for _, s := range cs.subs {
		if s.presence {
			s.conn.deliverPresence(s, p)
		}
	}
}

func (h *Hub) lost(channel string) {
	cs := h.channelState(channel)
	if cs == nil {
		return
	}
	cs.mu.RLock()
	defer cs.mu.RUnlock()
	for _, s := range cs.subs {
		s.conn.lost(s)
	}
}

// channelState returns the state of channel, nil if it has none.
func (h *Hub) channelState(channel string) *channelState {
	sh := h.channelShard(channel)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.channels[channel]
}

func (cs *channelState) addLocked(s *subscription) {
	cs.mu.Lock()
	s.index = len(cs.subs)
	cs.subs = append(cs.subs, s)
	cs.mu.Unlock()
	cs.count++
}

func (cs *channelState) removeLocked(s *subscription) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	i := s.index
	if i < 0 || i >= len(cs.subs) || cs.subs[i] != s {
		return false
	}
	last := len(cs.subs) - 1
	cs.subs[i] = cs.subs[last]
	cs.subs[i].index = i
	cs.subs[last] = nil
	cs.subs = cs.subs[:last]
	s.index = -1
	cs.count--
	if cap(cs.subs) > 64 && len(cs.subs) < cap(cs.subs)/4 {
		cs.subs = append([]*subscription(nil), cs.subs...) // give memory back
	}
	return true
}

func (h *Hub) channelShard(channel string) *channelShard {
	return &h.channels[shardIndex(channel, channelShards)]
}

// shardIndex hashes s with FNV-1a.
func shardIndex(s string, n int) int {
	var x uint32 = 2166136261
	for i := 0; i < len(s); i++ {
		x ^= uint32(s[i])
		x *= 16777619
	}
	return int(x % uint32(n))
}

// hubSink is the hub as the broker sees it.
type hubSink struct{ h *Hub }

// Deliver routes m: presence envelopes (which carry no ID and move no
// position) go to the presence subscribers only; messages take the
// dispatch path untouched.
func (s *hubSink) Deliver(m *Envelope) {
	if m.Type == TypePresence {
		s.h.dispatchPresence(m)
		return
	}
	s.h.dispatch(m)
}
func (s *hubSink) Lost(channel string) { s.h.lost(channel) }
