package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// benchEnvelope is a typical message envelope as herald bench receives it.
var benchEnvelope = []byte(`{"type":"message","channel":"news","id":"1795757752428-2","event":"e","data":{"n":1,"t":17957577},"ts":1795757752428}`)

// sentEnvelopes are envelopes of every type, as servers encode them.
func sentEnvelopes() []*Envelope {
	return []*Envelope{
		NewMessage("news", ID{Ms: 1795757752428, Seq: 2}, "e", []byte(`{"n":1,"t":17957577}`)),
		NewMessage("user:42", ID{Ms: 1700000000000}, "order.shipped", []byte(`[1,"two",{"3":null},true,false,-4.5e+6]`)),
		NewMessage("ünïcode/頻道", ID{Ms: 1, Seq: 1}, "évènement", []byte(`"a string\n\u00e9 \"q\""`)),
		{Type: TypeSubscribed, Channel: "news"}, // id "0-0"
		{Type: TypeSubscribed, Channel: "news", ID: ID{Ms: 1795757752428, Seq: 7}, Ref: "r1"},
		{Type: TypeUnsubscribed, Channel: "news", Ref: "7"},
		{Type: TypeGap, Channel: "news", ID: ID{Ms: 20, Seq: 1}, Since: ID{Ms: 10, Seq: 3}},
		{Type: TypeAck, Ref: "42"},
		ErrorEnvelope(ErrNotSubscribed, "r2"),
		ErrorEnvelope(fmt.Errorf("boom\n\"quoted\"\u2028 \xff"), "r\t1"),
		{Type: TypePong, Ref: "p"},
		{Type: TypePong},
		{Type: TypeReconnect, Code: "shutdown", Delay: 1500},
		{Type: "future-type", Channel: "c", TS: -1, Delay: -9223372036854775808},
		NewPresence(PresenceDiff{Channel: "room.1", Count: 2, Joins: []Member{{User: "42", Conn: "c1"}}, Leaves: []Member{{User: "q\"x", Conn: "c0"}}}),
		{Type: TypeSubscribed, Channel: "room.1", ID: ID{Ms: 9}, Presence: AppendPresencePage(nil, PresencePage{Count: 1, Members: []Member{{User: "7", Conn: "c"}}, Next: "n"})},
		{Type: "future-type", Data: []byte(`[1]`), Presence: []byte(`{"count":0}`)},
	}
}

