package notify

import (
	"encoding/json"
	"fmt"
)

// ParseEnvelope decodes one envelope as sent by a server: the client side of
// AppendJSON. The envelope owns its memory: it shares nothing with b, which
// the caller may reuse.
//
// Envelopes are decoded by a single-pass decoder written for the envelopes
// servers send (parseEnvelopeFast); whatever it does not handle simply, and
// every malformed envelope, is decoded by encoding/json
// (parseEnvelopeJSON), which defines the behaviour and the errors.
func ParseEnvelope(b []byte) (*Envelope, error) {
	if e, ok := parseEnvelopeFast(b); ok {
		return e, nil
	}
	return parseEnvelopeJSON(b)
}

// wireEnvelope is the JSON form of an envelope, for decoding.
type wireEnvelope struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel"`
	ID      string          `json:"id"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
	TS      int64           `json:"ts"`
	Since   string          `json:"since"`
	Ref     string          `json:"ref"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Delay   int64           `json:"delay"`
	// Presence is kept raw, like data: a presence envelope's changes or a
	// subscribed notice's snapshot, for the client to decode.
	Presence json.RawMessage `json:"presence"`
}

// parseEnvelopeJSON is ParseEnvelope done with encoding/json: the reference
// the fast decoder must agree with (see FuzzParseEnvelopeMatchesEncodingJSON),
// and its fallback.
func parseEnvelopeJSON(b []byte) (*Envelope, error) {
	var w wireEnvelope
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("notify: malformed envelope: %w", err)
	}
	if w.Type == "" {
		return nil, fmt.Errorf("notify: envelope without a type")
	}
	e := &Envelope{Type: w.Type, Channel: w.Channel, Event: w.Event, TS: w.TS, Ref: w.Ref, Code: w.Code, Message: w.Message, Delay: w.Delay}
	if len(w.Data) > 0 {
		e.Data = []byte(w.Data)
	}
	if len(w.Presence) > 0 {
		e.Presence = []byte(w.Presence)
	}
	var err error
	if w.ID != "" {
		if e.ID, err = ParseID(w.ID); err != nil {
			return nil, err
		}
	}
	if w.Since != "" {
		if e.Since, err = ParseID(w.Since); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Err returns the error an error envelope carries, as an *Error with its
// code, or nil for other envelopes.
func (e *Envelope) Err() error {
	if e.Type != TypeError {
		return nil
	}
	return &Error{Code: e.Code, Message: e.Message}
}
