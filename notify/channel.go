package notify

import (
	"bytes"
	"encoding/json"
	"fmt"
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
//
// A publication is validated and its data compacted exactly once per
// publish, by Normalize, wherever it enters: an entry point that must refuse
// bad input before doing anything else (the REST API checks a whole batch
// before charging the rate limit) normalizes it and hands the result to
// Broker.Publish; otherwise the broker normalizes it. Normalize marks its
// result, and a broker trusts the mark instead of validating again (see
// Normalized). A Go caller that builds a Publication and calls
// Broker.Publish with it gets it validated like any other.
type Publication struct {
	Channel string
	Event   string
	Data    json.RawMessage // any JSON value; empty means null

	// checked is what Normalize validated, set only by Normalize. Its
	// copies of the fields let Normalized see a field changed since:
	// the mark then no longer holds.
	checked struct {
		channel, event string
		data           []byte // the compact data Normalize returned
	}
}

// Normalize validates p against maxPayload (zero means DefaultMaxPayload)
// and returns it with its data in compact form (envelopes are single lines
// on every transport — NDJSON, SSE data fields — so data never carries
// newlines), marked as normalized. It does not modify p.
//
// A publication that is already Normalized is not validated again: only its
// size is checked against maxPayload, which may be smaller than the limit it
// was normalized with. Normalize is therefore free to call on its own
// result, and brokers call it on every publication they receive.
func (p Publication) Normalize(maxPayload int) (Publication, error) {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	if p.Normalized() {
		if err := checkSize(p.Data, maxPayload); err != nil {
			return Publication{}, err
		}
		return p, nil
	}
	if err := ValidateChannel(p.Channel); err != nil {
		return Publication{}, err
	}
	if err := ValidateEvent(p.Event); err != nil {
		return Publication{}, err
	}
	if err := checkSize(p.Data, maxPayload); err != nil {
		return Publication{}, err
	}
	data, err := compact(p.Data)
	if err != nil {
		return Publication{}, err
	}
	n := Publication{Channel: p.Channel, Event: p.Event, Data: data}
	n.checked.channel, n.checked.event, n.checked.data = p.Channel, p.Event, data
	return n, nil
}

// Normalized reports whether p is a result of Normalize whose fields have
// not changed since: valid names, and data that is the compact JSON
// Normalize made (the same bytes, not a copy). Brokers publish such a
// publication without validating it again. Do not modify the bytes of a
// normalized publication's Data: make a new Publication instead.
func (p Publication) Normalized() bool {
	c := &p.checked
	return c.data != nil && len(p.Data) == len(c.data) && &p.Data[0] == &c.data[0] &&
		p.Channel == c.channel && p.Event == c.event
}

// NormalizeBatch normalizes every publication of ps against maxPayload, for
// a broker's PublishBatch: it returns the first failure, naming its index
// ("message 3: …"), so that an invalid message publishes nothing. It
// returns ps itself when every publication is normalized already, and
// never modifies ps.
func NormalizeBatch(ps []Publication, maxPayload int) ([]Publication, error) {
	var out []Publication // nil while every publication so far was normalized already
	for i := range ps {
		n, err := ps[i].Normalize(maxPayload)
		if err != nil {
			return nil, indexed(i, err)
		}
		if out == nil && !ps[i].Normalized() {
			out = make([]Publication, len(ps))
			copy(out, ps[:i])
		}
		if out != nil {
			out[i] = n
		}
	}
	if out == nil {
		return ps, nil
	}
	return out, nil
}

// indexed prefixes the message of err with the index of the batch entry it
// is about, keeping its code.
func indexed(i int, err error) error {
	var e *Error
	if asError(err, &e) {
		return &Error{Code: e.Code, Message: fmt.Sprintf("message %d: %s", i, e.Message)}
	}
	return fmt.Errorf("message %d: %w", i, err)
}

func checkSize(data []byte, maxPayload int) error {
	if len(data) > maxPayload {
		return errorf(ErrTooLarge, "data is %d bytes; the limit is %d", len(data), maxPayload)
	}
	return nil
}

// compact returns data in compact form, or why it is not one JSON value.
// Empty data is null.
func compact(data []byte) ([]byte, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return []byte("null"), nil
	}
	var buf bytes.Buffer
	buf.Grow(len(data))
	if err := json.Compact(&buf, data); err != nil {
		return nil, errorf(ErrInvalidData, "data is not valid JSON: %v", err)
	}
	return buf.Bytes(), nil
}
