package client

import (
	"cmp"
	"encoding/json"
	"slices"

	"github.com/heraldhq/herald/notify"
)

// Presence is a channel's members as the client knows them: the snapshot of
// the last subscribed notice, with every presence envelope since applied in
// order (joins and leaves are set operations keyed by Member.Conn, so the
// view converges on the channel's members; see notify.Conn.Subscribe).
//
// A subscription takes part in a channel's presence when the token grants
// presence on it (see docs/protocol.md); the client's own connection is a
// member too. Each connection starts from a new snapshot, so a reconnection
// replaces the view (the old connection leaves, the new one joins).
type Presence struct {
	Channel string
	// Count is the channel's member count, as the server last said.
	Count int
	// Members are the members known, sorted by user then connection: all
	// of them unless the channel had more than the server's snapshot
	// lists (Count then says how many there are).
	Members []notify.Member
	// Joins and Leaves are the change that made this view: nil for a
	// snapshot.
	Joins, Leaves []notify.Member
}

// presenceView is one channel's members. Guarded by Client.mu.
type presenceView struct {
	members map[notify.Member]struct{}
	count   int
}

// presenceField is the "presence" field of a subscribed notice (a
// snapshot) or of a presence envelope (a diff).
type presenceField struct {
	Count   int             `json:"count"`
	Members []notify.Member `json:"members"`
	Joins   []notify.Member `json:"joins"`
	Leaves  []notify.Member `json:"leaves"`
	// Reset: the server may have missed changes; with Members it sends
	// the channel's members again, which replace the view.
	Reset bool `json:"reset"`
}

// Presence returns channel's members, and false if the client's
// subscription to it takes no part in its presence.
func (c *Client) Presence(channel string) (Presence, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.presence[channel]
	if v == nil {
		return Presence{}, false
	}
	return v.snapshot(channel), true
}

// applyPresence updates channel's view from a subscribed notice (which
// replaces it: a snapshot, or no presence) or a presence envelope, and
// calls Config.OnPresence with the result. It runs on the reader.
func (c *Client) applyPresence(e *notify.Envelope) {
	var f presenceField
	if e.Presence != nil {
		if err := json.Unmarshal(e.Presence, &f); err != nil {
			c.cfg.Logger.Warn("herald client: malformed presence field", "channel", e.Channel, "error", err)
			return
		}
	}
	c.mu.Lock()
	if c.chans[e.Channel] == nil {
		c.mu.Unlock()
		return // left meanwhile
	}
	snapshot := e.Type == notify.TypeSubscribed
	v := c.presence[e.Channel]
	switch {
	case snapshot && e.Presence == nil, !snapshot && v == nil:
		// No presence on this subscription (a diff without a snapshot
		// cannot be one of its: ignored).
		if snapshot {
			delete(c.presence, e.Channel)
		}
		c.mu.Unlock()
		return
	case snapshot, f.Reset && f.Members != nil:
		v = &presenceView{members: make(map[notify.Member]struct{})}
		c.presence[e.Channel] = v
	}
	for _, m := range f.Members {
		v.members[m] = struct{}{}
	}
	for _, m := range f.Joins {
		v.members[m] = struct{}{}
	}
	for _, m := range f.Leaves {
		delete(v.members, m)
	}
	v.count = f.Count
	p := v.snapshot(e.Channel)
	c.mu.Unlock()
	if !snapshot {
		p.Joins, p.Leaves = f.Joins, f.Leaves
	}
	if c.cfg.OnPresence != nil {
		c.cfg.OnPresence(p)
	}
}

func (v *presenceView) snapshot(channel string) Presence {
	p := Presence{Channel: channel, Count: v.count, Members: make([]notify.Member, 0, len(v.members))}
	for m := range v.members {
		p.Members = append(p.Members, m)
	}
	slices.SortFunc(p.Members, func(a, b notify.Member) int {
		return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Conn, b.Conn))
	})
	return p
}
