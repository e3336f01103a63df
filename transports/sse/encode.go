package sse

import (
	"bytes"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// retryMillis is the reconnection delay the stream gives EventSource. A
// drain's reconnect advice carries its own, jittered, delay.
const retryMillis = "2000"

var (
	retryField = []byte("retry: " + retryMillis + "\n\n")
	heartbeat  = []byte(":\n")
)

// appendEvent appends e to b as one event: an id line with the connection's
// cursor when e moves a position (pos is updated), then e's JSON as data.
// It does not allocate for messages made by notify.NewMessage.
func appendEvent(b []byte, e *notify.Envelope, pos *wire.Positions) []byte {
	if pos.Update(e) {
		b = append(b, "id: "...)
		b = pos.AppendCursor(b)
		b = append(b, '\n')
	}
	start := len(b)
	b = append(b, "data: "...)
	if e.Type == notify.TypeMessage {
		b = append(b, e.JSON()...) // the hub's encoding, shared by every connection
	} else {
		b = e.AppendJSON(b) // notices are per connection: encode in place
	}
	if bytes.IndexByte(b[start:], '\n') >= 0 || bytes.IndexByte(b[start:], '\r') >= 0 {
		b = splitData(b, start)
	}
	return append(b, '\n', '\n')
}

// splitData rewrites the data line that starts at b[start:] as one data
// line per line of its value. Envelopes are single lines when their data
// went through Publication.Normalize, but a Redis broker reads data that
// any Redis client may have written: a raw line break there must not end
// the event early or forge an id line. The client joins the lines with
// "\n", which JSON reads as the whitespace it was.
func splitData(b []byte, start int) []byte {
	value := bytes.Clone(b[start+len("data: "):])
	b = b[:start]
	for {
		i := bytes.IndexAny(value, "\r\n")
		if i < 0 {
			break
		}
		b = append(append(b, "data: "...), value[:i]...)
		b = append(b, '\n')
		if value[i] == '\r' && i+1 < len(value) && value[i+1] == '\n' {
			i++
		}
		value = value[i+1:]
	}
	return append(append(b, "data: "...), value...)
}
