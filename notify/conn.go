package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"sync"
	"time"
)

// maxClockSkew is how far in the future of this server's clock a resume
// position may be and still be taken for one the broker lost rather than
// an invalid one (broker clocks differ from ours by this much at most).
const maxClockSkew = time.Minute

// ConnOptions configures a connection made by Hub.Connect.
type ConnOptions struct {
	// Wake is called each time the queue goes from empty to non-empty, and
	// when the connection closes: the connection's writer then drains it.
	// It runs on the dispatching goroutine: it must not block nor call
	// back into the Conn (start or nudge the writer, nothing more). A
	// connection without Wake is drained by polling (tests).
	Wake func()
}

// Conn is one client connection registered with a hub: its subscriptions and
// its bounded outgoing queue. The transport that owns it reads commands,
// calls Subscribe/Unsubscribe/Send, and runs a writer that Wake starts and
// that writes what Drain returns. It must call Close when the connection
// ends.
//
// All methods are safe for concurrent use.
type Conn struct {
	hub  *Hub
	id   string // immutable; see ID
	user string
	wake func()        // immutable; may be nil
	done chan struct{} // closed by closeLocked

	mu        sync.Mutex
	q         ring            // guarded by mu
	subs      []*subscription // in no order; guarded by mu (see find)
	closed    bool            // guarded by mu
	err       error           // why it closed; guarded by mu
	spaceWait chan struct{}   // closed when Drain makes room; guarded by mu
}

// subscription is one channel of one connection.
type subscription struct {
	conn    *Conn
	channel string
	index   int // position in its channelState.subs; guarded by that state's mu

	// Guarded by conn.mu:
	buffering bool        // set until its resume is done; live messages go to pending
	pending   []*Envelope // live messages held while buffering
	last      ID          // last message ID queued for this subscription
	removed   bool        // unsubscribed or closed; deliveries are dropped
	lost      bool        // the broker lost messages while buffering

	presence bool // made with SubscribeRequest.Presence; immutable once attached
	// pmu orders the subscription's Join and Leave: a Close racing with
	// Subscribe must not leave a member behind (Leave before Join). It is
	// never taken with conn.mu or a hub lock held.
	pmu    sync.Mutex
	joined bool // Presence.Join called; guarded by pmu
	left   bool // Presence.Leave called or no longer allowed; guarded by pmu
}

// newConnID returns a random connection ID: 16 bytes from crypto/rand in
// hex, unique across instances without coordination.
func newConnID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand's contract since Go 1.24)
	return hex.EncodeToString(b[:])
}

// join makes s's connection a member of s's channel, unless s left already.
func (s *subscription) join(p Presence) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if !s.left && !s.joined {
		p.Join(s.channel, s.member())
		s.joined = true
	}
}

// leave removes s's connection from s's channel's members if it joined, and
// forbids a later join. It is idempotent.
func (s *subscription) leave(p Presence) {
	if !s.presence {
		return
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.joined && !s.left {
		p.Leave(s.channel, s.member())
	}
	s.left = true
}

func (s *subscription) member() Member { return Member{User: s.conn.user, Conn: s.conn.id} }

// ID returns the connection's ID, random and unique across instances: its
// Member.Conn in presence.
func (c *Conn) ID() string { return c.id }

// User returns the user the connection was made for ("" if anonymous).
func (c *Conn) User() string { return c.user }

// Done is closed when the connection is closed, by Close or by the hub (a
// lagging connection, a hub shutdown).
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Channels returns the channels the connection is subscribed to, sorted.
func (c *Conn) Channels() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	chans := make([]string, 0, len(c.subs))
	for _, s := range c.subs {
		chans = append(chans, s.channel)
	}
	slices.Sort(chans)
	return chans
}

// Drain appends everything queued to dst, oldest first, and returns it. A
// writer calls it when woken and writes the whole batch at once.
func (c *Conn) Drain(dst []*Envelope) []*Envelope {
	c.mu.Lock()
	dst = c.q.popAll(dst)
	if c.spaceWait != nil {
		close(c.spaceWait)
		c.spaceWait = nil
	}
	c.mu.Unlock()
	return dst
}

// Send queues a notice (a pong, an ack, an error) behind everything already
// queued, waiting for room while the queue is full. It fails once the
// connection is closed or ctx is done.
func (c *Conn) Send(ctx context.Context, e *Envelope) error {
	return c.enqueueWait(ctx, e)
}

