package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
)

// PresenceBroker is a broker that keeps presence.
type PresenceBroker interface {
	notify.Broker
	notify.Presence
}

// PresenceBackend starts a fresh backend for one test with presence
// configured as cfg and returns a function that makes instances on it (see
// Backend). Instances are closed when t ends.
type PresenceBackend func(t *testing.T, cfg notify.PresenceConfig) (newInstance func() PresenceBroker)

// SuiteInterval is the presence batching interval RunPresence configures:
// long enough that a test's burst of Joins falls in one batch even on a
// loaded machine.
const SuiteInterval = 300 * time.Millisecond

// RunPresence runs every presence scenario against backend.
func RunPresence(t *testing.T, backend PresenceBackend) {
	scenarios := []struct {
		name string
		fn   func(*testing.T, func() PresenceBroker)
	}{
		{"JoinSeenByOtherInstance", testPresenceJoinAcross},
		{"OneEnvelopePerBatch", testPresenceBatching},
		{"JoinLeaveInOneBatchCancel", testPresenceCancel},
		{"Count", testPresenceCount},
		{"PagingCoversEveryMemberOnce", testPresencePaging},
		{"UnknownChannel", testPresenceUnknownChannel},
		{"BadInputChangesNothing", testPresenceBadInput},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			sc.fn(t, backend(t, notify.PresenceConfig{Interval: SuiteInterval}))
		})
	}
}

// PresenceEvent is a presence envelope decoded.
type PresenceEvent struct {
	Count  int             `json:"count"`
	Joins  []notify.Member `json:"joins"`
	Leaves []notify.Member `json:"leaves"`
	Reset  bool            `json:"reset"`
}

// PresenceSink is a notify.Sink that records the presence envelopes of one
// channel (it ignores messages).
type PresenceSink struct {
	mu      sync.Mutex
	events  []PresenceEvent // guarded by mu
	bad     []string        // envelopes that did not decode; guarded by mu
	changed chan struct{}   // closed and replaced on every event; guarded by mu
}

// NewPresenceSink returns an empty PresenceSink.
func NewPresenceSink() *PresenceSink { return &PresenceSink{changed: make(chan struct{})} }

// Deliver implements notify.Sink.
func (s *PresenceSink) Deliver(m *notify.Envelope) {
	if m.Type != notify.TypePresence {
		return
	}
	var ev PresenceEvent
	err := json.Unmarshal(m.Presence, &ev)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.bad = append(s.bad, string(m.JSON()))
	} else {
		s.events = append(s.events, ev)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Lost implements notify.Sink.
func (s *PresenceSink) Lost(string) {}

// Events returns a copy of the events received so far.
func (s *PresenceSink) Events() []PresenceEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// WaitFor waits until cond holds for the events received, or fails t after
// timeout.
func (s *PresenceSink) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]PresenceEvent) bool) []PresenceEvent {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		evs, bad, changed := slices.Clone(s.events), s.bad, s.changed
		s.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("undecodable presence envelope: %s", bad[0])
		}
		if cond(evs) {
			return evs
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; received %d presence events: %+v", timeout, what, len(evs), evs)
			return nil
		}
	}
}

// Present replays the joins and leaves of evs: the members they leave
// present, by connection.
func Present(evs []PresenceEvent) map[string]notify.Member {
	present := map[string]notify.Member{}
	for _, ev := range evs {
		for _, m := range ev.Leaves {
			delete(present, m.Conn)
		}
		for _, m := range ev.Joins {
			present[m.Conn] = m
		}
	}
	return present
}

// SubscribePresence subscribes a new PresenceSink to channel on b.
func SubscribePresence(t *testing.T, b notify.Broker, channel string) *PresenceSink {
	t.Helper()
	s := NewPresenceSink()
	if err := b.Subscribe(ctxT(t), channel, s); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	t.Cleanup(func() { _ = b.Unsubscribe(context.Background(), channel, s) })
	return s
}

// member returns the test member number i of user u.
func member(u, i int) notify.Member {
	return notify.Member{User: fmt.Sprintf("u%d", u), Conn: fmt.Sprintf("c%04d", i)}
}

const presenceWait = 15 * time.Second

