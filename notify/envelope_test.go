package notify_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/heraldhq/herald/notify"
)

func TestEnvelopeJSON(t *testing.T) {
	m := notify.NewMessage("user:42", notify.ID{Ms: 1700000000000, Seq: 3}, "order.shipped", []byte(`{"a":1}`))
	want := `{"type":"message","channel":"user:42","id":"1700000000000-3","event":"order.shipped","data":{"a":1},"ts":1700000000000}`
	if got := string(m.JSON()); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	e := notify.ErrorEnvelope(errors.New("boom\n\"quoted\"\u2028"), "r\t1")
	var back map[string]any
	if err := json.Unmarshal(e.JSON(), &back); err != nil {
		t.Fatalf("error envelope is not JSON: %s: %v", e.JSON(), err)
	}
	if strings.ContainsAny(string(e.JSON()), "\n\u2028") {
		t.Fatalf("envelope carries a raw line break: %q", e.JSON())
	}
	if back["ref"] != "r\t1" || back["code"] != "internal" {
		t.Fatalf("decoded %v", back)
	}
	e = notify.ErrorEnvelope(notify.ErrTooManyChannels, "")
	if e.Code != "too_many_channels" {
		t.Fatalf("code %q", e.Code)
	}
}

func TestParseID(t *testing.T) {
	good := map[string]notify.ID{"0-0": {}, "1700000000000-12": {Ms: 1700000000000, Seq: 12}}
	for s, want := range good {
		got, err := notify.ParseID(s)
		if err != nil || got != want || got.String() != s {
			t.Errorf("ParseID(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "-", "1", "1-", "-1", "+1-1", "1-+1", " 1-1", "1-1 ", "a-b", "1-2-3", "99999999999999999999-0", strings.Repeat("1", 50)} {
		if _, err := notify.ParseID(s); !errors.Is(err, notify.ErrInvalidPosition) {
			t.Errorf("ParseID(%q): err = %v; want invalid_position", s, err)
		}
	}
}

// The envelope encoder must produce JSON that encoding/json reads back to the
// same strings, whatever bytes a client put in a ref or an error message.
func FuzzEnvelopeJSON(f *testing.F) {
	f.Add("ref", "message", "room.1")
	f.Add("\x00\x1f\"\\", "\xff\xfe", "a")
	f.Add("\u2028\u2029", "<script>", "user:1")
	f.Fuzz(func(t *testing.T, ref, msg, channel string) {
		e := &notify.Envelope{Type: notify.TypeError, Channel: channel, Ref: ref, Message: msg, Code: "x"}
		raw := e.JSON()
		var back struct{ Type, Channel, Ref, Message, Code string }
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatalf("invalid JSON %q: %v", raw, err)
		}
		if strings.ContainsAny(string(raw), "\n\r") {
			t.Fatalf("raw newline in %q", raw)
		}
		if utf8.ValidString(ref) && back.Ref != ref {
			t.Fatalf("ref %q came back as %q", ref, back.Ref)
		}
		if utf8.ValidString(msg) && back.Message != msg {
			t.Fatalf("message %q came back as %q", msg, back.Message)
		}
	})
}

func TestNormalize(t *testing.T) {
	p := notify.Publication{Channel: "a", Data: json.RawMessage("{\n  \"x\": [1, 2]\n}")}
	d, err := p.Normalize(0)
	if err != nil || string(d) != `{"x":[1,2]}` {
		t.Fatalf("Normalize = %s, %v", d, err)
	}
	p.Data = nil
	if d, err := p.Normalize(0); err != nil || string(d) != "null" {
		t.Fatalf("empty data: %s, %v", d, err)
	}
	p.Data = json.RawMessage(`"12345"`)
	if _, err := p.Normalize(5); !errors.Is(err, notify.ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
}