// SubscribeRequest asks to subscribe a connection to a channel.
type SubscribeRequest struct {
	Channel string
	// Since is the position to resume after: the last message ID the client
	// saw on the channel. Empty means live messages only; "0-0" means
	// everything retained.
	Since string
	// Ref is echoed in the subscribed notice.
	Ref string
	// Presence makes the subscription a member of the channel (Member
	// {User, Conn.ID}) until it ends, puts a snapshot of the members in
	// the subscribed notice, and delivers the channel's presence
	// envelopes. It needs HubConfig.Presence (else ErrPresenceDisabled);
	// access control is the caller's, as for the channel.
	Presence bool
}

// Subscribe subscribes the connection to a channel. On success it has queued
// a subscribed notice whose ID is the position the subscription starts
// after (the given one when resuming, else the channel's last ID); then, when
// resuming, a gap notice if messages after
// the position are no longer retained, every retained message after the
// position in order; then live messages, with nothing lost or repeated at the
// seam. Access control is the caller's.
//
// With req.Presence the subscription joins the channel's members once it is
// registered, the subscribed notice carries a snapshot of the members read
// after that (Envelope.Presence: AppendPresencePage of up to
// HubConfig.PresenceSnapshot members and the count), and the presence
// envelopes delivered since the registration follow it with the live
// messages, in delivery order. The snapshot and the diffs converge: a
// member's last change before the snapshot was read is in the snapshot, and
// every change written after the registration is delivered as a diff after
// the notice; joins and leaves are set operations keyed by Member.Conn, so
// a diff the snapshot already reflects changes nothing when applied again,
// and a client that applies the diffs in order on top of the snapshot ends
// with the channel's members (and, from each diff, its count).
//
// Subscribe blocks while it replays history into a full queue; the
// connection's writer must keep draining meanwhile.
func (c *Conn) Subscribe(ctx context.Context, req SubscribeRequest) error {
	if err := ValidateChannel(req.Channel); err != nil {
		return err
	}
	h := c.hub
	if req.Presence && h.cfg.Presence == nil {
		return errorf(ErrPresenceDisabled, "presence is not enabled on this server (channel %q)", truncate(req.Channel))
	}
	var since ID
	resume := req.Since != ""
	if resume {
		var err error
		if since, err = ParseID(req.Since); err != nil {
			return err
		}
	}
	s := &subscription{conn: c, channel: req.Channel, buffering: true, presence: req.Presence}
	if err := c.addSubscription(s); err != nil {
		return err
	}
	if err := h.attach(ctx, s); err != nil {
		c.forget(s)
		return err
	}
	if s.presence {
		s.join(h.cfg.Presence)
	}
	// Registered and buffering: every message published from here on is in
	// s.pending, and everything before is in history. A live subscription
	// starts after the channel's last ID, which the subscribed notice
	// reports: a client that disconnects before any message arrives
	// resumes from there and misses nothing.
	limit := h.cfg.HistoryPage
	if !resume {
		limit = 0
	}
	page, err := h.broker.History(ctx, req.Channel, since, limit)
	if err != nil && resume && errors.Is(err, ErrUnknownPosition) && since.Ms <= uint64(time.Now().Add(maxClockSkew).UnixMilli()) {
		// The channel ends before a position that is not from the
		// future: the broker lost messages this client saw (Redis failed
		// over to a replica that had not received them, or restarted
		// without them). The client did nothing wrong; resume from its
		// position with a gap notice, as the broker's own catch-up does,
		// after moving the channel's IDs past it so that no new message
		// gets an ID the client would take for one it has seen.
		err = h.broker.AdvanceIDs(ctx, req.Channel, since)
		page = History{Gap: true}
	}
	if !resume && err == nil {
		since = page.Last
	}
	var notice *Envelope
	if err == nil {
		notice, err = c.subscribedNotice(ctx, s, since, req.Ref)
	}
	if err == nil {
		err = c.enqueueWait(ctx, notice)
	}
	if err != nil {
		c.forget(s)
		h.detach(s)
		return err
	}
	last := since
	if resume {
		if last, err = c.replay(ctx, req.Channel, since, page); err != nil {
			// The client saw "subscribed" and part of the history: close
			// so that it reconnects and resumes from what it received.
			c.Close(err)
			return err
		}
	}
	c.release(s, last)
	return nil
}

