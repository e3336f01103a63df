package notify

import (
	"strconv"
	"unicode/utf8"
)

// Envelope types sent by the server (docs/protocol.md, "Envelopes").
const (
	TypeMessage      = "message"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
	TypeGap          = "gap"
	TypeAck          = "ack"
	TypeError        = "error"
	TypePong         = "pong"
	TypeReconnect    = "reconnect"
	TypeRefreshed    = "refreshed" // a refresh command's ack
	TypeExpiring     = "expiring"  // the connection's token expires: refresh or reconnect
	// TypePresence: see presence.go.
)

// Envelope is the JSON object every transport carries, for messages and for
// notices alike:
//
//	{"type":"message","channel":"user:42","id":"1700000000000-0","event":"order.shipped","data":{…},"ts":1700000000000}
//
// Empty fields are omitted. A message envelope built by NewMessage carries its
// encoding, made once and shared by every connection it is delivered to; such
// an envelope must not be modified.
type Envelope struct {
	Type    string
	Channel string
	ID      ID     // message ID; zero is omitted
	Event   string // message event name
	Data    []byte // message data: compact JSON
	TS      int64  // publish time, Unix milliseconds
	Since   ID     // gap: the position after which messages were lost
	Ref     string // echo of the client command's ref
	Code    string // error code, or reconnect reason
	Message string // error text
	Delay   int64  // reconnect advice: milliseconds to wait before reconnecting
	// Presence is a JSON object: a presence envelope's changes
	// (NewPresence), or the snapshot of a subscribed notice
	// (AppendPresencePage).
	Presence []byte

	raw   []byte // the encoding, set by NewMessage; immutable
	reset bool   // a presence reset (PresenceDiff.Reset), set by NewPresence
}

// messageOverhead is the most a message envelope holds besides its channel,
// event and data: the field names and punctuation, an ID of two 20-digit
// numbers and a 20-character timestamp. Names need no escaping (they are
// validated), so the encoding fits in one allocation.
const messageOverhead = len(`{"type":"message","channel":"","id":"","event":"","data":,"ts":}`) + 41 + 20

// NewMessage returns the message envelope of a published message, encoded
// once. data must be compact JSON (see Publication.Normalize).
func NewMessage(channel string, id ID, event string, data []byte) *Envelope {
	e := &Envelope{Type: TypeMessage, Channel: channel, ID: id, Event: event, Data: data, TS: int64(id.Ms)}
	e.raw = e.AppendJSON(make([]byte, 0, messageOverhead+len(channel)+len(event)+len(data)))
	return e
}

// JSON returns the envelope's encoding: the shared bytes of a message made by
// NewMessage (do not modify them), or a fresh encoding otherwise.
func (e *Envelope) JSON() []byte {
	if e.raw != nil {
		return e.raw
	}
	return e.AppendJSON(nil)
}

// AppendJSON appends the envelope's JSON encoding to b.
func (e *Envelope) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, e.Type)
	if e.Channel != "" {
		b = append(b, `,"channel":`...)
		b = appendString(b, e.Channel)
	}
	// A subscribed notice always says its position, even "0-0" (the
	// channel had no message): clients resume from it.
	if !e.ID.IsZero() || e.Type == TypeSubscribed {
		b = append(b, `,"id":"`...)
		b = e.ID.AppendTo(b)
		b = append(b, '"')
	}
	if e.Event != "" {
		b = append(b, `,"event":`...)
		b = appendString(b, e.Event)
	}
	if e.Data != nil {
		b = append(b, `,"data":`...)
		b = append(b, e.Data...)
	}
	if e.TS != 0 {
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, e.TS, 10)
	}
	if !e.Since.IsZero() {
		b = append(b, `,"since":"`...)
		b = e.Since.AppendTo(b)
		b = append(b, '"')
	}
	if e.Ref != "" {
		b = append(b, `,"ref":`...)
		b = appendString(b, e.Ref)
	}
	if e.Code != "" {
		b = append(b, `,"code":`...)
		b = appendString(b, e.Code)
	}
	if e.Message != "" {
		b = append(b, `,"message":`...)
		b = appendString(b, e.Message)
	}
	if e.Delay != 0 {
		b = append(b, `,"delay":`...)
		b = strconv.AppendInt(b, e.Delay, 10)
	}
	if e.Presence != nil {
		b = append(b, `,"presence":`...)
		b = append(b, e.Presence...)
	}
	return append(b, '}')
}

// ErrorEnvelope returns the error notice for err, echoing ref.
func ErrorEnvelope(err error, ref string) *Envelope {
	e := &Envelope{Type: TypeError, Ref: ref, Code: "internal", Message: err.Error()}
	var pe *Error
	if asError(err, &pe) {
		e.Code, e.Message = pe.Code, pe.Message
	} else if isUnavailable(err) {
		e.Code, e.Message = ErrUnavailable.Code, ErrUnavailable.Message
	}
	return e
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, and
// U+2028/U+2029 are escaped so the output is also safe inside JavaScript.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
