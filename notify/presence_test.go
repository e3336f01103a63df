package notify

import (
	"encoding/json"
	"strconv"
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
	if got := string(NewPresence(PresenceDiff{Channel: "c", Count: 7, Reset: true}).JSON()); got != `{"type":"presence","channel":"c","presence":{"count":7,"reset":true}}` {
		t.Fatalf("reset: %s", got)
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

func TestPresenceSetFlush(t *testing.T) {
	var s PresenceSet
	a, b, c := Member{User: "1", Conn: "a"}, Member{User: "2", Conn: "b"}, Member{User: "3", Conn: "c"}
	if !s.Queue(a, true) || s.Queue(b, true) {
		t.Fatal("Queue: only the first change of a batch is first")
	}
	s.Queue(c, true)
	s.Queue(c, false)
	joins, leaves := s.Flush()
	if len(joins) != 2 || joins[0] != a || joins[1] != b || len(leaves) != 0 || s.Len() != 2 {
		t.Fatalf("joins %v leaves %v len %d; want a, b joined, c cancelled", joins, leaves, s.Len())
	}
	// a leaves and rejoins (no change); b rejoins as another user.
	b2 := Member{User: "9", Conn: "b"}
	s.Queue(a, false)
	s.Queue(a, true)
	s.Queue(b2, true)
	joins, leaves = s.Flush()
	if len(joins) != 1 || joins[0] != b2 || len(leaves) != 1 || leaves[0] != b || s.Len() != 2 {
		t.Fatalf("joins %v leaves %v len %d; want b leaving as user 2 and joining as 9", joins, leaves, s.Len())
	}
	if j, l := s.Flush(); j != nil || l != nil {
		t.Fatalf("empty flush: %v %v", j, l)
	}
	s.Queue(a, false)
	s.Flush()
	if ms := s.Members(); len(ms) != 1 || ms[0] != b2 {
		t.Fatalf("members after removal %v; want [b2]", ms)
	}
}

func TestValidateMember(t *testing.T) {
	for _, m := range []Member{{Conn: "c1"}, {User: "42", Conn: "x-Y_z.1"}} {
		if err := ValidateMember(m); err != nil {
			t.Errorf("ValidateMember(%+v) = %v", m, err)
		}
	}
	for _, m := range []Member{{}, {Conn: "a b"}, {Conn: "a\tb"}, {Conn: string(make([]byte, MaxConnIDLen+1))}, {User: "a b", Conn: "c"}} {
		if ValidateMember(m) == nil {
			t.Errorf("ValidateMember(%+v) = nil; want an error", m)
		}
	}
}

func TestSplitPresence(t *testing.T) {
	mk := func(n int, p string) []Member {
		ms := make([]Member, n)
		for i := range ms {
			ms[i] = Member{Conn: p + strconv.Itoa(i)}
		}
		return ms
	}
	small := PresenceDiff{Channel: "c", Count: 3, Joins: mk(3, "j")}
	if got := SplitPresence(small); len(got) != 1 || len(got[0].Joins) != 3 {
		t.Fatalf("small diff split into %v", got)
	}
	// 1500 leave, 1700 join: 2000 before, 2200 after.
	d := PresenceDiff{Channel: "c", Count: 2200, Joins: mk(1700, "j"), Leaves: mk(1500, "l")}
	got := SplitPresence(d)
	wantCounts := []int{1000, 1000, 2000, 2200}
	wantLeaves := []int{1000, 500, 0, 0}
	if len(got) != 4 {
		t.Fatalf("got %d chunks; want 4", len(got))
	}
	joins := 0
	for i, c := range got {
		if n := len(c.Joins) + len(c.Leaves); n > MaxPresenceDiff || c.Count != wantCounts[i] || len(c.Leaves) != wantLeaves[i] {
			t.Fatalf("chunk %d: %d changes, %d leaves, count %d; want ≤ %d, %d leaves, count %d", i, n, len(c.Leaves), c.Count, MaxPresenceDiff, wantLeaves[i], wantCounts[i])
		}
		joins += len(c.Joins)
	}
	if joins != 1700 {
		t.Fatalf("chunks carry %d joins; want 1700", joins)
	}
}
