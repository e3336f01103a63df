package conformance

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// Run runs every scenario against tr.
func Run(t *testing.T, tr Transport) {
	scenarios := []struct {
		name string
		fn   func(*testing.T, Transport)
	}{
		{"SubscribeAndReceive", testReceive},
		{"SameEnvelopesAsTheCore", testSameEnvelopes},
		{"Order", testOrder},
		{"ResumeAfterDrop", testResumeAfterDrop},
		{"GapWhenPositionTooOld", testGap},
		{"Unauthorized", testUnauthorized},
		{"ForbiddenChannel", testForbidden},
		{"BadPosition", testBadPosition},
		{"Commands", testCommands},
		{"MalformedAndOversizedCommands", testMalformed},
		{"StalledClientLagsAlone", testStalled},
		{"DrainAdvisesReconnect", testDrain},
		{"HeartbeatDetectsDeadPeer", testDeadPeer},
		{"TokenExpiryEndsConnection", testTokenExpiry},
		{"RefreshKeepsConnection", testRefresh},
		{"RefreshRefused", testRefreshRefused},
		{"PresenceSnapshotAndDiffs", testPresence},
		{"PresenceNotGranted", testPresenceNotGranted},
		{"PresenceDisabled", testPresenceDisabled},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { sc.fn(t, tr) })
	}
}

func testReceive(t *testing.T, tr Transport) {
	e := start(t, tr, setup{})
	chans := []string{"user:alice", "news"}
	r := newReader(t, e.dial(DialOptions{Token: TokenAlice, Channels: []string{"news"}}), chans)
	r.expect(notify.TypeSubscribed, "user:alice")
	r.expect(notify.TypeSubscribed, "news")
	n1 := e.publish("news", 1)
	got := r.expect(notify.TypeMessage, "news")
	if got.ID != n1 {
		t.Fatalf("news message ID %v; want %v", got.ID, n1)
	}
	u1 := e.publish("user:alice", 2)
	if got := r.expect(notify.TypeMessage, "user:alice"); got.ID != u1 {
		t.Fatalf("user message ID %v; want %v", got.ID, u1)
	}
	e.publish("user:bob", 3) // not alice's
	n2 := e.publish("news", 4)
	if got := r.expect(notify.TypeMessage, "news"); got.ID != n2 {
		t.Fatalf("received %s; want news %v (and nothing of user:bob)", got.JSON(), n2)
	}
}

// testSameEnvelopes: what arrives is the core's envelope, field for field.
func testSameEnvelopes(t *testing.T, tr Transport) {
	e := start(t, tr, setup{})
	r := newReader(t, e.dial(DialOptions{Token: TokenBob, Channels: []string{"news"}}), []string{"user:bob", "news"})
	r.expect(notify.TypeSubscribed, "user:bob")
	r.expect(notify.TypeSubscribed, "news")
	_, err := e.broker.Publish(context.Background(), notify.Publication{Channel: "news", Event: "breaking.v2", Data: []byte("{\"title\":\"caf\u00e9 \\u2028 <b>\",\"n\":[1,2.5,null,true]}")})
	if err != nil {
		t.Fatal(err)
	}
	got := r.expect(notify.TypeMessage, "news")
	h, _ := e.broker.History(context.Background(), "news", notify.ID{}, 10)
	want := h.Messages[0]
	if string(got.AppendJSON(nil)) != string(want.JSON()) {
		t.Fatalf("received %s\nthe core's  %s", got.AppendJSON(nil), want.JSON())
	}
}

func testOrder(t *testing.T, tr Transport) {
	e := start(t, tr, setup{hub: notify.HubConfig{QueueLength: 4096}})
	r := newReader(t, e.dial(DialOptions{Token: TokenBob, Channels: []string{"news"}}), []string{"user:bob", "news"})
	r.expect(notify.TypeSubscribed, "user:bob")
	r.expect(notify.TypeSubscribed, "news")
	const n = 500
	var ids []notify.ID
	for i := 0; i < n; i++ {
		ids = append(ids, e.publish("news", i))
	}
	for i, m := range r.messages(n) {
		if m.ID != ids[i] {
			t.Fatalf("message %d: %v; want %v", i, m.ID, ids[i])
		}
	}
}

