package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
)

// fakePresence is a Presence of one process, for the hub's tests: Join and
// Leave change the members at once and queue a diff that flush delivers to
// the sinks subscribed to the channel (recorded by sinkBroker), as a real
// presence does after its batching interval.
type fakePresence struct {
	b *sinkBroker

	mu      sync.Mutex
	members map[string]map[notify.Member]bool // guarded by mu
	diffs   map[string]*notify.PresenceDiff   // queued; guarded by mu
	calls   []string                          // "join c m" / "leave c m", in order; guarded by mu
	fail    atomic.Bool                       // Members fails
}

func newFakePresence(b *sinkBroker) *fakePresence {
	return &fakePresence{b: b, members: map[string]map[notify.Member]bool{}, diffs: map[string]*notify.PresenceDiff{}}
}

func (p *fakePresence) Join(channel string, m notify.Member)  { p.change(channel, m, true) }
func (p *fakePresence) Leave(channel string, m notify.Member) { p.change(channel, m, false) }

func (p *fakePresence) change(channel string, m notify.Member, join bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	set := p.members[channel]
	if set == nil {
		set = map[notify.Member]bool{}
		p.members[channel] = set
	}
	d := p.diffs[channel]
	if d == nil {
		d = &notify.PresenceDiff{Channel: channel}
		p.diffs[channel] = d
	}
	if join {
		set[m] = true
		d.Joins = append(d.Joins, m)
		p.calls = append(p.calls, "join "+channel+" "+m.Conn)
	} else {
		delete(set, m)
		d.Leaves = append(d.Leaves, m)
		p.calls = append(p.calls, "leave "+channel+" "+m.Conn)
	}
	d.Count = len(set)
}

func (p *fakePresence) Members(ctx context.Context, channel string, limit int, cursor string) (notify.PresencePage, error) {
	if p.fail.Load() {
		return notify.PresencePage{}, notify.Unavailable("members", errors.New("test"))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	page := notify.PresencePage{Count: len(p.members[channel]), Members: []notify.Member{}}
	for m := range p.members[channel] {
		if len(page.Members) < limit {
			page.Members = append(page.Members, m)
		}
	}
	return page, nil
}

// flush delivers the queued diffs, as the batching interval's end would.
func (p *fakePresence) flush() {
	p.mu.Lock()
	diffs := p.diffs
	p.diffs = map[string]*notify.PresenceDiff{}
	p.mu.Unlock()
	for _, d := range diffs {
		e := notify.NewPresence(*d)
		for _, s := range p.b.sinks(d.Channel) {
			s.Deliver(e)
		}
	}
}

func (p *fakePresence) memberSet(channel string) map[notify.Member]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.members[channel])
}

func (p *fakePresence) callLog() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// sinkBroker is a MemoryBroker that remembers its sinks (for fakePresence)
// and runs onHistory, if set, after History read: in the middle of a resume,
// when the messages published next are live ones.
type sinkBroker struct {
	notify.Broker
	mu        sync.Mutex
	subs      map[string][]notify.Sink // guarded by mu
	onHistory func()
}

func (b *sinkBroker) Subscribe(ctx context.Context, channel string, sink notify.Sink) error {
	b.mu.Lock()
	b.subs[channel] = append(b.subs[channel], sink)
	b.mu.Unlock()
	return b.Broker.Subscribe(ctx, channel, sink)
}

func (b *sinkBroker) Unsubscribe(ctx context.Context, channel string, sink notify.Sink) error {
	b.mu.Lock()
	b.subs[channel] = slices.DeleteFunc(b.subs[channel], func(s notify.Sink) bool { return s == sink })
	b.mu.Unlock()
	return b.Broker.Unsubscribe(ctx, channel, sink)
}

func (b *sinkBroker) History(ctx context.Context, channel string, after notify.ID, limit int) (notify.History, error) {
	h, err := b.Broker.History(ctx, channel, after, limit)
	if b.onHistory != nil {
		b.onHistory()
	}
	return h, err
}

func (b *sinkBroker) sinks(channel string) []notify.Sink {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.subs[channel])
}

func newPresenceHub(t *testing.T, cfg notify.HubConfig) (*sinkBroker, *fakePresence, *notify.Hub) {
	mem := notify.NewMemoryBroker(notify.MemoryConfig{})
	b := &sinkBroker{Broker: mem, subs: map[string][]notify.Sink{}}
	p := newFakePresence(b)
	cfg.Presence = p
	h := notify.NewHub(b, cfg)
	t.Cleanup(func() { _ = h.Close(); _ = mem.Close() })
	return b, p, h
}

