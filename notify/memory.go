package notify

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"
)

// MemoryConfig configures a MemoryBroker. Zero values are the defaults.
type MemoryConfig struct {
	// HistorySize is how many messages each channel retains. Default 1000.
	HistorySize int
	// HistoryTTL drops a channel's history after that long without a
	// publish. Default 24h.
	HistoryTTL time.Duration
	// MaxPayload bounds a message's data. Default DefaultMaxPayload.
	MaxPayload int
	// Presence: Interval batches each channel's joins and leaves; Lease
	// is unused (an instance cannot die apart from its broker here).
	Presence PresenceConfig

	now func() time.Time // for tests
}

// MemoryBroker is the embedded broker: a single instance, no Redis, the same
// promises within one process. It is safe for concurrent use; several hubs
// may share one MemoryBroker (they then behave like instances sharing Redis).
type MemoryBroker struct {
	cfg MemoryConfig

	mu       sync.RWMutex
	channels map[string]*memChannel // guarded by mu

	stop chan struct{}
	done chan struct{}
}

var (
	_ Broker   = (*MemoryBroker)(nil)
	_ Presence = (*MemoryBroker)(nil)
)

type memChannel struct {
	name string

	mu         sync.Mutex
	ring       []*Envelope // retained messages, oldest at ring[start]; guarded by mu
	start      int         // guarded by mu
	last       ID          // last ID assigned; guarded by mu
	maxDeleted ID          // highest ID evicted from ring; guarded by mu
	sinks      []Sink      // guarded by mu
	touched    time.Time   // last publish; guarded by mu
	presence   PresenceSet // guarded by mu; see memory_presence.go
}

// NewMemoryBroker returns a MemoryBroker. Close stops its expiry sweeper.
func NewMemoryBroker(cfg MemoryConfig) *MemoryBroker {
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = 1000
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = 24 * time.Hour
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	cfg.Presence = cfg.Presence.WithDefaults()
	b := &MemoryBroker{cfg: cfg, channels: make(map[string]*memChannel), stop: make(chan struct{}), done: make(chan struct{})}
	go b.sweepLoop()
	return b
}

// Close stops the broker's background work. It does not wait for
// subscribers; it is safe to call more than once.
func (b *MemoryBroker) Close() error {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
	return nil
}

// Publish implements Publisher.
func (b *MemoryBroker) Publish(ctx context.Context, p Publication) (ID, error) {
	if err := ctx.Err(); err != nil {
		return ID{}, err
	}
	p, err := p.Normalize(b.cfg.MaxPayload)
	if err != nil {
		return ID{}, err
	}
	return b.publish(p), nil
}

// PublishBatch implements Broker. The batch is validated whole first: an
// invalid message publishes nothing.
func (b *MemoryBroker) PublishBatch(ctx context.Context, ps []Publication) ([]ID, error) {
	ps, err := NormalizeBatch(ps, b.cfg.MaxPayload)
	if err != nil {
		return nil, err
	}
	ids := make([]ID, 0, len(ps))
	for _, p := range ps {
		if err := ctx.Err(); err != nil {
			return ids, err
		}
		ids = append(ids, b.publish(p))
	}
	return ids, nil
}

// publish stores and delivers p, which Normalize returned.
func (b *MemoryBroker) publish(p Publication) ID {
	c := b.channel(p.Channel, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := b.cfg.now()
	c.last = c.last.Next(uint64(now.UnixMilli()))
	m := NewMessage(p.Channel, c.last, p.Event, p.Data)
	c.appendLocked(m, b.cfg.HistorySize)
	c.touched = now
	// Delivering under c.mu keeps deliveries in ID order; Deliver never
	// blocks.
	for _, s := range c.sinks {
		s.Deliver(m)
	}
	return m.ID
}

func (c *memChannel) appendLocked(m *Envelope, size int) {
	if len(c.ring) < size {
		c.ring = append(c.ring, m)
		return
	}
	c.maxDeleted = c.ring[c.start].ID
	c.ring[c.start] = m
	c.start = (c.start + 1) % len(c.ring)
}

// Subscribe implements Broker. It never fails for a valid channel.
func (b *MemoryBroker) Subscribe(ctx context.Context, channel string, sink Sink) error {
	if err := ValidateChannel(channel); err != nil {
		return err
	}
	c := b.channel(channel, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.sinks, sink) {
		c.sinks = append(c.sinks, sink)
	}
	return nil
}

// Unsubscribe implements Broker.
func (b *MemoryBroker) Unsubscribe(ctx context.Context, channel string, sink Sink) error {
	c := b.channel(channel, false)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := slices.Index(c.sinks, sink); i >= 0 {
		c.sinks = slices.Delete(c.sinks, i, i+1)
	}
	return nil
}

// History implements Broker.
func (b *MemoryBroker) History(ctx context.Context, channel string, after ID, limit int) (History, error) {
	if err := ValidateChannel(channel); err != nil {
		return History{}, err
	}
	if limit < 0 {
		limit = 0
	}
	c := b.channel(channel, false)
	if c == nil {
		return History{Gap: !after.IsZero()}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last.IsZero() {
		return History{Gap: !after.IsZero()}, nil
	}
	if after.After(c.last) {
		return History{}, errorf(ErrUnknownPosition, "position %s is after the last message %s of channel %q", after, c.last, channel)
	}
	h := History{Gap: after.Compare(c.maxDeleted) < 0, Last: c.last}
	n := len(c.ring)
	// Binary search the ring (ordered by ID from start) for the first ID
	// after the position.
	first := sort.Search(n, func(i int) bool { return c.ring[(c.start+i)%n].ID.After(after) })
	for i := first; i < n && len(h.Messages) < limit; i++ {
		h.Messages = append(h.Messages, c.ring[(c.start+i)%n])
	}
	return h, nil
}

// Ping implements Broker: the memory broker is in the process, always
// reachable.
func (b *MemoryBroker) Ping(context.Context) error { return nil }

// AdvanceIDs implements Broker: the channel's next IDs come after past.
func (b *MemoryBroker) AdvanceIDs(ctx context.Context, channel string, past ID) error {
	if err := ValidateChannel(channel); err != nil {
		return err
	}
	c := b.channel(channel, true)
	c.mu.Lock()
	if past.After(c.last) {
		c.last = past
	}
	c.mu.Unlock()
	return nil
}

func (b *MemoryBroker) channel(name string, create bool) *memChannel {
	b.mu.RLock()
	c := b.channels[name]
	b.mu.RUnlock()
	if c != nil || !create {
		return c
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c = b.channels[name]; c == nil {
		c = &memChannel{name: name, touched: b.cfg.now()}
		b.channels[name] = c
	}
	return c
}

func (b *MemoryBroker) sweepLoop() {
	defer close(b.done)
	every := min(b.cfg.HistoryTTL/2, time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.sweep()
		}
	}
}

// sweep expires the history of channels without a publish for HistoryTTL,
// as a Redis stream key expires, and forgets those no sink listens to and
// nobody is present in.
func (b *MemoryBroker) sweep() {
	now := b.cfg.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for name, c := range b.channels {
		c.mu.Lock()
		if now.Sub(c.touched) >= b.cfg.HistoryTTL {
			c.ring, c.start, c.last, c.maxDeleted = nil, 0, ID{}, ID{}
			if len(c.sinks) == 0 && c.presence.Len() == 0 && !c.presence.Pending() {
				delete(b.channels, name)
			}
		}
		c.mu.Unlock()
	}
}