func testPresenceJoinAcross(t *testing.T, newInstance func() PresenceBroker) {
	a, b := newInstance(), newInstance()
	onA, onB := SubscribePresence(t, a, "room.j"), SubscribePresence(t, b, "room.j")
	m := member(1, 1)
	a.Join("room.j", m)
	for who, s := range map[string]*PresenceSink{"instance a": onA, "instance b": onB} {
		evs := s.WaitFor(t, presenceWait, "the join", func(evs []PresenceEvent) bool { return len(evs) > 0 })
		if len(evs[0].Joins) != 1 || evs[0].Joins[0] != m || evs[0].Count != 1 || len(evs[0].Leaves) != 0 {
			t.Fatalf("%s got %+v; want count 1, join %v", who, evs[0], m)
		}
	}
	page := members(t, b, "room.j", 10, "")
	if page.Count != 1 || len(page.Members) != 1 || page.Members[0] != m || page.Next != "" {
		t.Fatalf("Members on the other instance = %+v; want just %v", page, m)
	}
	a.Leave("room.j", m)
	evs := onB.WaitFor(t, presenceWait, "the leave", func(evs []PresenceEvent) bool { return len(evs) == 2 })
	if len(evs[1].Leaves) != 1 || evs[1].Leaves[0] != m || evs[1].Count != 0 || len(evs[1].Joins) != 0 {
		t.Fatalf("got %+v; want count 0, leave %v", evs[1], m)
	}
	if page := members(t, b, "room.j", 10, ""); page.Count != 0 || len(page.Members) != 0 {
		t.Fatalf("after the leave Members = %+v; want none", page)
	}
}

func testPresenceBatching(t *testing.T, newInstance func() PresenceBroker) {
	a, b := newInstance(), newInstance()
	onB := SubscribePresence(t, b, "room.b")
	const n = 50
	want := map[string]notify.Member{}
	for i := range n {
		m := member(i%7, i)
		want[m.Conn] = m
		a.Join("room.b", m)
	}
	evs := onB.WaitFor(t, presenceWait, "the batch", func(evs []PresenceEvent) bool { return len(evs) > 0 })
	if len(evs[0].Joins) != n || evs[0].Count != n {
		t.Fatalf("first envelope has %d joins, count %d; want all %d joins of the batch in one envelope", len(evs[0].Joins), evs[0].Count, n)
	}
	if got := Present(evs[:1]); !maps.Equal(got, want) {
		t.Fatalf("joined members %v; want %v", got, want)
	}
	time.Sleep(3 * SuiteInterval)
	if evs := onB.Events(); len(evs) != 1 {
		t.Fatalf("%d envelopes for one batch: %+v", len(evs), evs)
	}
}

func testPresenceCancel(t *testing.T, newInstance func() PresenceBroker) {
	a, b := newInstance(), newInstance()
	onB := SubscribePresence(t, b, "room.c")
	gone, stays := member(1, 1), member(2, 2)
	a.Join("room.c", gone)
	a.Leave("room.c", gone)
	a.Join("room.c", stays)
	a.Leave("room.c", member(3, 3)) // never joined: no leave
	evs := onB.WaitFor(t, presenceWait, "the batch", func(evs []PresenceEvent) bool { return len(evs) > 0 })
	if len(evs[0].Joins) != 1 || evs[0].Joins[0] != stays || len(evs[0].Leaves) != 0 || evs[0].Count != 1 {
		t.Fatalf("got %+v; want only the join of %v, count 1", evs[0], stays)
	}
	if page := members(t, b, "room.c", 10, ""); page.Count != 1 || len(page.Members) != 1 || page.Members[0] != stays {
		t.Fatalf("Members = %+v; want just %v", page, stays)
	}
}

func testPresenceCount(t *testing.T, newInstance func() PresenceBroker) {
	a, b := newInstance(), newInstance()
	onA := SubscribePresence(t, a, "room.n")
	for i := range 300 {
		[]PresenceBroker{a, b}[i%2].Join("room.n", member(i%5, i))
	}
	for i := 0; i < 300; i += 3 {
		[]PresenceBroker{a, b}[i%2].Leave("room.n", member(i%5, i))
	}
	evs := onA.WaitFor(t, presenceWait, "200 present", func(evs []PresenceEvent) bool { return len(Present(evs)) == 200 })
	if last := evs[len(evs)-1].Count; last != 200 {
		t.Fatalf("last envelope's count %d; want 200", last)
	}
	for _, in := range []PresenceBroker{a, b} {
		if page := members(t, in, "room.n", 0, ""); page.Count != 200 || len(page.Members) != 0 || page.Next != "" {
			t.Fatalf("Members(limit 0) = count %d, %d members, next %q; want count 200 only", page.Count, len(page.Members), page.Next)
		}
	}
}

