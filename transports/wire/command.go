package wire

import (
	"bytes"
	"encoding/json"

	"github.com/heraldhq/herald/notify"
)

// Client command types.
const (
	CmdSubscribe   = "subscribe"
	CmdUnsubscribe = "unsubscribe"
	CmdPublish     = "publish"
	CmdPing        = "ping"
	CmdRefresh     = "refresh"
)

// MaxRefLen bounds a command's ref, which is echoed back.
const MaxRefLen = 64

// Command is a client command: one JSON object per line.
//
//	{"type":"subscribe","channel":"news","since":"1700000000000-0","ref":"1"}
//	{"type":"subscribe","channel":"room.1","presence":false}
//	{"type":"unsubscribe","channel":"news"}
//	{"type":"publish","channel":"room.1","event":"chat","data":{"text":"hi"},"ref":"2"}
//	{"type":"ping","ref":"3"}
//	{"type":"refresh","token":"eyJ…","ref":"4"}
type Command struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel,omitempty"`
	Since   string          `json:"since,omitempty"`
	Event   string          `json:"event,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Ref     string          `json:"ref,omitempty"`
	Token   string          `json:"token,omitempty"` // refresh: the new token
	// Presence (subscribe): absent, the subscription takes part in the
	// channel's presence when the grants allow it and the server has
	// presence; false opts out; true requires it (forbidden without the
	// grant, presence_disabled on a server without presence).
	Presence *bool `json:"presence,omitempty"`
}

// DecodeCommand decodes and validates one command. Every failure is a
// *notify.Error with code invalid_command (or invalid_channel/invalid_event
// for bad names), whose message says what is wrong; the ref is returned when
// it could be read, so the error can echo it.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return c, notify.Errorf(notify.ErrInvalidCommand, "a command is a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return Command{}, notify.Errorf(notify.ErrInvalidCommand, "malformed command: %v", err)
	}
	if dec.More() {
		return Command{}, notify.Errorf(notify.ErrInvalidCommand, "one command per line")
	}
	if len(c.Ref) > MaxRefLen {
		c.Ref = ""
		return c, notify.Errorf(notify.ErrInvalidCommand, "ref is longer than %d bytes", MaxRefLen)
	}
	switch c.Type {
	case CmdSubscribe, CmdUnsubscribe, CmdPublish:
		if err := notify.ValidateChannel(c.Channel); err != nil {
			return c, err
		}
	case CmdPing:
	case CmdRefresh:
		if c.Token == "" {
			return c, notify.Errorf(notify.ErrInvalidCommand, "refresh without a token")
		}
	case "":
		return c, notify.Errorf(notify.ErrInvalidCommand, "command has no type")
	default:
		return c, notify.Errorf(notify.ErrInvalidCommand, "unknown command type %q", truncate(c.Type))
	}
	if c.Type == CmdPublish {
		if err := notify.ValidateEvent(c.Event); err != nil {
			return c, err
		}
	}
	return c, nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