// subscribedNotice returns the subscribed notice of s, starting after
// since, with the presence snapshot if s asked for presence.
func (c *Conn) subscribedNotice(ctx context.Context, s *subscription, since ID, ref string) (*Envelope, error) {
	e := &Envelope{Type: TypeSubscribed, Channel: s.channel, ID: since, Ref: ref}
	if !s.presence {
		return e, nil
	}
	snap, err := c.hub.cfg.Presence.Members(ctx, s.channel, c.hub.cfg.PresenceSnapshot, "")
	if err != nil {
		return nil, err
	}
	e.Presence = AppendPresencePage(nil, snap)
	return e, nil
}

// replay queues history pages from first on, returning the last ID queued.
func (c *Conn) replay(ctx context.Context, channel string, since ID, page History) (ID, error) {
	last := since
	for {
		if page.Gap {
			if err := c.enqueueWait(ctx, &Envelope{Type: TypeGap, Channel: channel, Since: last}); err != nil {
				return last, err
			}
		}
		for _, m := range page.Messages {
			if err := c.enqueueWait(ctx, m); err != nil {
				return last, err
			}
			last = m.ID
		}
		if len(page.Messages) < c.hub.cfg.HistoryPage {
			return last, nil
		}
		var err error
		if page, err = c.hub.broker.History(ctx, channel, last, c.hub.cfg.HistoryPage); err != nil {
			return last, err
		}
	}
}

// release ends buffering: it queues the held live messages that follow last
// and switches s to live delivery.
func (c *Conn) release(s *subscription, last ID) {
	c.mu.Lock()
	if s.removed {
		c.mu.Unlock()
		return
	}
	wasEmpty := c.q.len() == 0
	s.last = last
	if s.lost {
		if c.q.len() >= c.hub.cfg.QueueLength {
			c.lagLocked()
			return
		}
		c.q.push(&Envelope{Type: TypeGap, Channel: s.channel, Since: s.last})
	}
	for _, m := range s.pending {
		isMessage := m.Type != TypePresence // a presence envelope has no ID to order by
		if isMessage && !m.ID.After(s.last) {
			continue
		}
		if c.q.len() >= c.hub.cfg.QueueLength {
			c.lagLocked()
			return
		}
		c.q.push(m)
		if isMessage {
			s.last = m.ID
		}
	}
	s.pending, s.buffering = nil, false
	signal := wasEmpty && c.q.len() > 0
	c.mu.Unlock()
	if signal {
		c.signal()
	}
}

// Unsubscribe removes the connection's subscription to channel and queues an
// unsubscribed notice echoing ref. No message of the channel follows it.
func (c *Conn) Unsubscribe(ctx context.Context, channel, ref string) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	i := c.find(channel)
	if i < 0 {
		c.mu.Unlock()
		return errorf(ErrNotSubscribed, "not subscribed to channel %q", truncate(channel))
	}
	s := c.subs[i]
	c.removeLocked(i)
	s.removed = true
	s.pending = nil
	c.mu.Unlock()
	c.hub.detach(s)
	return c.enqueueWait(ctx, &Envelope{Type: TypeUnsubscribed, Channel: channel, Ref: ref})
}

// Close closes the connection with reason (nil means ErrClosed) and removes
// its subscriptions. It is idempotent; the first reason wins.
func (c *Conn) Close(reason error) {
	if reason == nil {
		reason = ErrClosed
	}
	c.mu.Lock()
	subs := c.closeLocked(reason)
	c.mu.Unlock()
	c.hub.afterClose(c, subs)
}

// closeLocked marks the connection closed and returns the subscriptions to
// detach (nil if it was closed already).
func (c *Conn) closeLocked(reason error) []*subscription {
	if c.closed {
		return nil
	}
	c.closed, c.err = true, reason
	if r := ReasonOf(reason); r != DropNone {
		c.hub.stats.dropped[r].Add(1)
	}
	subs := make([]*subscription, 0, len(c.subs))
	for _, s := range c.subs {
		s.removed, s.pending = true, nil
		subs = append(subs, s)
	}
	c.subs = nil
	c.q = ring{}
	close(c.done)
	if c.spaceWait != nil {
		close(c.spaceWait)
		c.spaceWait = nil
	}
	return subs
}