func testResumeAfterDrop(t *testing.T, tr Transport) {
	e := start(t, tr, setup{})
	chans := []string{"user:alice", "news", "room.1"}
	opts := DialOptions{Token: TokenAlice, Channels: []string{"news", "room.1"}}
	r := newReader(t, e.dial(opts), chans)
	for _, ch := range chans {
		r.expect(notify.TypeSubscribed, ch)
	}
	seen := map[string]notify.ID{"news": e.publish("news", 1), "room.1": e.publish("room.1", 2)}
	r.messages(2)
	cursor := r.cursor()
	r.c.Drop()
	e.waitConns(0, 5*time.Second)
	// Missed while away, on every channel, including one that had no
	// message before the drop.
	missed := []notify.ID{e.publish("news", 3), e.publish("user:alice", 4), e.publish("room.1", 5), e.publish("news", 6)}

	opts.Since = cursor
	r2 := newReader(t, e.dial(opts), chans)
	// Each channel: subscribed, then its missed messages; channels one
	// after the other.
	got := map[string][]notify.ID{}
	subscribed := 0
	for subscribed < len(chans) || len(got["news"])+len(got["user:alice"])+len(got["room.1"]) < 4 {
		m := r2.next()
		switch m.Type {
		case notify.TypeSubscribed:
			subscribed++
		case notify.TypeMessage:
			if len(got[m.Channel]) == 0 && subscribedIndex(r2.all, m.Channel) < 0 {
				t.Fatalf("message %s before its channel's subscribed notice", m.JSON())
			}
			got[m.Channel] = append(got[m.Channel], m.ID)
		default:
			t.Fatalf("unexpected %s", m.JSON())
		}
	}
	live := e.publish("news", 7)
	got["news"] = append(got["news"], r2.expect(notify.TypeMessage, "news").ID)
	want := map[string][]notify.ID{"news": {missed[0], missed[3], live}, "user:alice": {missed[1]}, "room.1": {missed[2]}}
	for ch, ids := range got {
		for _, id := range ids {
			if id == seen[ch] {
				t.Fatalf("%s message %v received again after resume", ch, id)
			}
		}
	}
	for ch, ids := range want {
		if len(got[ch]) != len(ids) {
			t.Fatalf("%s: resumed with %v; want %v", ch, got[ch], ids)
		}
		for i := range ids {
			if got[ch][i] != ids[i] {
				t.Fatalf("%s: resumed with %v; want %v", ch, got[ch], ids)
			}
		}
	}
}

func subscribedIndex(envs []*notify.Envelope, channel string) int {
	for i, e := range envs {
		if e.Type == notify.TypeSubscribed && e.Channel == channel {
			return i
		}
	}
	return -1
}

func testGap(t *testing.T, tr Transport) {
	e := start(t, tr, setup{history: 10})
	var ids []notify.ID
	for i := 0; i < 50; i++ {
		ids = append(ids, e.publish("news", i))
	}
	r := newReader(t, e.dial(DialOptions{Token: TokenBob, Channels: []string{"news"}, Since: "news=" + ids[3].String()}), []string{"user:bob", "news"})
	r.expect(notify.TypeSubscribed, "user:bob")
	r.expect(notify.TypeSubscribed, "news")
	gap := r.expect(notify.TypeGap, "news")
	if gap.Since != ids[3] {
		t.Fatalf("gap since %v; want %v", gap.Since, ids[3])
	}
	ms := r.messages(10)
	if ms[0].ID != ids[40] || ms[9].ID != ids[49] {
		t.Fatalf("after the gap: %v..%v; want the 10 retained %v..%v", ms[0].ID, ms[9].ID, ids[40], ids[49])
	}
	live := e.publish("news", 50)
	if m := r.expect(notify.TypeMessage, "news"); m.ID != live {
		t.Fatalf("then live %v; want %v", m.ID, live)
	}
}

func dialErr(t *testing.T, e *env, opts DialOptions) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dialer.Dial(ctx, opts)
	if err == nil {
		c.Drop()
		t.Fatalf("dial %+v succeeded; want an error", opts)
	}
	return err
}

