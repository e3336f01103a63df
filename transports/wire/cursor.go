package wire

import (
	"strings"

	"github.com/heraldhq/herald/notify"
)

// A cursor is a connection's position on each of its channels, in one
// string, so that a single value — an SSE event's id, returned by the
// browser as Last-Event-ID, or the since query parameter — resumes every
// channel of a connection:
//
//	news=1700000000000-0;user:42=1699999999999-3
//
// Channel names cannot contain '=' or ';'. A bare ID (no '=') is the
// position of a connection's only channel. Channels absent from a cursor
// have no position (live only).
type Cursor map[string]string

// ParseCursor parses s for a connection on channels. A bare ID needs
// exactly one channel. Positions of channels outside the list are refused:
// a cursor belongs to one channel set.
func ParseCursor(s string, channels []string) (Cursor, error) {
	if s == "" {
		return nil, nil // reads as empty; an idle connection keeps no map
	}
	cur := Cursor{}
	if len(s) > 64*1024 {
		return nil, notify.Errorf(notify.ErrInvalidPosition, "cursor is %d bytes", len(s))
	}
	if !strings.Contains(s, "=") {
		if len(channels) != 1 {
			return nil, notify.Errorf(notify.ErrInvalidPosition, "a bare position needs exactly one channel; this connection has %d", len(channels))
		}
		if _, err := notify.ParseID(s); err != nil {
			return nil, err
		}
		cur[channels[0]] = s
		return cur, nil
	}
	for part := range strings.SplitSeq(s, ";") {
		ch, id, ok := strings.Cut(part, "=")
		if !ok {
			return nil, notify.Errorf(notify.ErrInvalidPosition, "cursor entry %q is not <channel>=<id>", truncate(part))
		}
		if !contains(channels, ch) {
			return nil, notify.Errorf(notify.ErrInvalidPosition, "cursor names channel %q, which this connection does not subscribe", truncate(ch))
		}
		if _, err := notify.ParseID(id); err != nil {
			return nil, err
		}
		cur[ch] = id
	}
	return cur, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Positions tracks a connection's position on each of its channels, to
// write cursors. A position is known once the channel's subscribed notice
// or a message of it has been sent; cursors leave unknown ones out.
type Positions struct {
	channels []string
	ids      []notify.ID
	known    []bool
}

// NewPositions tracks positions on channels.
func NewPositions(channels []string) *Positions {
	return &Positions{channels: channels, ids: make([]notify.ID, len(channels)), known: make([]bool, len(channels))}
}

// Update records the position an envelope carries (a message, or a
// subscribed notice) and reports whether it changed.
func (p *Positions) Update(e *notify.Envelope) bool {
	if e.Type != notify.TypeMessage && e.Type != notify.TypeSubscribed {
		return false
	}
	for i, ch := range p.channels {
		if ch == e.Channel {
			if p.known[i] && p.ids[i] == e.ID {
				return false
			}
			p.ids[i], p.known[i] = e.ID, true
			return true
		}
	}
	return false
}

// Single reports whether the connection has exactly one channel: its
// cursor is then the bare ID of its last message.
func (p *Positions) Single() bool { return len(p.channels) == 1 }

// AppendCursor appends the cursor of the known positions.
func (p *Positions) AppendCursor(b []byte) []byte {
	if len(p.channels) == 1 {
		return p.ids[0].AppendTo(b)
	}
	first := true
	for i, ch := range p.channels {
		if !p.known[i] {
			continue
		}
		if !first {
			b = append(b, ';')
		}
		first = false
		b = append(b, ch...)
		b = append(b, '=')
		b = p.ids[i].AppendTo(b)
	}
	return b
}
