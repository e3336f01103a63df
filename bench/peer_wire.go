package bench

import (
	"bytes"
	"strconv"
	"time"
)

// The peer bench's payload: the same bytes, published through each
// server's HTTP API and carried by each server's own envelope
// ({"type":"message",…,"data":PAYLOAD} for Herald,
// {"push":{"channel":…,"pub":{"data":PAYLOAD,…}}} for Centrifugo):
//
//	{"w":3,"s":12345,"t":1733230000000000000,"p":"xxxx…"}
//
// w is the publisher (a worker that publishes one request at a time, so
// its messages reach every subscriber in its own order), s its sequence
// number from 1, t the publish time (closed loop) or the scheduled time
// (open loop) in Unix nanoseconds, and p padding to peerPayloadSize bytes.
const peerPayloadSize = 100

// appendPeerPayload appends the payload of publisher w's message seq
// stamped t, padded to exactly peerPayloadSize bytes (shorter only if the
// fields alone are longer).
func appendPeerPayload(b []byte, w int, seq int64, t time.Time) []byte {
	start := len(b)
	b = append(b, `{"w":`...)
	b = strconv.AppendInt(b, int64(w), 10)
	b = append(b, `,"s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t.UnixNano(), 10)
	b = append(b, `,"p":"`...)
	for len(b)-start < peerPayloadSize-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// peerDelivery is what a subscriber takes from one message.
type peerDelivery struct {
	worker int
	seq    int64
	sentNs int64
}

var dataKey = []byte(`"data":`)

// parsePeerMessage finds the payload in one server message (a Herald
// envelope or a Centrifugo push: the same code for both) and reads its
// fields without reflection. ok is false for anything else: replies,
// notices, probes.
func parsePeerMessage(msg []byte) (d peerDelivery, ok bool) {
	i := bytes.Index(msg, dataKey)
	if i < 0 {
		return d, false
	}
	b := msg[i+len(dataKey):]
	w, b, ok := peerField(b, `{"w":`)
	if !ok {
		return d, false
	}
	d.worker = int(w)
	if d.seq, b, ok = peerField(b, `,"s":`); !ok {
		return d, false
	}
	d.sentNs, _, ok = peerField(b, `,"t":`)
	return d, ok
}

// peerField reads the non-negative integer after prefix at the start of b.
func peerField(b []byte, prefix string) (int64, []byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0, b, false
	}
	b = b[len(prefix):]
	var n int64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && i < 19; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	if i == 0 {
		return 0, b, false
	}
	return n, b[i:], true
}

// peerProbe is the data of the messages that tell a subscriber is
// subscribed end to end; parsePeerMessage rejects it.
const peerProbe = `{"probe":1}`

var probeKey = []byte(`"data":{"probe":1}`)

// isProbe reports whether msg carries peerProbe.
func isProbe(msg []byte) bool { return bytes.Contains(msg, probeKey) }

// isCentrifugoPing reports whether msg is Centrifugo's application ping,
// an empty JSON object, which the client must answer with one (else the
// server closes the connection after its pong timeout).
func isCentrifugoPing(msg []byte) bool {
	t := bytes.TrimSpace(msg)
	return len(t) == 2 && t[0] == '{' && t[1] == '}'
}

// splitFrame calls fn for each newline-separated message of a WebSocket
// frame: both servers coalesce several messages into one frame.
func splitFrame(frame []byte, fn func(msg []byte)) {
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		if len(line) > 0 {
			fn(line)
		}
	}
}
