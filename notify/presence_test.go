package notify

import (
	"encoding/json"
	"testing"
)

func TestNewPresenceEncoding(t *testing.T) {
	e := NewPresence(PresenceDiff{Channel: "room.1", Count: 2,
		Joins:  []Member{{User: "42", Conn: "c1"}, {User: "q\"x", Conn: "c2"}},
		Leaves: []Member{{User: "7", Conn: "c0"}}})
	want := `{"type":"presence","channel":"room.1","presence":{"count":2,"joins":[{"user":"42","conn":"c1"},{"user":"q\"x","conn":"c2"}],"leaves":[{"user":"7","conn":"c0"}]}}`
	if got := string(e.JSON()); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var v map[string]any
	if err := json.Unmarshal(e.JSON(), &v); err != nil {
		t.Fatal(err)
	}
	if got := string(NewPresence(PresenceDiff{Channel: "c", Count: 0}).JSON()); got != `{"type":"presence","channel":"c","presence":{"count":0}}` {
		t.Fatalf("empty diff: %s", got)
	}
}

func TestAppendPresencePage(t *testing.T) {
	got := string(AppendPresencePage(nil, PresencePage{Count: 5, Members: []Member{{User: "1", Conn: "a"}}, Next: "x"}))
	if want := `{"count":5,"members":[{"user":"1","conn":"a"}],"next":"x"}`; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
	if got := string(AppendPresencePage(nil, PresencePage{})); got != `{"count":0,"members":[]}` {
		t.Fatalf("empty page: %s", got)
	}
}