func testUnauthorized(t *testing.T, tr Transport) {
	e := start(t, tr, setup{})
	for _, tok := range []string{"", "forged"} {
		if err := dialErr(t, e, DialOptions{Token: tok}); !errors.Is(err, notify.ErrUnauthorized) {
			t.Errorf("token %q: %v; want unauthorized", tok, err)
		}
	}
	if n := e.hub.Stats().Connections; n != 0 {
		t.Fatalf("refused dials left %d connections", n)
	}
}

func testForbidden(t *testing.T, tr Transport) {
	e := start(t, tr, setup{})
	cases := []DialOptions{
		{Token: TokenBob, Channels: []string{"room.1"}},      // outside bob's grants
		{Token: TokenBob, Channels: []string{"user:alice"}},  // another user's channel
		{Token: TokenAlice, Channels: []string{"user:bob"}},  // another user's channel
		{Token: TokenBob, Channels: []string{"news", "sec"}}, // one bad channel refuses all
	}
	for _, o := range cases {
		if err := dialErr(t, e, o); !errors.Is(err, notify.ErrForbidden) {
			t.Errorf("%+v: %v; want forbidden", o, err)
		}
	}
	if err := dialErr(t, e, DialOptions{Token: TokenBob, Origin: "https://evil.example"}); !errors.Is(err, notify.ErrForbidden) {
		t.Errorf("cross-origin request from a foreign origin: %v; want forbidden", err)
	}
	if err := dialErr(t, e, DialOptions{Token: TokenBob, Channels: []string{"bad channel"}}); !errors.Is(err, notify.ErrInvalidChannel) {
		t.Errorf("invalid channel name: %v; want invalid_channel", err)
	}
	if n := e.hub.Stats().Connections; n != 0 {
		t.Fatalf("refused dials left %d connections", n)
	}
}

func testBadPosition(t *testing.T, tr Transport) {
	e := start(t, tr, setup{})
	for _, since := range []string{"yesterday", "news=1-x", "other=1-0", "1-0"} {
		if err := dialErr(t, e, DialOptions{Token: TokenBob, Channels: []string{"news"}, Since: since}); !errors.Is(err, notify.ErrInvalidPosition) {
			t.Errorf("since %q: %v; want invalid_position", since, err)
		}
	}
	// A position after the channel's end: an error notice naming the
	// channel; the rest of the connection works.
	last := e.publish("news", 1)
	future := notify.ID{Ms: last.Ms + 3_600_000}
	r := newReader(t, e.dial(DialOptions{Token: TokenBob, Channels: []string{"news"}, Since: "news=" + future.String()}), []string{"user:bob", "news"})
	r.expect(notify.TypeSubscribed, "user:bob")
	if got := r.expect(notify.TypeError, "news"); got.Code != notify.ErrUnknownPosition.Code {
		t.Fatalf("got %s; want unknown_position", got.JSON())
	}
	u := e.publish("user:bob", 2)
	if m := r.expect(notify.TypeMessage, "user:bob"); m.ID != u {
		t.Fatalf("got %v; want %v", m.ID, u)
	}
}

func send(t *testing.T, c Client, line string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Send(ctx, []byte(line)); err != nil {
		if len(line) > 100 {
			line = line[:100] + "…"
		}
		t.Fatalf("send %s: %v", line, err)
	}
}

