package notify_test

import (
	"encoding/json"
	"errors"
	"math"
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
	n, err := p.Normalize(0)
	if err != nil || string(n.Data) != `{"x":[1,2]}` || n.Channel != "a" {
		t.Fatalf("Normalize = %+v, %v", n, err)
	}
	if !n.Normalized() || p.Normalized() || string(p.Data) != "{\n  \"x\": [1, 2]\n}" {
		t.Fatalf("Normalized: result %v, input %v (input data now %q)", n.Normalized(), p.Normalized(), p.Data)
	}
	p.Data = nil
	if n, err := p.Normalize(0); err != nil || string(n.Data) != "null" || !n.Normalized() {
		t.Fatalf("empty data: %+v, %v", n, err)
	}
	p.Data = json.RawMessage(`"12345"`)
	if _, err := p.Normalize(5); !errors.Is(err, notify.ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
}

// TestNormalizeTrustsItsResult: normalizing a normalized publication does
// nothing but check its size; changing any field drops the mark.
func TestNormalizeTrustsItsResult(t *testing.T) {
	n, err := notify.Publication{Channel: "a", Event: "e", Data: json.RawMessage(`{"x": 1}`)}.Normalize(0)
	if err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		if m, err := n.Normalize(0); err != nil || !m.Normalized() {
			t.Fatalf("again: %+v, %v", m, err)
		}
	}); allocs != 0 {
		t.Fatalf("normalizing a normalized publication allocates %v times; want 0 (no second compaction)", allocs)
	}
	if _, err := n.Normalize(4); !errors.Is(err, notify.ErrTooLarge) {
		t.Fatalf("normalized, against a smaller limit: %v; want too_large", err)
	}
	for name, change := range map[string]func(p *notify.Publication){
		"channel":      func(p *notify.Publication) { p.Channel = "b" },
		"event":        func(p *notify.Publication) { p.Event = "f" },
		"data":         func(p *notify.Publication) { p.Data = json.RawMessage(`{"x":1}`) },
		"shorter data": func(p *notify.Publication) { p.Data = p.Data[:3] },
	} {
		c := n
		change(&c)
		if c.Normalized() {
			t.Errorf("changed %s: still Normalized", name)
		}
	}
	same := n
	same.Channel = strings.Clone("a") // equal, in other memory
	if !same.Normalized() {
		t.Error("an equal channel name dropped the mark")
	}
}

func TestNormalizeBatch(t *testing.T) {
	raw := []notify.Publication{
		{Channel: "a", Data: json.RawMessage(`[1, 2]`)},
		{Channel: "b", Data: json.RawMessage(` 3 `)},
	}
	out, err := notify.NormalizeBatch(raw, 0)
	if err != nil || len(out) != 2 || string(out[0].Data) != "[1,2]" || string(out[1].Data) != "3" || !out[0].Normalized() || !out[1].Normalized() {
		t.Fatalf("NormalizeBatch = %+v, %v", out, err)
	}
	if string(raw[0].Data) != "[1, 2]" || raw[0].Normalized() {
		t.Fatalf("NormalizeBatch modified its input: %+v", raw[0])
	}
	again, err := notify.NormalizeBatch(out, 0)
	if err != nil || &again[0] != &out[0] {
		t.Fatalf("a normalized batch was copied (%v)", err)
	}
	mixed := []notify.Publication{out[0], raw[1]}
	if got, err := notify.NormalizeBatch(mixed, 0); err != nil || &got[0] == &mixed[0] || string(got[1].Data) != "3" || string(mixed[1].Data) != " 3 " {
		t.Fatalf("mixed batch: %+v, %v (input %+v)", got, err, mixed)
	}
	bad := []notify.Publication{raw[0], {Channel: "c", Data: json.RawMessage(`nope`)}}
	if _, err := notify.NormalizeBatch(bad, 0); !errors.Is(err, notify.ErrInvalidData) || !strings.Contains(err.Error(), "message 1:") {
		t.Fatalf("invalid second message: %v; want invalid_data naming message 1", err)
	}
}

// TestNewMessageEncodesOnce: a message's encoding is allocated once, even
// with the longest IDs and timestamps (a real ID has 13-digit milliseconds,
// which overflowed the old estimate and made every message allocate its
// encoding twice).
func TestNewMessageEncodesOnce(t *testing.T) {
	data := []byte(`{"order":12345,"status":"shipped"}`)
	for _, id := range []notify.ID{{Ms: 1700000000000, Seq: 3}, {Ms: math.MaxUint64, Seq: math.MaxUint64}} {
		allocs := testing.AllocsPerRun(100, func() { notify.NewMessage("user:42", id, "order.shipped", data) })
		if allocs != 2 {
			t.Errorf("NewMessage with ID %v: %v allocations; want 2 (the envelope and its encoding)", id, allocs)
		}
	}
}
