package notify

import (
	"context"
	"sync"
	"time"
)

// A presence reset (PresenceDiff.Reset) says that an instance may have
// missed changes of a channel: its broker subscription dropped and came
// back, and Redis Pub/Sub does not replay. The hub then reads the members
// again, once for all its subscriptions of the channel, and delivers them
// as one presence envelope with "reset":true and "members" (like a
// subscribed notice's snapshot), which replaces the clients' views. The
// diffs that arrive while the members are read are held and delivered
// after it, in order: the snapshot was read after the reset, so applying
// them on top of it converges, as at subscribe (Conn.Subscribe). A reset
// that comes while a read is under way makes the read run again when it
// ends. If the members cannot be read (presenceResetTries failures), the
// bare reset (the count, no members) goes out instead: clients then know
// their view may be stale.
//
// One goroutine per channel runs while a read is under way; none remains
// afterwards.

// presenceState is a channel's reset bookkeeping, guarded by its mu.
// Deliveries of presence envelopes take mu, so that the snapshot and the
// held diffs go out before any later diff; message dispatch never does.
type presenceState struct {
	mu        sync.Mutex
	resetting bool        // a read of the members is under way
	again     bool        // a reset came during it: read again
	held      []*Envelope // diffs received during the read
}

// presenceResetTries bounds the attempts to read the members after a
// reset; presenceResetTimeout bounds each.
const (
	presenceResetTries   = 3
	presenceResetTimeout = 5 * time.Second
	presenceResetBackoff = 500 * time.Millisecond
)

// holdLocked keeps a diff until the snapshot under way goes out. Past
// QueueLength held diffs the oldest would have to go: the read starts
// again instead, and the held diffs are dropped (the next snapshot
// reflects them).
func (ps *presenceState) holdLocked(p *Envelope) {
	if len(ps.held) >= maxHeldPresence {
		ps.held, ps.again = nil, true
		return
	}
	ps.held = append(ps.held, p)
}

const maxHeldPresence = 1024

// resetPresenceLocked starts a read of cs's members for bare (a reset
// envelope), or marks the one under way to run again. cs.presence.mu is
// held.
func (h *Hub) resetPresenceLocked(cs *channelState, bare *Envelope) {
	ps := &cs.presence
	if ps.resetting {
		ps.again = true
		return
	}
	ps.resetting = true
	go h.resnapshot(cs, bare)
}

// resnapshot reads cs's members until no reset came during the read, then
// delivers the snapshot and the diffs held meanwhile.
func (h *Hub) resnapshot(cs *channelState, bare *Envelope) {
	for {
		e := h.readPresenceSnapshot(cs.name, bare)
		ps := &cs.presence
		ps.mu.Lock()
		if ps.again && !h.closed.Load() {
			ps.again, ps.held = false, nil
			ps.mu.Unlock()
			continue
		}
		held := ps.held
		ps.resetting, ps.again, ps.held = false, false, nil
		cs.deliverPresence(e)
		for _, d := range held {
			cs.deliverPresence(d)
		}
		ps.mu.Unlock()
		return
	}
}

// readPresenceSnapshot returns the snapshot envelope of channel, or bare
// if its members cannot be read.
func (h *Hub) readPresenceSnapshot(channel string, bare *Envelope) *Envelope {
	for try := range presenceResetTries {
		if h.closed.Load() {
			break
		}
		if try > 0 {
			time.Sleep(presenceResetBackoff)
		}
		ctx, cancel := context.WithTimeout(context.Background(), presenceResetTimeout)
		page, err := h.cfg.Presence.Members(ctx, channel, h.cfg.PresenceSnapshot, "")
		cancel()
		if err == nil {
			return NewPresenceSnapshot(channel, page)
		}
		h.cfg.Logger.Warn("herald: reading presence members after a reset failed", "channel", channel, "try", try+1, "err", err)
	}
	return bare
}