func testCommands(t *testing.T, tr Transport) {
	e := start(t, tr, setup{})
	if !e.dialer.Duplex() {
		t.Skip("one-way transport: clients send no commands (SSE changes channels by reconnecting)")
	}
	r := newReader(t, e.dial(DialOptions{Token: TokenAlice}), []string{"user:alice", "room.1"})
	r.expect(notify.TypeSubscribed, "user:alice")
	send(t, r.c, `{"type":"subscribe","channel":"room.1","ref":"s1"}`)
	if got := r.expect(notify.TypeSubscribed, "room.1"); got.Ref != "s1" {
		t.Fatalf("subscribed ref %q; want s1", got.Ref)
	}
	send(t, r.c, `{"type":"publish","channel":"room.1","event":"chat","data":{"text":"hi"},"ref":"p1"}`)
	var ack, msg *notify.Envelope
	for ack == nil || msg == nil {
		switch got := r.next(); got.Type {
		case notify.TypeAck:
			ack = got
		case notify.TypeMessage:
			msg = got
		default:
			t.Fatalf("unexpected %s", got.JSON())
		}
	}
	if ack.Ref != "p1" || ack.ID != msg.ID || string(msg.Data) != `{"text":"hi"}` || msg.Event != "chat" {
		t.Fatalf("ack %s, message %s", ack.JSON(), msg.JSON())
	}
	send(t, r.c, `{"type":"publish","channel":"news","data":1,"ref":"p2"}`)
	if got := r.expect(notify.TypeError, "news"); got.Code != notify.ErrForbidden.Code || got.Ref != "p2" {
		t.Fatalf("publish outside the grants: %s; want forbidden with ref p2", got.JSON())
	}
	send(t, r.c, `{"type":"subscribe","channel":"user:bob","ref":"s2"}`)
	if got := r.expect(notify.TypeError, "user:bob"); got.Code != notify.ErrForbidden.Code || got.Ref != "s2" {
		t.Fatalf("subscribe to another user's channel: %s; want forbidden", got.JSON())
	}
	send(t, r.c, `{"type":"unsubscribe","channel":"room.1","ref":"u1"}`)
	if got := r.expect(notify.TypeUnsubscribed, "room.1"); got.Ref != "u1" {
		t.Fatalf("unsubscribed ref %q", got.Ref)
	}
	send(t, r.c, `{"type":"ping","ref":"x"}`)
	if got := r.expect(notify.TypePong, ""); got.Ref != "x" {
		t.Fatalf("pong ref %q", got.Ref)
	}
	// Resume a channel through the subscribe command.
	p := e.publish("room.1", 9)
	e.publish("room.1", 10)
	send(t, r.c, `{"type":"subscribe","channel":"room.1","since":"`+p.String()+`"}`)
	r.expect(notify.TypeSubscribed, "room.1")
	if m := r.expect(notify.TypeMessage, "room.1"); string(m.Data) != `{"n":10}` {
		t.Fatalf("resumed with %s; want message 10 only", m.JSON())
	}
}

func testMalformed(t *testing.T, tr Transport) {
	e := start(t, tr, setup{wire: wire.Config{MaxCommandSize: 4096}})
	if !e.dialer.Duplex() {
		t.Skip("one-way transport: clients send no commands")
	}
	r := newReader(t, e.dial(DialOptions{Token: TokenAlice}), []string{"user:alice"})
	r.expect(notify.TypeSubscribed, "user:alice")
	for _, bad := range []struct{ line, code string }{
		{`{"type":`, notify.ErrInvalidCommand.Code},
		{`[1,2]`, notify.ErrInvalidCommand.Code},
		{`{"type":"dance","ref":"d"}`, notify.ErrInvalidCommand.Code},
		{`{"type":"subscribe","channel":"a b","ref":"r"}`, notify.ErrInvalidChannel.Code},
		{`{"type":"subscribe","channel":"room.1","since":"tomorrow"}`, notify.ErrInvalidPosition.Code},
		{`{"type":"publish","channel":"room.1","data":{"a":}}`, notify.ErrInvalidCommand.Code},
		{`{"type":"publish","channel":"room.1","event":"a\nb","data":1}`, notify.ErrInvalidEvent.Code},
		{`{"type":"unsubscribe","channel":"room.9"}`, notify.ErrNotSubscribed.Code},
	} {
		send(t, r.c, bad.line)
		if got := r.expect(notify.TypeError, ""); got.Code != bad.code {
			t.Fatalf("sent %s: got %s; want %s", bad.line, got.JSON(), bad.code)
		}
	}
	if n := len(e.hub.UserConns("alice")); n != 1 {
		t.Fatalf("alice has %d connections", n)
	}
	send(t, r.c, `{"type":"ping","ref":"still"}`)
	if got := r.expect(notify.TypePong, ""); got.Ref != "still" {
		t.Fatalf("after bad input, pong %s", got.JSON())
	}
	// Oversized: the transport's documented reaction.
	oversized := []byte(`{"type":"publish","channel":"room.1","data":"` + strings.Repeat("x", 8192) + `"}`)
	if e.dialer.OversizeCloses() {
		// The server may close before the client has sent it all.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		sendErr := r.c.Send(ctx, oversized)
		cancel()
		_, err := r.end(10 * time.Second)
		t.Logf("oversized command: send %v", sendErr)
		t.Logf("oversized command closed the connection: %v", err)
		e.waitConns(0, 5*time.Second)
		return
	}
	send(t, r.c, string(oversized))
	if got := r.expect(notify.TypeError, ""); got.Code != notify.ErrTooLarge.Code {
		t.Fatalf("oversized command: %s; want too_large", got.JSON())
	}
	send(t, r.c, `{"type":"ping","ref":"after"}`)
	r.expect(notify.TypePong, "")
}