// trickyEnvelopes are inputs on the edges of what the fast decoder handles,
// for the table test and as fuzz seeds.
var trickyEnvelopes = []string{
	// whitespace
	" \t\r\n{ \"type\" : \"pong\" , \"ref\" :\t\"x\" }\n ",
	"{\"type\":\"pong\"}\v",
	"\u00a0{\"type\":\"pong\"}",
	// keys: case variants, escapes, Unicode folds, unknown, empty
	`{"TYPE":"pong"}`,
	`{"type":"pong","Channel":"c"}`,
	`{"type":"pong","channel":"a","CHANNEL":"b"}`,
	`{"type":"pong","ſince":"1-1"}`,
	`{"type":"pong","\u0063hannel":"c"}`,
	`{"type":"pong","unknown":{"a":[1,2,{"b":null}]},"":0,"x":"\ud800"}`,
	`{"type":"pong","types":"x","channelx":1}`,
	`{"type":"pong","é":1}`,
	// duplicate keys: the last wins
	`{"type":"message","type":"pong"}`,
	`{"type":"pong","id":"bad","id":"1-1"}`,
	`{"type":"pong","id":"1-1","id":null,"since":"1-1","since":null,"ref":"r","ref":null,"data":1,"data":null,"delay":1,"delay":null}`,
	`{"type":"pong","id":"1-1","id":""}`,
	`{"type":"pong","data":{"a":1},"data":[2]}`,
	`{"type":"presence","presence":{"count":1},"presence":null}`,
	`{"type":"presence","Presence":{"count":1}}`,
	`{"type":"presence","presence":[1,{"a":"\u00e9"}],"data":"x"}`,
	`{"type":"pong","ts":1,"ts":2}`,
	// null
	`{"type":"pong","channel":"c","channel":null}`,
	`{"type":"pong","ts":5,"ts":null}`,
	`{"type":"pong","data":null}`,
	`{"type":null}`,
	`null`,
	`{"type":"pong","id":null,"since":null,"delay":null}`,
	// strings
	`{"type":"pong","message":"esc\"aped\n"}`,
	`{"type":"pong","message":"\u00e9"}`,
	`{"type":"pong","message":"é 頻道 😀"}`,
	"{\"type\":\"pong\",\"message\":\"bad \xff utf8\"}",
	"{\"type\":\"pong\",\"message\":\"surrogate \xed\xa0\x80\"}",
	"{\"type\":\"pong\",\"message\":\"ctl \x01\"}",
	"{\"type\":\"pong\",\"x\":\"bad \xff utf8 in an ignored value\"}",
	"{\"type\":\"pong\",\"data\":\"bad \xff utf8 in data\"}",
	`{"type":""}`,
	`{"type":"pong","channel":""}`,
	`{"type":1}`,
	`{"type":"pong","channel":["c"]}`,
	`{"type":"pong","x":"\x"}`,
	`{"type":"pong","x":"\u12"}`,
	// numbers
	`{"type":"pong","ts":9223372036854775807,"delay":-9223372036854775808}`,
	`{"type":"pong","ts":9223372036854775808}`,
	`{"type":"pong","delay":-9223372036854775809}`,
	`{"type":"pong","ts":12345678901234567890123}`,
	`{"type":"pong","ts":40000000000000000000}`, // 20 digits, 3106511852580896768 modulo 2^64
	`{"type":"pong","delay":-40000000000000000000}`,
	`{"type":"pong","ts":1e3}`,
	`{"type":"pong","ts":1.0}`,
	`{"type":"pong","ts":-0}`,
	`{"type":"pong","ts":01}`,
	`{"type":"pong","ts":-}`,
	`{"type":"pong","ts":"1"}`,
	`{"type":"pong","ts":true}`,
	`{"type":"pong","x":-0.5E-07,"y":1e+2}`,
	`{"type":"pong","x":1.}`,
	`{"type":"pong","x":.5}`,
	`{"type":"pong","x":+1}`,
	// data
	`{"type":"pong","data": { "a" : [ 1 , "x" ] } }`,
	`{"type":"pong","data":"str"}`,
	`{"type":"pong","data":-1.5e3}`,
	`{"type":"pong","data":true}`,
	`{"type":"pong","data":[]}`,
	`{"type":"pong","data":{"a":}}`,
	`{"type":"pong","data":nul}`,
	`{"type":"pong","data":truex}`,
	`{"type":"pong","data":[1,]}`,
	`{"type":"pong","data":{"a":1,}}`,
	`{"type":"pong","data":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`,
	`{"type":"pong","data":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	// ids
	`{"type":"gap","id":"1-0","since":"0-1"}`,
	`{"type":"pong","id":"1"}`,
	`{"type":"pong","id":"-1"}`,
	`{"type":"pong","id":"1-"}`,
	`{"type":"pong","id":"1-2-3"}`,
	`{"type":"pong","id":"18446744073709551615-18446744073709551615"}`,
	`{"type":"pong","id":"18446744073709551616-0"}`,
	`{"type":"pong","id":"00000000000000000000000000000000000001-1"}`,
	`{"type":"pong","since":"x-1"}`,
	// structure, truncation, trailing bytes
	``,
	` `,
	`{}`,
	`[]`,
	`"pong"`,
	`{"type":"pong"`,
	`{"type":"pong",}`,
	`{"type":"pong"}}`,
	`{"type":"pong"} x`,
	`{"type":"pong"}{}`,
	`{"type" "pong"}`,
	`{"type":"pong" "ref":"r"}`,
	`{"type":"message","channel":"news","id":"1795757752428-2","event":"e","data":{"n":1,"t":1795`,
}

func TestParseEnvelopeTricky(t *testing.T) {
	for _, s := range trickyEnvelopes {
		checkParseEnvelope(t, []byte(s))
	}
}

// TestParseEnvelopeSent: the envelopes servers send decode back to
// themselves, by the fast decoder unless their strings needed escapes.
func TestParseEnvelopeSent(t *testing.T) {
	for _, sent := range sentEnvelopes() {
		b := sent.JSON()
		checkParseEnvelope(t, b)
		escaped := false
		for _, s := range []string{sent.Type, sent.Channel, sent.Event, sent.Ref, sent.Code, sent.Message} {
			escaped = escaped || string(appendString(nil, s)) != `"`+s+`"`
		}
		e, ok := parseEnvelopeFast(b)
		if ok == escaped {
			t.Errorf("%s: decoded by the fast decoder: %v; want %v", b, ok, !escaped)
		}
		if !ok {
			continue
		}
		want := *sent
		want.raw = nil
		if d := envelopeDiff(e, &want); d != "" {
			t.Errorf("%s: %s", b, d)
		}
	}
}

// TestParseEnvelopeCases pins what ParseEnvelope makes of the tricky cases,
// and which of them the fast decoder handles itself.
func TestParseEnvelopeCases(t *testing.T) {
	for _, c := range []struct {
		in   string
		want *Envelope // nil: an error
		fast bool      // decoded by parseEnvelopeFast
	}{
		{" \t\r\n{ \"type\" : \"pong\" , \"ref\" :\t\"x\" }\n ", &Envelope{Type: TypePong, Ref: "x"}, true},
		{`{"type":"future","channel":"c"}`, &Envelope{Type: "future", Channel: "c"}, true},
		{`{"TYPE":"pong"}`, &Envelope{Type: TypePong}, false},
		{`{"type":"pong","Channel":"c"}`, &Envelope{Type: TypePong, Channel: "c"}, false},
		{`{"type":"pong","channel":"a","CHANNEL":"b"}`, &Envelope{Type: TypePong, Channel: "b"}, false},
		{`{"type":"pong","ſince":"1-1"}`, &Envelope{Type: TypePong, Since: ID{1, 1}}, false},
		{`{"type":"pong","\u0063hannel":"c"}`, &Envelope{Type: TypePong, Channel: "c"}, false},
		{`{"type":"pong","types":"x","channelx":1,"":[{"a":null}]}`, &Envelope{Type: TypePong}, true},
		{`{"type":"message","type":"pong"}`, &Envelope{Type: TypePong}, true},
		{`{"type":"pong","id":"bad","id":"1-1"}`, &Envelope{Type: TypePong, ID: ID{1, 1}}, true},
		{`{"type":"pong","id":"1-1","id":""}`, &Envelope{Type: TypePong}, true},
		{`{"type":"pong","data":{"a":1},"data":[2]}`, &Envelope{Type: TypePong, Data: []byte(`[2]`)}, true},
		{`{"type":"pong","channel":"c","channel":null,"ts":5,"ts":null}`, &Envelope{Type: TypePong, Channel: "c", TS: 5}, true},
		{`{"type":"pong","data":null}`, &Envelope{Type: TypePong, Data: []byte(`null`)}, true},
		{`{"type":"pong","data": { "a" : [ 1 , "x\"" ] } }`, &Envelope{Type: TypePong, Data: []byte(`{ "a" : [ 1 , "x\"" ] }`)}, true},
		{"{\"type\":\"pong\",\"data\":\"\xff\"}", &Envelope{Type: TypePong, Data: []byte("\"\xff\"")}, true},
		{`{"type":"pong","message":"é 頻道 😀"}`, &Envelope{Type: TypePong, Message: "é 頻道 😀"}, true},
		{`{"type":"pong","message":"esc\"aped\n"}`, &Envelope{Type: TypePong, Message: "esc\"aped\n"}, false},
		{"{\"type\":\"pong\",\"message\":\"bad \xff\"}", &Envelope{Type: TypePong, Message: "bad \uFFFD"}, false},
		{`{"type":"pong","ts":9223372036854775807,"delay":-9223372036854775808}`, &Envelope{Type: TypePong, TS: 9223372036854775807, Delay: -9223372036854775808}, true},
		{`{"type":"pong","ts":-0}`, &Envelope{Type: TypePong}, true},
		{`{"type":"pong","ts":9223372036854775808}`, nil, false},
		{`{"type":"pong","ts":40000000000000000000}`, nil, false},
		{`{"type":"pong","ts":1e3}`, nil, false},
		{`{"type":"pong","ts":1.0}`, nil, false},
		{`{"type":"pong","ts":"1"}`, nil, false},
		{`{"type":"pong","ts":01}`, nil, false},
		{`{"type":1}`, nil, false},
		{`{"type":null}`, nil, false},
		{`{}`, nil, false},
		{`null`, nil, false},
		{``, nil, false},
		{`{"type":"pong","data":{"a":}}`, nil, false},
		{`{"type":"pong","data":[1,]}`, nil, false},
		{"{\"type\":\"pong\",\"message\":\"ctl \x01\"}", nil, false},
		{`{"type":"pong","id":"1"}`, nil, false},
		{`{"type":"pong","id":"18446744073709551616-0"}`, nil, false},
		{`{"type":"pong"} x`, nil, false},
		{`{"type":"pong"`, nil, false},
	} {
		got, err := ParseEnvelope([]byte(c.in))
		switch {
		case c.want == nil && err == nil:
			t.Errorf("%s: got %+v; want an error", c.in, got)
		case c.want != nil && err != nil:
			t.Errorf("%s: %v", c.in, err)
		case c.want != nil:
			if d := envelopeDiff(got, c.want); d != "" {
				t.Errorf("%s: %s", c.in, d)
			}
		}
		if _, ok := parseEnvelopeFast([]byte(c.in)); ok != c.fast {
			t.Errorf("%s: decoded by the fast decoder: %v; want %v", c.in, ok, c.fast)
		}
		checkParseEnvelope(t, []byte(c.in))
	}
}

// TestParseEnvelopeErrors: malformed envelopes fail with the error of
// encoding/json, prefixed; invalid positions with ParseID's error.
func TestParseEnvelopeErrors(t *testing.T) {
	for _, in := range []string{`{"type":"pong"`, `{"type":"pong","ts":1.5}`, `{"type":"pong","data":{"a":1,}}`, `{"type":"pong"} x`} {
		want := json.Unmarshal([]byte(in), new(wireEnvelope))
		_, err := ParseEnvelope([]byte(in))
		if want == nil || err == nil || err.Error() != "notify: malformed envelope: "+want.Error() {
			t.Errorf("%s: error %v; want encoding/json's %v, prefixed", in, err, want)
		}
	}
	if _, err := ParseEnvelope([]byte(`{}`)); err == nil || err.Error() != "notify: envelope without a type" {
		t.Errorf("{}: error %v", err)
	}
	_, err := ParseEnvelope([]byte(`{"type":"pong","id":"x"}`))
	if _, want := ParseID("x"); !errors.Is(err, ErrInvalidPosition) || err.Error() != want.Error() {
		t.Errorf("invalid id: error %v; want %v", err, want)
	}
}

func TestParseIDBytes(t *testing.T) {
	for _, s := range []string{"0-0", "1-2", "007-1", "18446744073709551615-18446744073709551615", "18446744073709551616-0", "0-18446744073709551616",
		"40000000000000000000-0", "0-40000000000000000000", "00000000000000000000000000000000000001-1",
		"", "-", "1", "1-", "-1", "1-2-3", "a-1", "1-a", " 1-1", "+1-1", "1-+1", "1-1 ", strings.Repeat("0", 39) + "1-1", strings.Repeat("0", 38) + "1-1"} {
		checkParseIDBytes(t, []byte(s))
	}
}

func checkParseIDBytes(t *testing.T, b []byte) {
	got, ok := parseIDBytes(b)
	want, err := ParseID(string(b))
	if ok != (err == nil) || got != want {
		t.Errorf("parseIDBytes(%q) = %v, %v; ParseID: %v, %v", b, got, ok, want, err)
	}
}

// checkParseEnvelope checks ParseEnvelope and, where it decodes b, the fast
// decoder against the encoding/json reference.
func checkParseEnvelope(t *testing.T, b []byte) {
	t.Helper()
	in := bytes.Clone(b)
	want, wantErr := parseEnvelopeJSON(in)

	if fast, ok := parseEnvelopeFast(in); ok {
		if wantErr != nil {
			t.Fatalf("%q: fast decoder: %+v; encoding/json: %v", b, fast, wantErr)
		}
		if d := envelopeDiff(fast, want); d != "" {
			t.Fatalf("%q: fast decoder and encoding/json differ: %s", b, d)
		}
	}

	got, err := ParseEnvelope(in)
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("%q: ParseEnvelope: %+v, %v; encoding/json: %+v, %v", b, got, err, want, wantErr)
	case err != nil:
		if err.Error() != wantErr.Error() {
			t.Fatalf("%q: ParseEnvelope error %q; encoding/json: %q", b, err, wantErr)
		}
		return
	}
	if d := envelopeDiff(got, want); d != "" {
		t.Fatalf("%q: ParseEnvelope and encoding/json differ: %s", b, d)
	}
	// The envelope owns its memory: callers reuse their read buffers.
	for i := range in {
		in[i] = '#'
	}
	if !bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Presence, want.Presence) {
		t.Fatalf("%q: the envelope's data or presence shares the input's memory", b)
	}
}

// envelopeDiff describes how got differs from want, or returns "".
func envelopeDiff(got, want *Envelope) string {
	var d []string
	field := func(name string, g, w any) {
		if g != w {
			d = append(d, fmt.Sprintf("%s %#v, want %#v", name, g, w))
		}
	}
	field("Type", got.Type, want.Type)
	field("Channel", got.Channel, want.Channel)
	field("ID", got.ID, want.ID)
	field("Event", got.Event, want.Event)
	field("TS", got.TS, want.TS)
	field("Since", got.Since, want.Since)
	field("Ref", got.Ref, want.Ref)
	field("Code", got.Code, want.Code)
	field("Message", got.Message, want.Message)
	field("Delay", got.Delay, want.Delay)
	if !bytes.Equal(got.Data, want.Data) || (got.Data == nil) != (want.Data == nil) {
		d = append(d, fmt.Sprintf("Data %q (nil: %t), want %q (nil: %t)", got.Data, got.Data == nil, want.Data, want.Data == nil))
	}
	if !bytes.Equal(got.Presence, want.Presence) || (got.Presence == nil) != (want.Presence == nil) {
		d = append(d, fmt.Sprintf("Presence %q (nil: %t), want %q (nil: %t)", got.Presence, got.Presence == nil, want.Presence, want.Presence == nil))
	}
	if got.raw != nil {
		d = append(d, "raw set")
	}
	return strings.Join(d, "; ")
}

// FuzzParseEnvelopeMatchesEncodingJSON checks on arbitrary input that
// ParseEnvelope, and the fast decoder wherever it decodes, agree with the
// encoding/json reference: the same envelope or the same error.
func FuzzParseEnvelopeMatchesEncodingJSON(f *testing.F) {
	f.Add(benchEnvelope)
	for _, e := range sentEnvelopes() {
		b := e.JSON()
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(bytes.ToUpper(b))
	}
	for _, s := range trickyEnvelopes {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkParseEnvelope(t, b)
		checkParseIDBytes(t, b)
	})
}

func BenchmarkParseEnvelope(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchEnvelope)))
	for b.Loop() {
		if _, err := ParseEnvelope(benchEnvelope); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseEnvelopeJSON is the encoding/json reference, for comparison.
func BenchmarkParseEnvelopeJSON(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchEnvelope)))
	for b.Loop() {
		if _, err := parseEnvelopeJSON(benchEnvelope); err != nil {
			b.Fatal(err)
		}
	}
}
