package notify

import (
	"context"
	"strconv"
	"time"
)

// TypePresence is the envelope of a channel's membership changes:
//
//	{"type":"presence","channel":"room.1","presence":{"count":3,"joins":[{"user":"42","conn":"c9f…"}],"leaves":[…]}}
//
// It has no ID: it is not a message, is not kept in history and does not
// move a subscription's position. Only subscriptions made with
// SubscribeRequest.Presence receive it.
const TypePresence = "presence"

// Member is one connection present in a channel. Conn is unique across
// instances (Conn.ID), so one user with two connections is two members.
type Member struct {
	User string `json:"user"`
	Conn string `json:"conn"`
}

// PresenceDiff is a batch of membership changes of one channel, and the
// channel's member count after it.
//
// Reset (JSON "reset":true, with the count and no changes) says that
// changes may have been missed — the instance's Redis subscription of the
// channel dropped and came back, and Pub/Sub does not replay — so a member
// list kept from earlier envelopes must be read again (Members).
type PresenceDiff struct {
	Channel string
	Count   int
	Joins   []Member
	Leaves  []Member
	Reset   bool
}

// PresencePage is a page of a channel's members. Count is the channel's
// member count (all pages); Next, if not empty, is the cursor of the next
// page. Members are in no particular order; a member that joins or leaves
// while the pages are read may be missed or listed twice.
type PresencePage struct {
	Count   int      `json:"count"`
	Members []Member `json:"members"`
	Next    string   `json:"next,omitempty"`
}

// MaxPresencePage bounds PresencePage's members per call: a larger limit
// is clamped to it (and a negative one to 0), as a page is a hint of size,
// not a promise; the caller follows Next.
const MaxPresencePage = 1000

// PresenceLimit returns limit clamped to [0, MaxPresencePage], as
// Presence.Members applies it.
func PresenceLimit(limit int) int { return min(max(limit, 0), MaxPresencePage) }

// ValidateMember reports why m cannot be present, or nil: Conn must be
// non-empty, at most MaxConnIDLen bytes, without control characters or
// spaces (brokers store it, and the user, in one delimited string), and
// User empty (an anonymous connection) or a valid user ID. Join and Leave
// ignore a member that fails it; the hub makes valid ones.
func ValidateMember(m Member) error {
	if m.Conn == "" || len(m.Conn) > MaxConnIDLen {
		return errorf(ErrInvalidCommand, "presence member's connection ID is empty or over %d bytes", MaxConnIDLen)
	}
	for i := 0; i < len(m.Conn); i++ {
		if m.Conn[i] <= ' ' || m.Conn[i] == 0x7f {
			return errorf(ErrInvalidCommand, "presence member's connection ID %q has a control character or space at byte %d", truncate(m.Conn), i)
		}
	}
	if m.User == "" {
		return nil
	}
	return ValidateUser(m.User)
}

// MaxConnIDLen bounds a Member's Conn.
const MaxConnIDLen = 64

// Presence keeps which connections are present in which channels, across
// instances, and tells each instance's subscribers what changed.
//
// Join and Leave never block on the network: a Presence batches the changes
// of each channel and writes them together (at most every
// PresenceConfig.Interval), then delivers one presence envelope per batch
// (NewPresence; several for a batch of more than MaxPresenceDiff changes,
// see SplitPresence) to every sink subscribed to the channel, on every
// instance, through Sink.Deliver — the same path as messages. Changes of
// one member are applied in call order; a Join followed by a Leave in the
// same batch may cancel out.
//
// Join and Leave ignore an invalid channel name or member (ValidateMember):
// the hub validates both before.
//
// An instance that dies without calling Leave (kill -9, a lost network)
// keeps its members only until their lease expires: Presence implementations
// state the bound (Redis: PresenceConfig.Lease plus one Interval), after
// which the members leave and a presence envelope says so.
type Presence interface {
	Join(channel string, m Member)
	Leave(channel string, m Member)
	// Members returns up to limit members of channel (limit 0: only the
	// count; clamped to [0, MaxPresencePage]) from cursor ("" for the
	// first page). Count costs O(1) whatever the channel's size. A
	// channel nobody joined has count 0. An invalid channel name is an
	// ErrInvalidChannel error, a cursor no page returned an
	// ErrInvalidCursor error.
	Members(ctx context.Context, channel string, limit int, cursor string) (PresencePage, error)
}

