package notify

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Name limits. Channel and event names travel unescaped in envelopes, SSE
// fields, Redis keys (inside a {hash tag}) and logs, so they are restricted
// to a safe alphabet: ASCII letters, digits and _ - . : @ /
const (
	MaxChannelLen = 128
	MaxEventLen   = 64
	MaxUserLen    = 64
	// DefaultMaxPayload bounds a message's data when a broker's MaxPayload
	// is zero.
	DefaultMaxPayload = 64 << 10
)

// UserChannelPrefix starts every user's personal channel: "user:<id>".
const UserChannelPrefix = "user:"

// UserChannel returns the personal channel of user.
func UserChannel(user string) string { return UserChannelPrefix + user }

// ValidateChannel reports why name is not a valid channel name, or nil.
func ValidateChannel(name string) error {
	if name == "" {
		return errorf(ErrInvalidChannel, "channel name is empty")
	}
	if len(name) > MaxChannelLen {
		return errorf(ErrInvalidChannel, "channel name is %d bytes; the limit is %d", len(name), MaxChannelLen)
	}
	if i := invalidNameByte(name); i >= 0 {
		return errorf(ErrInvalidChannel, "channel name %q has a forbidden character at byte %d (allowed: letters, digits, _ - . : @ /)", truncate(name), i)
	}
	if strings.HasPrefix(name, UserChannelPrefix) && len(name) == len(UserChannelPrefix) {
		return errorf(ErrInvalidChannel, "channel %q names no user", name)
	}
	return nil
}

// ValidateEvent reports why name is not a valid event name, or nil. The
// empty event name is allowed.
func ValidateEvent(name string) error {
	if len(name) > MaxEventLen {
		return errorf(ErrInvalidEvent, "event name is %d bytes; the limit is %d", len(name), MaxEventLen)
	}
	if i := invalidNameByte(name); i >= 0 {
		return errorf(ErrInvalidEvent, "event name %q has a forbidden character at byte %d (allowed: letters, digits, _ - . : @ /)", truncate(name), i)
	}
	return nil
}

// ValidateUser reports why id is not a valid user ID, or nil. A user ID
// becomes part of the channel name "user:<id>".
func ValidateUser(id string) error {
	if id == "" {
		return errorf(ErrInvalidUser, "user ID is empty")
	}
	if len(id) > MaxUserLen {
		return errorf(ErrInvalidUser, "user ID is %d bytes; the limit is %d", len(id), MaxUserLen)
	}
	if i := invalidNameByte(id); i >= 0 {
		return errorf(ErrInvalidUser, "user ID %q has a forbidden character at byte %d", truncate(id), i)
	}
	return nil
}

func invalidNameByte(s string) int {
	for i := 0; i < len(s); i++ {
		if !nameByte[s[i]] {
			return i
		}
	}
	return -1
}

var nameByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-.:@/" {
		t[c] = true
	}
	return t
}()

// Publication is a message to publish: the broker assigns its ID.
type Publication struct {
	Channel string
	Event   string
	Data    json.RawMessage // any JSON value; empty means null
}

// Normalize validates p against maxPayload (zero means DefaultMaxPayload) and
// returns its data in compact form: envelopes are single lines on every
// transport (NDJSON, SSE data fields), so data never carries newlines.
// Normalize does not modify p.
func (p *Publication) Normalize(maxPayload int) ([]byte, error) {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	if err := ValidateChannel(p.Channel); err != nil {
		return nil, err
	}
	if err := ValidateEvent(p.Event); err != nil {
		return nil, err
	}
	if len(p.Data) > maxPayload {
		return nil, errorf(ErrTooLarge, "data is %d bytes; the limit is %d", len(p.Data), maxPayload)
	}
	if len(bytes.TrimSpace(p.Data)) == 0 {
		return []byte("null"), nil
	}
	var buf bytes.Buffer
	buf.Grow(len(p.Data))
	if err := json.Compact(&buf, p.Data); err != nil {
		return nil, errorf(ErrInvalidData, "data is not valid JSON: %v", err)
	}
	return buf.Bytes(), nil
}
