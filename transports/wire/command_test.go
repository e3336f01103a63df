package wire

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/heraldhq/herald/notify"
)

// FuzzDecodeCommand: any input either decodes to a valid command or fails
// with a protocol error; it never panics, and what decodes re-encodes to an
// equivalent command.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"type":"subscribe","channel":"news","since":"1-0","ref":"1"}`,
		`{"type":"publish","channel":"room.1","event":"chat","data":{"a":[1,2]}}`,
		`{"type":"ping"}`, `{"type":`, `[]`, `{"type":"subscribe","channel":"a b"}`, "\x00", `{"type":"ping","ref":"` + string(make([]byte, 80)) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			var pe *notify.Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a protocol error", err)
			}
			return
		}
		if len(c.Ref) > MaxRefLen {
			t.Fatalf("accepted a ref of %d bytes", len(c.Ref))
		}
		re, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := DecodeCommand(re)
		if err != nil || c2.Type != c.Type || c2.Channel != c.Channel || c2.Since != c.Since || c2.Ref != c.Ref {
			t.Fatalf("%q decoded to %+v, re-encoded %s, decoded again to %+v, %v", b, c, re, c2, err)
		}
	})
}

func TestTokenSources(t *testing.T) {
	r := httptest.NewRequest("GET", "/v1/ws?token=q", nil)
	r.Header.Set("Authorization", "Bearer h")
	if Token(r) != "q" {
		t.Fatal("query token should win")
	}
	r = httptest.NewRequest("GET", "/v1/ws", nil)
	r.Header.Set("Authorization", "bearer  h ")
	if Token(r) != "h" {
		t.Fatalf("bearer: %q", Token(r))
	}
	r = httptest.NewRequest("GET", "/v1/ws", nil)
	r.Header.Set("Sec-WebSocket-Protocol", "herald.v1, herald.token.abc.def")
	if Token(r) != "abc.def" {
		t.Fatalf("subprotocol: %q", Token(r))
	}
	if Token(httptest.NewRequest("GET", "/", nil)) != "" {
		t.Fatal("no token expected")
	}
}

func TestParseCursor(t *testing.T) {
	chans := []string{"user:1", "news"}
	cur, err := ParseCursor("news=5-1;user:1=4-0", chans)
	if err != nil || cur["news"] != "5-1" || cur["user:1"] != "4-0" {
		t.Fatalf("%v %v", cur, err)
	}
	for _, bad := range []string{"5-1", "x=1-0", "news=1", "news", "news=1-0;;", "news=1-0;user:1"} {
		if _, err := ParseCursor(bad, chans); !errors.Is(err, notify.ErrInvalidPosition) {
			t.Errorf("ParseCursor(%q): %v", bad, err)
		}
	}
	if cur, err := ParseCursor("7-0", []string{"news"}); err != nil || cur["news"] != "7-0" {
		t.Fatalf("bare: %v %v", cur, err)
	}
	p := NewPositions(chans)
	p.Update(&notify.Envelope{Type: notify.TypeSubscribed, Channel: "news", ID: notify.ID{Ms: 5, Seq: 1}})
	if got := string(p.AppendCursor(nil)); got != "news=5-1" {
		t.Fatalf("cursor %q", got)
	}
	p.Update(&notify.Envelope{Type: notify.TypeSubscribed, Channel: "user:1"})
	if got := string(p.AppendCursor(nil)); got != "user:1=0-0;news=5-1" {
		t.Fatalf("cursor %q", got)
	}
}
