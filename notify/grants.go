package notify

import (
	"strings"
	"time"
)

// Grants are what an authenticated client may do: its user (whose personal
// channel "user:<id>" it may always subscribe to), the channels it may
// subscribe and publish to, and the channels whose presence it takes part
// in and sees (its subscriptions to them join the members and receive their
// presence envelopes; it may read their members). Each entry is an exact channel name, or a prefix
// when it ends in "." or "*" ("dash." allows "dash.sales"; "room*" allows
// "room1" and "room.2"; "*" alone allows every channel).
type Grants struct {
	User      string
	Subscribe []string
	Publish   []string
	Presence  []string
	// Expires is when the credentials expire (a token's exp); zero means
	// never. A connection made with them ends after it unless refreshed.
	Expires time.Time
}

// CanSubscribe reports whether the grants allow subscribing to channel.
func (g *Grants) CanSubscribe(channel string) bool {
	if g.User != "" && channel == UserChannel(g.User) {
		return true
	}
	return matchAny(g.Subscribe, channel)
}

// CanPublish reports whether the grants allow publishing to channel.
func (g *Grants) CanPublish(channel string) bool { return matchAny(g.Publish, channel) }

// CanPresence reports whether the grants allow presence on channel. Unlike
// subscribing, the user's own channel needs a grant too.
func (g *Grants) CanPresence(channel string) bool { return matchAny(g.Presence, channel) }

// CheckPresence returns ErrForbidden unless the grants allow presence on
// channel.
func (g *Grants) CheckPresence(channel string) error {
	if g.CanPresence(channel) {
		return nil
	}
	return errorf(ErrForbidden, "not allowed to see the presence of channel %q", truncate(channel))
}

// CheckSubscribe returns ErrForbidden unless the grants allow subscribing to
// channel. Another user's personal channel is never allowed by a prefix.
func (g *Grants) CheckSubscribe(channel string) error {
	if g.CanSubscribe(channel) {
		return nil
	}
	return errorf(ErrForbidden, "not allowed to subscribe to channel %q", truncate(channel))
}

// CheckPublish returns ErrForbidden unless the grants allow publishing to
// channel.
func (g *Grants) CheckPublish(channel string) error {
	if g.CanPublish(channel) {
		return nil
	}
	return errorf(ErrForbidden, "not allowed to publish to channel %q", truncate(channel))
}

func matchAny(patterns []string, channel string) bool {
	for _, p := range patterns {
		if matchGrant(p, channel) {
			return true
		}
	}
	return false
}

func matchGrant(pattern, channel string) bool {
	switch {
	case pattern == "":
		return false
	case strings.HasSuffix(pattern, "*"):
		prefix := pattern[:len(pattern)-1]
		if !strings.HasPrefix(channel, prefix) {
			return false
		}
		// A wildcard never reaches into other users' personal channels
		// unless it names the user prefix itself.
		return !strings.HasPrefix(channel, UserChannelPrefix) || strings.HasPrefix(prefix, UserChannelPrefix)
	case strings.HasSuffix(pattern, "."):
		return strings.HasPrefix(channel, pattern)
	}
	return pattern == channel
}

// ValidateGrant reports why pattern is not a valid grant entry, or nil.
func ValidateGrant(pattern string) error {
	if pattern == "*" {
		return nil
	}
	name := strings.TrimSuffix(pattern, "*")
	if name == "" || invalidNameByte(name) >= 0 || len(name) > MaxChannelLen {
		return errorf(ErrInvalidChannel, "grant %q is not a channel name or prefix", truncate(pattern))
	}
	return nil
}