// lagLocked closes a connection whose queue overflowed. It is called with
// c.mu held, from delivery paths that must not block: it unlocks c.mu and
// leaves the clean-up to a goroutine.
func (c *Conn) lagLocked() {
	subs := c.closeLocked(Dropped(DropQueueOverflow))
	c.mu.Unlock()
	if subs != nil {
		go c.hub.afterClose(c, subs)
	}
}

func (c *Conn) addSubscription(s *subscription) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.find(s.channel) >= 0:
		return errorf(ErrAlreadySubscribed, "already subscribed to channel %q", s.channel)
	case len(c.subs) >= c.hub.cfg.MaxChannels:
		return errorf(ErrTooManyChannels, "a connection may subscribe to at most %d channels", c.hub.cfg.MaxChannels)
	}
	c.subs = append(c.subs, s)
	return nil
}

// find returns the index of channel's subscription in c.subs, or -1. A
// connection has a few channels (at most MaxChannels, 256 by default): a
// scan beats a map, which would cost an idle connection a 200-byte table.
// Called with c.mu held.
func (c *Conn) find(channel string) int {
	for i, s := range c.subs {
		if s.channel == channel {
			return i
		}
	}
	return -1
}

// removeLocked removes c.subs[i]. Called with c.mu held.
func (c *Conn) removeLocked(i int) {
	last := len(c.subs) - 1
	c.subs[i] = c.subs[last]
	c.subs[last] = nil
	c.subs = c.subs[:last]
}

// forget removes s from the connection's subscriptions if it is still there.
func (c *Conn) forget(s *subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := c.find(s.channel); i >= 0 && c.subs[i] == s {
		c.removeLocked(i)
	}
	s.removed, s.pending = true, nil
}

// deliver queues a live message of s's channel. It never blocks: a full
// queue closes the connection with ErrLagged.
func (c *Conn) deliver(s *subscription, m *Envelope) {
	c.mu.Lock()
	if s.removed {
		c.mu.Unlock()
		return
	}
	if s.buffering {
		c.holdLocked(s, m)
		return
	}
	if !m.ID.After(s.last) {
		c.mu.Unlock()
		return
	}
	s.last = m.ID
	c.pushLocked(m)
}

// deliverPresence queues a presence envelope of s's channel, held with the
// live messages while s resumes. It never blocks, and does not move s's
// position.
func (c *Conn) deliverPresence(s *subscription, p *Envelope) {
	c.mu.Lock()
	if s.removed {
		c.mu.Unlock()
		return
	}
	if s.buffering {
		c.holdLocked(s, p)
		return
	}
	c.pushLocked(p)
}

// lost queues a gap notice on s: messages after s.last were lost upstream.
func (c *Conn) lost(s *subscription) {
	c.mu.Lock()
	if s.removed {
		c.mu.Unlock()
		return
	}
	if s.buffering {
		// A notice now would come before the history being replayed:
		// release sends it after the history instead.
		s.lost = true
		c.mu.Unlock()
		return
	}
	c.pushLocked(&Envelope{Type: TypeGap, Channel: s.channel, Since: s.last})
}

// holdLocked keeps e in s's pending envelopes until its resume is done,
// closing the connection with ErrLagged past QueueLength. Called with c.mu
// held; it unlocks it.
func (c *Conn) holdLocked(s *subscription, e *Envelope) {
	if len(s.pending) >= c.hub.cfg.QueueLength {
		c.lagLocked()
		return
	}
	s.pending = append(s.pending, e)
	c.mu.Unlock()
}

// pushLocked queues e, closing the connection with ErrLagged if the queue is
// full, and wakes the writer if the queue was empty. Called with c.mu held;
// it unlocks it.
func (c *Conn) pushLocked(e *Envelope) {
	if c.q.len() >= c.hub.cfg.QueueLength {
		c.lagLocked()
		return
	}
	wasEmpty := c.q.len() == 0
	c.q.push(e)
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
}

func (c *Conn) enqueueWait(ctx context.Context, e *Envelope) error {
	for {
		c.mu.Lock()
		if c.closed {
			err := c.err
			c.mu.Unlock()
			return err
		}
		if c.q.len() < c.hub.cfg.QueueLength {
			wasEmpty := c.q.len() == 0
			c.q.push(e)
			c.mu.Unlock()
			if wasEmpty {
				c.signal()
			}
			return nil
		}
		if c.spaceWait == nil {
			c.spaceWait = make(chan struct{})
		}
		wait := c.spaceWait
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Conn) signal() {
	if c.wake != nil {
		c.wake()
	}
}