// testStalled: a client that stops reading is disconnected as lagging; the
// other client receives everything.
func testStalled(t *testing.T, tr Transport) {
	e := start(t, tr, setup{hub: notify.HubConfig{QueueLength: 64}, wire: wire.Config{WriteTimeout: 300 * time.Millisecond}})
	stalled := newReader(t, e.dial(DialOptions{Token: TokenBob, Channels: []string{"news"}}), []string{"user:bob", "news"})
	stalled.expect(notify.TypeSubscribed, "user:bob")
	stalled.expect(notify.TypeSubscribed, "news")
	fast := newReader(t, e.dial(DialOptions{Token: TokenAlice, Channels: []string{"news"}}), []string{"user:alice", "news"})
	fast.expect(notify.TypeSubscribed, "user:alice")
	fast.expect(notify.TypeSubscribed, "news")

	// The fast client reads concurrently; the stalled one reads nothing.
	const total = 4000
	payload := `"` + strings.Repeat("x", 4000) + `"`
	done := make(chan error, 1)
	var read atomic.Int64
	go func() {
		for i := 0; i < total; i++ {
			e, err := fast.read(20 * time.Second)
			if err != nil {
				done <- err
				return
			}
			if e.Type != notify.TypeMessage {
				done <- errors.New("fast client got " + string(e.JSON()))
				return
			}
			read.Add(1)
		}
		done <- nil
	}()
	var last notify.ID
	for i := 0; i < total; i++ {
		id, err := e.broker.Publish(context.Background(), notify.Publication{Channel: "news", Data: []byte(payload)})
		if err != nil {
			t.Fatal(err)
		}
		last = id
		// Let the fast client keep within its queue; the stalled one
		// falls behind regardless.
		for deadline := time.Now().Add(20 * time.Second); read.Load() < int64(i-32) && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("fast client: %v", err)
	}
	if fast.all[len(fast.all)-1].ID != last {
		t.Fatal("fast client did not end at the last message")
	}
	// A client that does not read cannot always be told why it is
	// dropped (its socket is full); the server must drop it as lagging,
	// and the client sees its connection end.
	e.waitUserConns("bob", 0, 30*time.Second)
	if st := e.hub.Stats(); st.Lagged() != 1 {
		t.Fatalf("hub counted %d lagged connections (%d queue overflows, %d write timeouts); want 1",
			st.Lagged(), st.Dropped[notify.DropQueueOverflow], st.Dropped[notify.DropWriteTimeout])
	}
	_, err := stalled.end(30 * time.Second)
	t.Logf("the stalled client saw its connection end with: %v", err)
	if n := len(e.hub.UserConns("alice")); n != 1 {
		t.Fatalf("the fast client was disconnected too")
	}
}

func testDrain(t *testing.T, tr Transport) {
	e := start(t, tr, setup{})
	r := newReader(t, e.dial(DialOptions{Token: TokenBob}), []string{"user:bob"})
	r.expect(notify.TypeSubscribed, "user:bob")
	wire.Drain(e.hub, 2*time.Second)
	got, err := r.end(10 * time.Second)
	if len(got) == 0 || got[len(got)-1].Type != notify.TypeReconnect {
		t.Fatalf("drain: last envelopes %v, end %v; want reconnect advice, then the end", got, err)
	}
	if d := got[len(got)-1].Delay; d < 0 || d > 2000 {
		t.Fatalf("reconnect delay %d ms; want within [0, 2000]", d)
	}
	e.waitConns(0, 5*time.Second)
}

func testDeadPeer(t *testing.T, tr Transport) {
	e := start(t, tr, setup{wire: wire.Config{Heartbeat: 200 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}})
	r := newReader(t, e.dial(DialOptions{Token: TokenBob}), []string{"user:bob"})
	r.expect(notify.TypeSubscribed, "user:bob")
	if err := r.c.Freeze(); err != nil {
		t.Skip(err.Error())
	}
	e.waitConns(0, 10*time.Second)
}
