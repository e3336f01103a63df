package notify

import (
	"context"
	"time"
)

// Join implements Presence: the change is applied, and announced, at the
// channel's next flush, at most PresenceConfig.Interval later.
func (b *MemoryBroker) Join(channel string, m Member) { b.queuePresence(channel, m, true) }

// Leave implements Presence, like Join.
func (b *MemoryBroker) Leave(channel string, m Member) { b.queuePresence(channel, m, false) }

// queuePresence queues a change of channel's members. The first change of
// a batch arms a timer that flushes the batch; an idle channel has no timer
// and no goroutine.
func (b *MemoryBroker) queuePresence(channel string, m Member, join bool) {
	if ValidateChannel(channel) != nil || ValidateMember(m) != nil {
		return
	}
	c := b.channel(channel, true)
	c.mu.Lock()
	first := c.presence.Queue(m, join)
	c.mu.Unlock()
	if first {
		time.AfterFunc(b.cfg.Presence.Interval, func() { b.flushPresence(c) })
	}
}

// flushPresence applies c's queued changes and delivers their net effect to
// every sink of the channel: the sinks of every hub sharing the broker.
func (b *MemoryBroker) flushPresence(c *memChannel) {
	c.mu.Lock()
	defer c.mu.Unlock()
	joins, leaves := c.presence.Flush()
	if len(joins)+len(leaves) == 0 {
		return
	}
	// Under c.mu, like messages: one goroutine at a time delivers a
	// channel's envelopes, and Deliver never blocks.
	for _, d := range SplitPresence(PresenceDiff{Channel: c.name, Count: c.presence.Len(), Joins: joins, Leaves: leaves}) {
		env := NewPresence(d)
		for _, s := range c.sinks {
			s.Deliver(env)
		}
	}
}

// Members implements Presence. The cursor is an offset into the channel's
// member list: a stable list is paged exactly once.
func (b *MemoryBroker) Members(ctx context.Context, channel string, limit int, cursor string) (PresencePage, error) {
	if err := ValidateChannel(channel); err != nil {
		return PresencePage{}, err
	}
	if err := ctx.Err(); err != nil {
		return PresencePage{}, err
	}
	c := b.channel(channel, false)
	if c == nil {
		_, _, err := (&PresenceSet{}).Page(0, cursor) // the cursor is checked all the same
		return PresencePage{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ms, next, err := c.presence.Page(PresenceLimit(limit), cursor)
	if err != nil {
		return PresencePage{}, err
	}
	return PresencePage{Count: c.presence.Len(), Members: ms, Next: next}, nil
}
