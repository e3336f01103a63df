package ws_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// Tests of a raw client that sends its first frames early — in the same
// write as its upgrade request, split anywhere, or the moment the response
// arrives — when net/http has read them ahead of the hijack.

// rawServer starts a WebSocket server whose users come from ?user= and
// returns its host:port.
func rawServer(t testing.TB) string {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	h := notify.NewHub(b, notify.HubConfig{MaxConnsPerUser: -1})
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	d := transport{}.Start(t, wire.Config{Hub: h, Auth: userFromQuery}).(dialer)
	u, err := url.Parse(d.url)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// RFC 6455's sample key and its accept value.
const (
	wsKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	wsAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

func upgradeRequest(host, user string) []byte {
	return []byte("GET /v1/ws?user=" + user + " HTTP/1.1\r\n" +
		"Host: " + host + "\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + wsKey + "\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: herald.v1\r\n\r\n")
}

// clientFrame is payload as one masked text frame.
func clientFrame(payload string) []byte {
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f := []byte{0x81} // FIN, text
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	f = append(f, mask[:]...)
	for i := range len(payload) {
		f = append(f, payload[i]^mask[i%4])
	}
	return f
}

func subscribeCmd(channel, ref string) string {
	return `{"type":"subscribe","channel":"` + channel + `","ref":"` + ref + `"}`
}

func pingCmd(ref string) string { return `{"type":"ping","ref":"` + ref + `"}` }

// answer is how the tests write an expected envelope.
func answer(typ, channel, ref string) string { return typ + " " + channel + " " + ref }

// errClosed is a close frame from the server.
type errClosed struct {
	code   uint16
	reason string
}

func (e errClosed) Error() string { return fmt.Sprintf("server closed %d %q", e.code, e.reason) }

// protocolError reports whether err is the server closing with 1002.
func protocolError(err error) bool {
	var c errClosed
	return errors.As(err, &c) && c.code == 1002
}

// readUpgrade reads and checks the upgrade response.
func readUpgrade(br *bufio.Reader) error {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("reading the upgrade response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept {
		return fmt.Errorf("upgrade response %s, Sec-WebSocket-Accept %q", resp.Status, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	return nil
}

// readAnswers reads the server's envelopes until it has n of them, and
// returns them as answer writes them.
func readAnswers(br *bufio.Reader, n int) ([]string, error) {
	var got []string
	for len(got) < n {
		op, payload, err := readServerFrame(br)
		if err != nil {
			return got, err
		}
		switch op {
		case 0x1: // text
		case 0x8:
			c := errClosed{}
			if len(payload) >= 2 {
				c.code, c.reason = binary.BigEndian.Uint16(payload), string(payload[2:])
			}
			return got, c
		default:
			return got, fmt.Errorf("unexpected frame, opcode %#x", op)
		}
		for line := range bytes.SplitSeq(payload, []byte("\n")) {
			e, err := notify.ParseEnvelope(line)
			if err != nil {
				return got, fmt.Errorf("envelope %q: %w", line, err)
			}
			got = append(got, answer(e.Type, e.Channel, e.Ref))
		}
	}
	return got, nil
}

// readServerFrame reads one unmasked, unfragmented server frame.
func readServerFrame(br *bufio.Reader) (opcode byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0xf0 != 0x80 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("unexpected frame header % x", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, err = io.ReadFull(br, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, err = io.ReadFull(br, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	if err != nil {
		return 0, nil, err
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// readResponseHere, among a script's chunks, is where the client reads the
// upgrade response (by default, after its last chunk).
var readResponseHere []byte

// runScript connects as user, writes the chunks with gap between them, and
// returns what the server answered after the user's own subscribed notice.
func runScript(host, user string, chunks [][]byte, gap time.Duration, answers int) ([]string, error) {
	nc, err := net.DialTimeout("tcp", host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second)) // a lost frame: no answer
	br := bufio.NewReader(nc)
	upgraded := false
	for i, c := range chunks {
		if i > 0 {
			time.Sleep(gap)
		}
		if c == nil {
			if err := readUpgrade(br); err != nil {
				return nil, err
			}
			upgraded = true
			continue
		}
		if _, err := nc.Write(c); err != nil {
			return nil, err
		}
	}
	if !upgraded {
		if err := readUpgrade(br); err != nil {
			return nil, err
		}
	}
	got, err := readAnswers(br, 1+answers)
	if len(got) > 0 {
		if got[0] != answer("subscribed", "user:"+user, "") {
			return got, fmt.Errorf("first envelope %q, want the user's subscribed notice", got[0])
		}
		got = got[1:]
	}
	return got, err
}

// pings is a frame's worth of commands, a subscribe then pings with long
// refs, of at least size bytes, and the answers to them.
func pings(size int) (string, []string) {
	lines := []string{subscribeCmd("room.1", "s")}
	want := []string{answer("subscribed", "room.1", "s")}
	for i := 0; len(strings.Join(lines, "\n")) < size; i++ {
		ref := fmt.Sprintf("%03d-%s", i, strings.Repeat("r", 56)) // 60 bytes: refs are at most 64
		lines = append(lines, pingCmd(ref))
		want = append(want, answer("pong", "", ref))
	}
	return strings.Join(lines, "\n"), want
}

// TestEarlyFrames: whatever a client sends after its upgrade request — in
// the same write, split anywhere, a byte at a time — the server reads all of
// it, in order.
func TestEarlyFrames(t *testing.T) {
	host := rawServer(t)
	sub := clientFrame(subscribeCmd("room.1", "s1"))
	subAnswer := []string{answer("subscribed", "room.1", "s1")}
	ping := clientFrame(pingCmd("p2"))
	over512, over512Answers := pings(600)
	over4K, over4KAnswers := pings(6000) // past net/http's 4 KiB read-ahead
	cases := []struct {
		name   string
		chunks func(req []byte) [][]byte
		gap    time.Duration
		want   []string
	}{
		{"frame after the response", func(req []byte) [][]byte {
			return [][]byte{req, readResponseHere, sub}
		}, 0, subAnswer},
		{"request and frame in one write", func(req []byte) [][]byte {
			return [][]byte{cat(req, sub)}
		}, 0, subAnswer},
		{"request and half a frame, then the rest", func(req []byte) [][]byte {
			return [][]byte{cat(req, sub[:len(sub)/2]), sub[len(sub)/2:]}
		}, 20 * time.Millisecond, subAnswer},
		{"request and two frames", func(req []byte) [][]byte {
			return [][]byte{cat(req, sub, ping)}
		}, 0, append(subAnswer, answer("pong", "", "p2"))},
		{"request and a frame over 512 bytes", func(req []byte) [][]byte {
			return [][]byte{cat(req, clientFrame(over512))}
		}, 0, over512Answers},
		{"request and a frame over 4 KiB", func(req []byte) [][]byte {
			return [][]byte{cat(req, clientFrame(over4K))}
		}, 0, over4KAnswers},
		{"request, then the frame byte by byte at once", func(req []byte) [][]byte {
			return bytewise(req, sub)
		}, 0, subAnswer},
		{"request, then the frame byte by byte, 2ms apart", func(req []byte) [][]byte {
			return bytewise(req, sub)
		}, 2 * time.Millisecond, subAnswer},
		{"request split, the frame's first byte glued to its end", func(req []byte) [][]byte {
			return [][]byte{req[:len(req)/2], cat(req[len(req)/2:], sub[:1]), sub[1:]}
		}, 20 * time.Millisecond, subAnswer},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			user := fmt.Sprintf("early%d", i)
			got, err := runScript(host, user, c.chunks(upgradeRequest(host, user)), c.gap, len(c.want))
			if err != nil {
				t.Fatalf("after %d of %d answers: %v", len(got), len(c.want), err)
			}
			for j := range c.want {
				if got[j] != c.want[j] {
					t.Fatalf("answer %d: %q, want %q", j, got[j], c.want[j])
				}
			}
		})
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// bytewise is req, then each byte of frame in a write of its own.
func bytewise(req, frame []byte) [][]byte {
	chunks := [][]byte{req}
	for i := range frame {
		chunks = append(chunks, frame[i:i+1])
	}
	return chunks
}