func connect(t *testing.T, h *notify.Hub, user string) *notify.Conn {
	t.Helper()
	c, err := h.Connect(user, notify.ConnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func subscribe(t *testing.T, c *notify.Conn, req notify.SubscribeRequest) {
	t.Helper()
	if err := c.Subscribe(context.Background(), req); err != nil {
		t.Fatalf("subscribe %+v: %v", req, err)
	}
}

// presenceJSON is the "presence" field as a client decodes it.
type presenceJSON struct {
	Count   int             `json:"count"`
	Members []notify.Member `json:"members"`
	Joins   []notify.Member `json:"joins"`
	Leaves  []notify.Member `json:"leaves"`
	Next    string          `json:"next"`
}

func decodePresence(t *testing.T, e *notify.Envelope) presenceJSON {
	t.Helper()
	var p presenceJSON
	if err := json.Unmarshal(e.Presence, &p); err != nil {
		t.Fatalf("presence field of %s: %v", e.JSON(), err)
	}
	return p
}

func types(envs []*notify.Envelope) []string {
	var ts []string
	for _, e := range envs {
		ts = append(ts, e.Type)
	}
	return ts
}

func TestPresenceSnapshotAndDiffs(t *testing.T) {
	_, p, h := newPresenceHub(t, notify.HubConfig{})
	a, plain, b := connect(t, h, "alice"), connect(t, h, "carol"), connect(t, h, "bob")
	subscribe(t, a, notify.SubscribeRequest{Channel: "room", Presence: true, Ref: "r1"})
	subscribe(t, plain, notify.SubscribeRequest{Channel: "room"})

	got := a.Drain(nil)
	if len(got) != 1 || got[0].Type != notify.TypeSubscribed || got[0].Ref != "r1" {
		t.Fatalf("after subscribe: %v", types(got))
	}
	snap := decodePresence(t, got[0])
	self := notify.Member{User: "alice", Conn: a.ID()}
	if snap.Count != 1 || len(snap.Members) != 1 || snap.Members[0] != self {
		t.Fatalf("snapshot = %+v; want alice's own connection", snap)
	}
	if e := plain.Drain(nil); len(e) != 1 || e[0].Presence != nil {
		t.Fatalf("a subscription without presence got %s", e[0].JSON())
	}

	subscribe(t, b, notify.SubscribeRequest{Channel: "room", Presence: true})
	b.Drain(nil)
	p.flush()
	got = a.Drain(nil)
	if len(got) != 1 || got[0].Type != notify.TypePresence || !got[0].ID.IsZero() {
		t.Fatalf("after bob joined, alice got %v", types(got))
	}
	if d := decodePresence(t, got[0]); d.Count != 2 || len(d.Joins) != 2 || d.Joins[1] != (notify.Member{User: "bob", Conn: b.ID()}) {
		t.Fatalf("diff = %+v; want alice's and bob's joins, count 2", d)
	}
	if e := plain.Drain(nil); len(e) != 0 {
		t.Fatalf("a subscription without presence got %v", types(e))
	}
	if _, ok := p.memberSet("room")[notify.Member{User: "carol", Conn: plain.ID()}]; ok {
		t.Fatal("a subscription without presence is a member")
	}

	b.Close(nil)
	p.flush()
	got = a.Drain(nil)
	if len(got) != 1 || got[0].Type != notify.TypePresence {
		t.Fatalf("after bob left, alice got %v", types(got))
	}
	if d := decodePresence(t, got[0]); d.Count != 1 || len(d.Leaves) != 1 || d.Leaves[0].Conn != b.ID() {
		t.Fatalf("diff = %+v; want bob's leave, count 1", d)
	}
	// A message after a presence envelope is delivered as usual: presence
	// moved no position.
	if _, err := h.Broker().Publish(context.Background(), notify.Publication{Channel: "room", Data: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for got = a.Drain(nil); len(got) == 0 && time.Now().Before(deadline); got = a.Drain(nil) {
		time.Sleep(time.Millisecond)
	}
	if len(got) != 1 || got[0].Type != notify.TypeMessage {
		t.Fatalf("message after presence: %v", types(got))
	}
}

func TestPresenceSnapshotIsBounded(t *testing.T) {
	_, _, h := newPresenceHub(t, notify.HubConfig{PresenceSnapshot: 2})
	var last *notify.Conn
	for range 4 {
		last = connect(t, h, "u")
		subscribe(t, last, notify.SubscribeRequest{Channel: "room", Presence: true})
	}
	snap := decodePresence(t, last.Drain(nil)[0])
	if snap.Count != 4 || len(snap.Members) != 2 {
		t.Fatalf("snapshot = %+v; want count 4 and 2 members", snap)
	}
}

// Every way a subscription ends leaves the channel's members, once.
func TestPresenceLeaves(t *testing.T) {
	_, p, h := newPresenceHub(t, notify.HubConfig{QueueLength: 4})
	ctx := context.Background()
	member := func(c *notify.Conn) bool { return p.memberSet("room")[notify.Member{User: c.User(), Conn: c.ID()}] }

	unsub := connect(t, h, "u")
	subscribe(t, unsub, notify.SubscribeRequest{Channel: "room", Presence: true})
	if !member(unsub) {
		t.Fatal("not a member after subscribing with presence")
	}
	if err := unsub.Unsubscribe(ctx, "room", ""); err != nil {
		t.Fatal(err)
	}
	if member(unsub) {
		t.Fatal("still a member after unsubscribing")
	}

	closed := connect(t, h, "u")
	subscribe(t, closed, notify.SubscribeRequest{Channel: "room", Presence: true})
	closed.Close(nil)
	closed.Close(nil)
	if member(closed) {
		t.Fatal("still a member after Close")
	}

	lagging := connect(t, h, "u")
	subscribe(t, lagging, notify.SubscribeRequest{Channel: "room", Presence: true})
	for i := 0; i < 8 && lagging.Err() == nil; i++ {
		brokerPublish(t, h, "room")
	}
	select {
	case <-lagging.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection never lagged")
	}
	waitFor(t, "the lagging connection leaves", func() bool { return !member(lagging) })

	atShutdown := connect(t, h, "u")
	subscribe(t, atShutdown, notify.SubscribeRequest{Channel: "room", Presence: true})
	_ = h.Close()
	if member(atShutdown) {
		t.Fatal("still a member after Hub.Close")
	}
	if n := len(p.memberSet("room")); n != 0 {
		t.Fatalf("%d members left behind", n)
	}
	for _, c := range []*notify.Conn{unsub, closed, lagging, atShutdown} {
		joins, leaves := 0, 0
		for _, call := range p.callLog() {
			switch call {
			case "join room " + c.ID():
				joins++
			case "leave room " + c.ID():
				leaves++
			}
		}
		if joins != 1 || leaves != 1 {
			t.Errorf("conn %s: %d joins, %d leaves; want 1 and 1", c.ID(), joins, leaves)
		}
	}
}

func brokerPublish(t *testing.T, h *notify.Hub, channel string) {
	t.Helper()
	if _, err := h.Broker().Publish(context.Background(), notify.Publication{Channel: channel, Data: []byte(`0`)}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out: " + what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Diffs delivered while a subscription resumes are held with the live
// messages and follow the subscribed notice (and its snapshot) in delivery
// order; applied on top of the snapshot, they give the channel's members.
func TestPresenceDiffsDuringResumeConverge(t *testing.T) {
	b, p, h := newPresenceHub(t, notify.HubConfig{})
	early := connect(t, h, "early")
	subscribe(t, early, notify.SubscribeRequest{Channel: "room", Presence: true})
	p.flush()
	since, err := h.Broker().Publish(context.Background(), notify.Publication{Channel: "room", Data: []byte(`0`)})
	if err != nil {
		t.Fatal(err)
	}
	brokerPublish(t, h, "room") // replayed by the resume

	x, y := connect(t, h, "x"), connect(t, h, "y")
	b.onHistory = func() {
		// Attached and buffering, the snapshot not read yet: x joins
		// (announced), a live message, y joins and x leaves (changed,
		// announced after the snapshot below was read).
		b.onHistory = nil
		subscribe(t, x, notify.SubscribeRequest{Channel: "room", Presence: true})
		p.flush()
		brokerPublish(t, h, "room")
		subscribe(t, y, notify.SubscribeRequest{Channel: "room", Presence: true})
		x.Close(nil)
	}
	r := connect(t, h, "r")
	subscribe(t, r, notify.SubscribeRequest{Channel: "room", Since: since.String(), Presence: true})
	p.flush() // y's join and x's leave, after the snapshot
	var got []*notify.Envelope
	waitFor(t, "every envelope", func() bool {
		got = append(got, r.Drain(nil)...)
		return len(got) >= 5
	})
	if want := []string{"subscribed", "message", "presence", "message", "presence"}; !slices.Equal(types(got), want) {
		t.Fatalf("resume delivered %v; want %v", types(got), want)
	}
	members := map[notify.Member]bool{}
	for _, m := range decodePresence(t, got[0]).Members {
		members[m] = true
	}
	count := 0
	for _, e := range got[1:] {
		if e.Type != notify.TypePresence {
			continue
		}
		d := decodePresence(t, e)
		for _, m := range d.Joins {
			members[m] = true
		}
		for _, m := range d.Leaves {
			delete(members, m)
		}
		count = d.Count
	}
	want := p.memberSet("room")
	if !maps.Equal(members, want) || count != len(want) {
		t.Fatalf("snapshot + diffs = %v (count %d); the channel has %v", members, count, want)
	}
}

// Without a Presence, a subscription with presence is refused and changes
// nothing; one without presence is unaffected.
func TestPresenceDisabled(t *testing.T) {
	_, h := newMemHub(t, notify.HubConfig{})
	c := connect(t, h, "u")
	err := c.Subscribe(context.Background(), notify.SubscribeRequest{Channel: "room", Presence: true})
	if !errors.Is(err, notify.ErrPresenceDisabled) {
		t.Fatalf("err = %v; want presence_disabled", err)
	}
	if chans := c.Channels(); len(chans) != 0 {
		t.Fatalf("a refused subscribe left channels %v", chans)
	}
	if st := h.Stats(); st.Channels != 0 {
		t.Fatalf("a refused subscribe made a broker subscription: %+v", st)
	}
	subscribe(t, c, notify.SubscribeRequest{Channel: "room"})
	if e := c.Drain(nil); len(e) != 1 || e[0].Presence != nil {
		t.Fatalf("plain subscribe: %v", types(e))
	}
	if h.Presence() != nil {
		t.Fatal("Hub.Presence() is not nil without HubConfig.Presence")
	}
}

func TestConnIDsAreUnique(t *testing.T) {
	_, h := newMemHub(t, notify.HubConfig{MaxConnsPerUser: -1})
	seen := map[string]bool{}
	for range 1000 {
		id := connect(t, h, "u").ID()
		if len(id) != 32 || seen[id] {
			t.Fatalf("id %q: length %d, seen before %v", id, len(id), seen[id])
		}
		seen[id] = true
	}
}

// TestPresenceResetSendsNewSnapshot: after a reset (the broker may have
// missed changes), the hub reads the members again and sends them with
// "reset":true, so a view built on the missed changes is replaced; diffs
// that come while the members are read follow the snapshot.
func TestPresenceResetSendsNewSnapshot(t *testing.T) {
	b, p, h := newPresenceHub(t, notify.HubConfig{})
	a := connect(t, h, "alice")
	subscribe(t, a, notify.SubscribeRequest{Channel: "room", Presence: true})
	a.Drain(nil)
	p.flush()
	a.Drain(nil)

	// A member joined while the broker was not listening: no diff.
	ghost := notify.Member{User: "zed", Conn: "missed"}
	p.Join("room", ghost)
	p.mu.Lock()
	delete(p.diffs, "room")
	p.mu.Unlock()

	// The reset, then a diff delivered while the members are read.
	p.mu.Lock() // holds the Members read until the diff is in
	for _, s := range b.sinks("room") {
		s.Deliver(notify.NewPresence(notify.PresenceDiff{Channel: "room", Count: 2, Reset: true}))
	}
	late := notify.NewPresence(notify.PresenceDiff{Channel: "room", Count: 1, Leaves: []notify.Member{ghost}})
	for _, s := range b.sinks("room") {
		s.Deliver(late)
	}
	if got := a.Drain(nil); len(got) != 0 {
		t.Fatalf("before the snapshot was read, alice got %v", types(got))
	}
	p.mu.Unlock()

	var got []*notify.Envelope
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got = a.Drain(got)
	}
	if len(got) != 2 || got[0].Type != notify.TypePresence || got[1] != late {
		t.Fatalf("after the reset alice got %v; want the snapshot then the held diff", types(got))
	}
	var snap struct {
		presenceJSON
		Reset bool `json:"reset"`
	}
	if err := json.Unmarshal(got[0].Presence, &snap); err != nil {
		t.Fatal(err)
	}
	if !snap.Reset || snap.Count != 2 || len(snap.Members) != 2 || !slices.Contains(snap.Members, ghost) {
		t.Fatalf("reset snapshot = %+v; want alice and the missed member, reset", snap)
	}
}

// TestPresenceResetWithoutMembers: when the members cannot be read, the
// bare reset goes out (clients learn their view may be stale).
func TestPresenceResetWithoutMembers(t *testing.T) {
	b, p, h := newPresenceHub(t, notify.HubConfig{})
	a := connect(t, h, "alice")
	subscribe(t, a, notify.SubscribeRequest{Channel: "room", Presence: true})
	a.Drain(nil)
	p.fail.Store(true)
	bare := notify.NewPresence(notify.PresenceDiff{Channel: "room", Count: 1, Reset: true})
	for _, s := range b.sinks("room") {
		s.Deliver(bare)
	}
	var got []*notify.Envelope
	for deadline := time.Now().Add(10 * time.Second); len(got) < 1 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = a.Drain(got)
	}
	if len(got) != 1 || got[0] != bare {
		t.Fatalf("got %v; want the bare reset", types(got))
	}
}