// PresenceConfig is what presence implementations share. Zero values are
// the defaults.
type PresenceConfig struct {
	// Interval is how long changes of a channel are batched before they
	// are written and announced. Default 200ms.
	Interval time.Duration
	// Lease is how long a member stays present without its instance
	// renewing it (Redis). Default 15s; renewed every Lease/3.
	Lease time.Duration
}

// WithDefaults returns cfg with its defaults filled in.
func (cfg PresenceConfig) WithDefaults() PresenceConfig {
	if cfg.Interval <= 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 15 * time.Second
	}
	return cfg
}

// NewPresence returns the presence envelope of d, encoded once (shared by
// every connection it is delivered to, like a message).
func NewPresence(d PresenceDiff) *Envelope {
	e := &Envelope{Type: TypePresence, Channel: d.Channel}
	p := strconv.AppendInt(append(make([]byte, 0, 64+40*(len(d.Joins)+len(d.Leaves))), `{"count":`...), int64(d.Count), 10)
	if len(d.Joins) > 0 {
		p = appendMembers(append(p, `,"joins":`...), d.Joins)
	}
	if len(d.Leaves) > 0 {
		p = appendMembers(append(p, `,"leaves":`...), d.Leaves)
	}
	if d.Reset {
		p = append(p, `,"reset":true`...)
	}
	e.Presence = append(p, '}')
	e.raw = e.AppendJSON(nil)
	e.reset = d.Reset
	return e
}

// NewPresenceSnapshot returns the presence envelope that replaces a view
// after a reset: "reset":true with the members of page (and its count and
// next cursor), as a subscribed notice's snapshot carries them.
func NewPresenceSnapshot(channel string, page PresencePage) *Envelope {
	p := AppendPresencePage(nil, page)
	p = append(p[:len(p)-1], `,"reset":true}`...)
	e := &Envelope{Type: TypePresence, Channel: channel, Presence: p}
	e.raw = e.AppendJSON(nil)
	return e
}

// AppendPresencePage appends the JSON object of a presence page, as a
// subscribed notice's "presence" field carries it.
func AppendPresencePage(b []byte, p PresencePage) []byte {
	b = strconv.AppendInt(append(b, `{"count":`...), int64(p.Count), 10)
	b = appendMembers(append(b, `,"members":`...), p.Members)
	if p.Next != "" {
		b = appendString(append(b, `,"next":`...), p.Next)
	}
	return append(b, '}')
}

func appendMembers(b []byte, ms []Member) []byte {
	b = append(b, '[')
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(append(b, `{"user":`...), m.User)
		b = appendString(append(b, `,"conn":`...), m.Conn)
		b = append(b, '}')
	}
	return append(b, ']')
}

// MaxPresenceDiff bounds the changes one presence envelope carries: a
// larger batch (a mass join, the members of a dead instance expiring) is
// announced in several envelopes, in order, each with the count after its
// own changes, so that no envelope grows past what a client reads at once.
const MaxPresenceDiff = 1000

// SplitPresence splits d into diffs of at most MaxPresenceDiff changes,
// leaves before joins (a connection that joined again as another user
// leaves first), each with the count after its own changes: d.Count after
// the last. A diff within the bound is returned as is.
func SplitPresence(d PresenceDiff) []PresenceDiff {
	if len(d.Joins)+len(d.Leaves) <= MaxPresenceDiff {
		return []PresenceDiff{d}
	}
	var out []PresenceDiff
	count := d.Count - len(d.Joins) + len(d.Leaves)
	leaves, joins := d.Leaves, d.Joins
	for len(leaves)+len(joins) > 0 {
		c := PresenceDiff{Channel: d.Channel}
		n := min(len(leaves), MaxPresenceDiff)
		c.Leaves, leaves = leaves[:n:n], leaves[n:]
		m := min(len(joins), MaxPresenceDiff-n)
		c.Joins, joins = joins[:m:m], joins[m:]
		count += m - n
		c.Count = count
		out = append(out, c)
	}
	return out
}