func testPresencePaging(t *testing.T, newInstance func() PresenceBroker) {
	a, b := newInstance(), newInstance()
	onB := SubscribePresence(t, b, "room.p")
	const n = 2500
	want := map[string]notify.Member{}
	for i := range n {
		m := member(i%11, i)
		want[m.Conn] = m
		[]PresenceBroker{a, b}[i%2].Join("room.p", m)
	}
	evs := onB.WaitFor(t, presenceWait, "every join", func(evs []PresenceEvent) bool { return len(Present(evs)) == n })
	for _, ev := range evs {
		if k := len(ev.Joins) + len(ev.Leaves); k > notify.MaxPresenceDiff {
			t.Fatalf("an envelope of %d changes; want at most %d", k, notify.MaxPresenceDiff)
		}
	}
	if last := evs[len(evs)-1].Count; last != n {
		t.Fatalf("last envelope's count %d; want %d", last, n)
	}
	for _, limit := range []int{1, 97, notify.MaxPresencePage, 5 * notify.MaxPresencePage} {
		got := map[string]notify.Member{}
		pages := 0
		for cursor := ""; ; pages++ {
			page := members(t, a, "room.p", limit, cursor)
			if page.Count != n {
				t.Fatalf("limit %d page %d: count %d; want %d", limit, pages, page.Count, n)
			}
			if len(page.Members) > notify.PresenceLimit(limit) {
				t.Fatalf("limit %d: page of %d members; want at most %d", limit, len(page.Members), notify.PresenceLimit(limit))
			}
			for _, m := range page.Members {
				if _, dup := got[m.Conn]; dup {
					t.Fatalf("limit %d: %v listed twice", limit, m)
				}
				got[m.Conn] = m
			}
			if page.Next == "" {
				break
			}
			if limit == 1 && pages > 100 {
				break // enough of the one-by-one walk
			}
			cursor = page.Next
		}
		if limit == 1 {
			continue
		}
		if !maps.Equal(got, want) {
			t.Fatalf("limit %d: pages cover %d members; want the %d joined", limit, len(got), n)
		}
		if limit > notify.MaxPresencePage && pages < n/notify.MaxPresencePage {
			t.Fatalf("limit %d was not clamped: %d pages for %d members", limit, pages+1, n)
		}
	}
}

func testPresenceUnknownChannel(t *testing.T, newInstance func() PresenceBroker) {
	a := newInstance()
	page := members(t, a, "nobody.here", 10, "")
	if page.Count != 0 || len(page.Members) != 0 || page.Next != "" {
		t.Fatalf("Members of a channel nobody joined = %+v; want count 0", page)
	}
}

func testPresenceBadInput(t *testing.T, newInstance func() PresenceBroker) {
	a, b := newInstance(), newInstance()
	onB := SubscribePresence(t, b, "room.x")
	m := member(1, 1)
	a.Join("room.x", m)
	onB.WaitFor(t, presenceWait, "the join", func(evs []PresenceEvent) bool { return len(evs) == 1 })
	ctx := ctxT(t)
	for _, ch := range []string{"", "a b", "a{b}", strings.Repeat("x", notify.MaxChannelLen+1)} {
		if _, err := a.Members(ctx, ch, 10, ""); !errors.Is(err, notify.ErrInvalidChannel) {
			t.Errorf("Members(%q) err = %v; want invalid_channel", ch, err)
		}
	}
	for _, cur := range []string{"not a cursor", "-1", "12x", "\n"} {
		if page, err := a.Members(ctx, "room.x", 10, cur); !errors.Is(err, notify.ErrInvalidCursor) {
			t.Errorf("Members(cursor %q) = %+v, err %v; want invalid_cursor", cur, page, err)
		}
		if _, err := a.Members(ctx, "nobody.here", 0, cur); !errors.Is(err, notify.ErrInvalidCursor) {
			t.Errorf("Members(unknown channel, cursor %q) err = %v; want invalid_cursor", cur, err)
		}
	}
	// Invalid channels and members are ignored: nothing joins or leaves.
	a.Join("a b", member(2, 2))
	a.Join("room.x", notify.Member{User: "u2", Conn: ""})
	a.Join("room.x", notify.Member{User: "u2", Conn: "bad conn"})
	a.Join("room.x", notify.Member{User: "bad user", Conn: "c9"})
	a.Leave("room.x", notify.Member{User: "u1", Conn: "c0001 "})
	time.Sleep(3 * SuiteInterval)
	if evs := onB.Events(); len(evs) != 1 {
		t.Fatalf("invalid joins produced presence envelopes: %+v", evs[1:])
	}
	if page := members(t, b, "room.x", 10, ""); page.Count != 1 || len(page.Members) != 1 || page.Members[0] != m {
		t.Fatalf("after bad input Members = %+v; want just %v", page, m)
	}
}

func members(t *testing.T, p notify.Presence, channel string, limit int, cursor string) notify.PresencePage {
	t.Helper()
	page, err := p.Members(ctxT(t), channel, limit, cursor)
	if err != nil {
		t.Fatalf("Members(%s, %d, %q): %v", channel, limit, cursor, err)
	}
	return page
}
