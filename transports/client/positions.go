package client

import (
	"fmt"
	"slices"
	"strings"

	"github.com/heraldhq/herald/notify"
)

// positions maps a channel to its position: the ID of its last message
// received, or, before any, the ID of its subscribed notice. A channel
// absent from the map has no position and starts live. These are the
// semantics of wire.Positions, for a channel set that changes.
type positions map[string]notify.ID

// parseCursor parses a cursor ("news=1-0;user:42=2-0", see
// docs/protocol.md). A bare ID is the position of channels' only channel.
// Unlike wire.ParseCursor it accepts channels outside the list: the
// user's own channel is known only to the server.
func parseCursor(s string, channels []string) (positions, error) {
	p := positions{}
	if s == "" {
		return p, nil
	}
	if !strings.Contains(s, "=") {
		if len(channels) != 1 {
			return nil, fmt.Errorf("client: a bare position needs exactly one channel; Channels has %d (use channel=id)", len(channels))
		}
		id, err := notify.ParseID(s)
		if err != nil {
			return nil, fmt.Errorf("client: since: %w", err)
		}
		p[channels[0]] = id
		return p, nil
	}
	for part := range strings.SplitSeq(s, ";") {
		ch, raw, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("client: cursor entry %q is not <channel>=<id>", part)
		}
		if err := notify.ValidateChannel(ch); err != nil {
			return nil, fmt.Errorf("client: since: %w", err)
		}
		id, err := notify.ParseID(raw)
		if err != nil {
			return nil, fmt.Errorf("client: since: %w", err)
		}
		p[ch] = id
	}
	return p, nil
}

// cursor writes every position, channels sorted so that equal positions
// give equal strings. It always names the channels: a bare ID would be
// refused by a server that also subscribes the user's channel.
func (p positions) cursor() string {
	chans := make([]string, 0, len(p))
	for ch := range p {
		chans = append(chans, ch)
	}
	slices.Sort(chans)
	var b []byte
	for i, ch := range chans {
		if i > 0 {
			b = append(b, ';')
		}
		b = append(b, ch...)
		b = append(b, '=')
		b = p[ch].AppendTo(b)
	}
	return string(b)
}

// advance moves ch's position to id unless it is already at or after it:
// positions never go back.
func (p positions) advance(ch string, id notify.ID) {
	if cur, ok := p[ch]; !ok || id.After(cur) {
		p[ch] = id
	}
}
