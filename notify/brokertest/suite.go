// Package brokertest is the conformance suite every notify.Broker passes: the
// promises of docs/architecture.md ("The promises and how each is kept")
// checked through a real Hub. The memory broker runs it in notify's tests,
// the Redis broker against a real redis-server.
package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
)

// Options are what a scenario needs of the backend.
type Options struct {
	HistorySize int // messages retained per channel; 0 means the default
}

// Backend starts a fresh backend for one test and returns a function that
// makes broker instances on it: two calls are two instances sharing the
// backend, as two servers share one Redis. Instances are closed when t ends.
type Backend func(t *testing.T, opts Options) (newInstance func() notify.Broker)

// Run runs every scenario against backend.
func Run(t *testing.T, backend Backend) {
	scenarios := []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"PublishAndHistory", testPublishAndHistory},
		{"HistoryGapWhenTrimmed", testHistoryGap},
		{"UnknownPosition", testUnknownPosition},
		{"BadInputChangesNothing", testBadInput},
		{"FanOutAcrossInstances", testFanOut},
		{"ResumeExactlyOnce", testResume},
		{"GapNotice", testGapNotice},
		{"RandomizedResume", testRandomizedResume},
		{"StalledSubscriber", testStalledSubscriber},
		{"Unsubscribe", testUnsubscribe},
		{"ResumeFromSubscribedPosition", testResumeFromSubscribedPosition},
		{"AdvanceIDsAndPing", testAdvanceIDsAndPing},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { sc.fn(t, backend) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Publish publishes data {"n":n} on channel and fails t on error.
func Publish(t testing.TB, ctx context.Context, p notify.Publisher, channel string, n int) notify.ID {
	t.Helper()
	id, err := p.Publish(ctx, notify.Publication{Channel: channel, Event: "test", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))})
	if err != nil {
		t.Fatalf("publish %s #%d: %v", channel, n, err)
	}
	return id
}

func newHub(t *testing.T, b notify.Broker, cfg notify.HubConfig) *notify.Hub {
	h := notify.NewHub(b, cfg)
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func testPublishAndHistory(t *testing.T, backend Backend) {
	b := backend(t, Options{})()
	ctx := ctxT(t)
	var ids []notify.ID
	for i := 0; i < 30; i++ {
		ids = append(ids, Publish(t, ctx, b, "orders", i))
	}
	for i := 1; i < len(ids); i++ {
		if !ids[i].After(ids[i-1]) {
			t.Fatalf("IDs not strictly increasing: %v then %v", ids[i-1], ids[i])
		}
	}
	h, err := b.History(ctx, "orders", notify.ID{}, 100)
	if err != nil || h.Gap || len(h.Messages) != 30 {
		t.Fatalf("History(0) = %d messages, gap %v, err %v; want 30, no gap", len(h.Messages), h.Gap, err)
	}
	for i, m := range h.Messages {
		want := fmt.Sprintf(`{"type":"message","channel":"orders","id":"%s","event":"test","data":{"n":%d},"ts":%d}`, ids[i], i, ids[i].Ms)
		if string(m.JSON()) != want {
			t.Fatalf("history[%d] = %s\nwant %s", i, m.JSON(), want)
		}
	}
	h, err = b.History(ctx, "orders", ids[9], 5)
	if err != nil || h.Gap || len(h.Messages) != 5 || h.Messages[0].ID != ids[10] || h.Messages[4].ID != ids[14] {
		t.Fatalf("History(after #9, limit 5) = %v gap %v err %v; want #10..#14", h.Messages, h.Gap, err)
	}
	h, err = b.History(ctx, "orders", ids[29], 5)
	if err != nil || h.Gap || len(h.Messages) != 0 {
		t.Fatalf("History(after last) = %d messages, gap %v, err %v; want none", len(h.Messages), h.Gap, err)
	}
	h, err = b.History(ctx, "never.published", notify.ID{}, 5)
	if err != nil || h.Gap || len(h.Messages) != 0 {
		t.Fatalf("History of an empty channel from 0 = %d, gap %v, err %v; want nothing, no gap", len(h.Messages), h.Gap, err)
	}
	h, err = b.History(ctx, "never.published", ids[0], 5)
	if err != nil || !h.Gap {
		t.Fatalf("History of a missing channel from a position: gap %v err %v; want a gap (its history may have expired)", h.Gap, err)
	}
}

func testHistoryGap(t *testing.T, backend Backend) {
	b := backend(t, Options{HistorySize: 10})()
	ctx := ctxT(t)
	var ids []notify.ID
	for i := 0; i < 300; i++ {
		ids = append(ids, Publish(t, ctx, b, "ticker", i))
	}
	h, err := b.History(ctx, "ticker", ids[0], 1000)
	if err != nil || !h.Gap {
		t.Fatalf("History(after first of 300, 10 retained): gap %v err %v; want gap", h.Gap, err)
	}
	if n := len(h.Messages); n < 10 || n >= 299 {
		t.Fatalf("retained %d messages; want about 10", n)
	}
	if last := h.Messages[len(h.Messages)-1].ID; last != ids[299] {
		t.Fatalf("last retained %v; want %v", last, ids[299])
	}
	h, err = b.History(ctx, "ticker", ids[298], 1000)
	if err != nil || h.Gap || len(h.Messages) != 1 {
		t.Fatalf("History(after #298): %d messages gap %v err %v; want 1, no gap", len(h.Messages), h.Gap, err)
	}
}

func testUnknownPosition(t *testing.T, backend Backend) {
	b := backend(t, Options{})()
	ctx := ctxT(t)
	id := Publish(t, ctx, b, "news", 1)
	future := notify.ID{Ms: id.Ms + 3_600_000}
	_, err := b.History(ctx, "news", future, 10)
	if !errors.Is(err, notify.ErrUnknownPosition) {
		t.Fatalf("History(future position) err = %v; want ErrUnknownPosition", err)
	}
	h := newHub(t, b, notify.HubConfig{})
	cl := Connect(t, h)
	err = cl.Conn.Subscribe(ctx, notify.SubscribeRequest{Channel: "news", Since: future.String()})
	if !errors.Is(err, notify.ErrUnknownPosition) {
		t.Fatalf("subscribe from a future position: err = %v; want ErrUnknownPosition", err)
	}
	err = cl.Conn.Subscribe(ctx, notify.SubscribeRequest{Channel: "news", Since: "yesterday"})
	if !errors.Is(err, notify.ErrInvalidPosition) {
		t.Fatalf("subscribe from a malformed position: err = %v; want ErrInvalidPosition", err)
	}
	if chans := cl.Conn.Channels(); len(chans) != 0 {
		t.Fatalf("failed subscribes left subscriptions %v", chans)
	}
	// The connection stays usable.
	cl.Subscribe(t, "news", id.String())
	last := Publish(t, ctx, b, "news", 2)
	cl.WaitMessages(t, "news", 1, 10*time.Second)

	// A position just after the channel's end is one the broker lost
	// (Redis failed over before its replica had the last writes): the
	// client is not refused; a gap notice, then new messages.
	lostPos := notify.ID{Ms: last.Ms, Seq: last.Seq + 5}
	cl2 := Connect(t, h)
	if err := cl2.Conn.Subscribe(ctx, notify.SubscribeRequest{Channel: "news", Since: lostPos.String()}); err != nil {
		t.Fatalf("subscribe from a position just after the end: %v; want a gap notice", err)
	}
	time.Sleep(2 * time.Millisecond) // the next ID is from a later millisecond
	next := Publish(t, ctx, b, "news", 1)
	envs := cl2.WaitFor(t, 10*time.Second, "the next message", func(envs []*notify.Envelope) bool {
		return len(envs) > 0 && envs[len(envs)-1].ID == next
	})
	if len(envs) != 3 || envs[0].Type != notify.TypeSubscribed || envs[0].ID != lostPos ||
		envs[1].Type != notify.TypeGap || envs[2].Type != notify.TypeMessage {
		t.Fatalf("got %s; want subscribed at %v, gap, message", summarize(envs), lostPos)
	}
}

func testBadInput(t *testing.T, backend Backend) {
	b := backend(t, Options{})()
	ctx := ctxT(t)
	cases := []struct {
		name string
		pub  notify.Publication
		want *notify.Error
	}{
		{"empty channel", notify.Publication{Channel: "", Data: json.RawMessage(`1`)}, notify.ErrInvalidChannel},
		{"space in channel", notify.Publication{Channel: "a b", Data: json.RawMessage(`1`)}, notify.ErrInvalidChannel},
		{"hash tag in channel", notify.Publication{Channel: "a{b}", Data: json.RawMessage(`1`)}, notify.ErrInvalidChannel},
		{"newline in channel", notify.Publication{Channel: "a\nb", Data: json.RawMessage(`1`)}, notify.ErrInvalidChannel},
		{"long channel", notify.Publication{Channel: strings.Repeat("x", notify.MaxChannelLen+1), Data: json.RawMessage(`1`)}, notify.ErrInvalidChannel},
		{"user channel without user", notify.Publication{Channel: "user:", Data: json.RawMessage(`1`)}, notify.ErrInvalidChannel},
		{"newline in event", notify.Publication{Channel: "bad", Event: "a\nb", Data: json.RawMessage(`1`)}, notify.ErrInvalidEvent},
		{"data not JSON", notify.Publication{Channel: "bad", Data: json.RawMessage(`{"a":`)}, notify.ErrInvalidData},
		{"two JSON values", notify.Publication{Channel: "bad", Data: json.RawMessage(`1 2`)}, notify.ErrInvalidData},
		{"oversized data", notify.Publication{Channel: "bad", Data: json.RawMessage(`"` + strings.Repeat("x", notify.DefaultMaxPayload) + `"`)}, notify.ErrTooLarge},
	}
	for _, c := range cases {
		_, err := b.Publish(ctx, c.pub)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v; want %s", c.name, err, c.want.Code)
		}
	}
	_, err := b.PublishBatch(ctx, []notify.Publication{
		{Channel: "bad", Data: json.RawMessage(`1`)},
		{Channel: "bad", Data: json.RawMessage(`nope`)},
	})
	if !errors.Is(err, notify.ErrInvalidData) || !strings.Contains(err.Error(), "message 1") {
		t.Errorf("batch with one invalid message: err = %v; want invalid_data naming message 1", err)
	}
	// A normalized publication changed afterwards is validated again, and
	// one normalized with a larger limit still meets the broker's.
	n, err := notify.Publication{Channel: "bad", Data: json.RawMessage(`1`)}.Normalize(0)
	if err != nil {
		t.Fatal(err)
	}
	renamed, redata := n, n
	renamed.Channel = "a b"
	redata.Data = json.RawMessage(`nope`)
	large, err := notify.Publication{Channel: "bad", Data: json.RawMessage(`"` + strings.Repeat("x", notify.DefaultMaxPayload) + `"`)}.Normalize(2 * notify.DefaultMaxPayload)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		pub  notify.Publication
		want *notify.Error
	}{
		{"normalized, then renamed", renamed, notify.ErrInvalidChannel},
		{"normalized, then new data", redata, notify.ErrInvalidData},
		{"normalized with a larger limit", large, notify.ErrTooLarge},
	} {
		if _, err := b.Publish(ctx, c.pub); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v; want %s", c.name, err, c.want.Code)
		}
		if _, err := b.PublishBatch(ctx, []notify.Publication{n, c.pub}); !errors.Is(err, c.want) {
			t.Errorf("batch with %s: err = %v; want %s", c.name, err, c.want.Code)
		}
	}
	h, err := b.History(ctx, "bad", notify.ID{}, 10)
	if err != nil || len(h.Messages) != 0 {
		t.Fatalf("after rejected publishes, channel holds %d messages (err %v); want none", len(h.Messages), err)
	}
	if _, err := b.History(ctx, "a b", notify.ID{}, 10); !errors.Is(err, notify.ErrInvalidChannel) {
		t.Errorf("History(invalid channel) err = %v; want invalid_channel", err)
	}
	hub := newHub(t, b, notify.HubConfig{})
	cl := Connect(t, hub)
	if err := cl.Conn.Subscribe(ctx, notify.SubscribeRequest{Channel: "a b"}); !errors.Is(err, notify.ErrInvalidChannel) {
		t.Errorf("Subscribe(invalid channel) err = %v; want invalid_channel", err)
	}
}

func testFanOut(t *testing.T, backend Backend) {
	newInstance := backend(t, Options{})
	ctx := ctxT(t)
	ba, bb := newInstance(), newInstance()
	ha, hb := newHub(t, ba, notify.HubConfig{}), newHub(t, bb, notify.HubConfig{})
	var clients []*Client
	for i := 0; i < 3; i++ {
		for _, h := range []*notify.Hub{ha, hb} {
			cl := Connect(t, h)
			cl.Subscribe(t, "room.1", "")
			clients = append(clients, cl)
		}
	}
	var ids []notify.ID
	for i := 0; i < 20; i++ {
		pub := []notify.Broker{ba, bb}[i%2]
		ids = append(ids, Publish(t, ctx, pub, "room.1", i))
	}
	for ci, cl := range clients {
		got := cl.WaitMessages(t, "room.1", len(ids), 10*time.Second)
		checkExact(t, fmt.Sprintf("client %d", ci), got, ids)
	}
}

// checkExact fails t unless got carries exactly the IDs want, in order.
func checkExact(t testing.TB, who string, got []*notify.Envelope, want []notify.ID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s received %d messages; want %d", who, len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i] {
			t.Fatalf("%s message %d has ID %v; want %v", who, i, got[i].ID, want[i])
		}
	}
}

func testResume(t *testing.T, backend Backend) {
	newInstance := backend(t, Options{})
	ctx := ctxT(t)
	b := newInstance()
	h := newHub(t, newInstance(), notify.HubConfig{})
	var ids []notify.ID
	for i := 0; i < 50; i++ {
		ids = append(ids, Publish(t, ctx, b, "feed", i))
	}
	cl := Connect(t, h)
	cl.Subscribe(t, "feed", ids[19].String())
	for i := 50; i < 60; i++ {
		ids = append(ids, Publish(t, ctx, b, "feed", i))
	}
	got := cl.WaitMessages(t, "feed", 40, 10*time.Second)
	checkExact(t, "resumed client", got, ids[20:])
	envs := cl.Envelopes()
	if envs[0].Type != notify.TypeSubscribed || envs[0].Channel != "feed" {
		t.Fatalf("first envelope %s; want subscribed", envs[0].JSON())
	}
	// From 0-0: everything retained.
	cl2 := Connect(t, h)
	cl2.Subscribe(t, "feed", "0-0")
	checkExact(t, "client from 0-0", cl2.WaitMessages(t, "feed", 60, 10*time.Second), ids)
}

func testGapNotice(t *testing.T, backend Backend) {
	b := backend(t, Options{HistorySize: 10})()
	ctx := ctxT(t)
	var ids []notify.ID
	for i := 0; i < 300; i++ {
		ids = append(ids, Publish(t, ctx, b, "ticker", i))
	}
	h := newHub(t, b, notify.HubConfig{})
	cl := Connect(t, h)
	cl.Subscribe(t, "ticker", ids[5].String())
	live := Publish(t, ctx, b, "ticker", 300)
	envs := cl.WaitFor(t, 10*time.Second, "the live message", func(envs []*notify.Envelope) bool {
		return len(envs) > 0 && envs[len(envs)-1].ID == live
	})
	if envs[0].Type != notify.TypeSubscribed || envs[1].Type != notify.TypeGap || envs[1].Since != ids[5] {
		t.Fatalf("envelopes start %s %s; want subscribed, then gap since %v", envs[0].JSON(), envs[1].JSON(), ids[5])
	}
	msgs := envs[2:]
	for i, m := range msgs {
		if m.Type != notify.TypeMessage || (i > 0 && !m.ID.After(msgs[i-1].ID)) {
			t.Fatalf("after the gap, envelope %d is %s", i, m.JSON())
		}
	}
	if msgs[len(msgs)-2].ID != ids[299] {
		t.Fatalf("retained history should end with the last published message")
	}
}

func testUnsubscribe(t *testing.T, backend Backend) {
	b := backend(t, Options{})()
	ctx := ctxT(t)
	h := newHub(t, b, notify.HubConfig{Linger: -1})
	cl := Connect(t, h)
	cl.Subscribe(t, "a", "")
	cl.Subscribe(t, "b", "")
	Publish(t, ctx, b, "a", 1)
	cl.WaitMessages(t, "a", 1, 10*time.Second)
	if err := cl.Conn.Unsubscribe(ctx, "a", "r1"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Conn.Unsubscribe(ctx, "a", "r2"); !errors.Is(err, notify.ErrNotSubscribed) {
		t.Fatalf("second unsubscribe: err = %v; want not_subscribed", err)
	}
	Publish(t, ctx, b, "a", 2)
	Publish(t, ctx, b, "b", 3)
	cl.WaitMessages(t, "b", 1, 10*time.Second)
	if n := len(cl.Messages("a")); n != 1 {
		t.Fatalf("received %d messages on a; want 1 (none after unsubscribe)", n)
	}
	var sawUnsub bool
	for _, e := range cl.Envelopes() {
		sawUnsub = sawUnsub || (e.Type == notify.TypeUnsubscribed && e.Channel == "a" && e.Ref == "r1")
	}
	if !sawUnsub {
		t.Fatalf("no unsubscribed notice with ref r1")
	}
	// With Linger -1 the broker subscription of "a" goes promptly.
	deadline := time.Now().Add(5 * time.Second)
	for h.Stats().Channels != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("hub still holds %d channel subscriptions; want 1", h.Stats().Channels)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Resubscribing works after the broker unsubscribe.
	cl.Subscribe(t, "a", "")
	Publish(t, ctx, b, "a", 4)
	cl.WaitMessages(t, "a", 2, 10*time.Second)
}

// testResumeFromSubscribedPosition: a live subscription's subscribed notice
// carries the position it starts after, so a client that disconnects before
// any message arrives resumes from there without missing anything.
func testResumeFromSubscribedPosition(t *testing.T, backend Backend) {
	b := backend(t, Options{})()
	ctx := ctxT(t)
	h := newHub(t, b, notify.HubConfig{})
	before := Publish(t, ctx, b, "quiet", 0)
	cl := Connect(t, h)
	cl.Subscribe(t, "quiet", "")
	cl.Subscribe(t, "empty", "")
	envs := cl.WaitFor(t, 5*time.Second, "two subscribed notices", func(e []*notify.Envelope) bool { return len(e) == 2 })
	if envs[0].ID != before {
		t.Fatalf("subscribed to a channel whose last message is %v: notice %s; want that position", before, envs[0].JSON())
	}
	if !envs[1].ID.IsZero() || envs[1].Channel != "empty" {
		t.Fatalf("subscribed to a channel without messages: %s; want position 0-0", envs[1].JSON())
	}
	cl.Close()
	var missed, missedEmpty []notify.ID
	for i := 1; i <= 3; i++ {
		missed = append(missed, Publish(t, ctx, b, "quiet", i))
		missedEmpty = append(missedEmpty, Publish(t, ctx, b, "empty", i))
	}
	again := Connect(t, h)
	again.Subscribe(t, "quiet", envs[0].ID.String())
	again.Subscribe(t, "empty", envs[1].ID.String())
	checkExact(t, "resumed from the subscribed position", again.WaitMessages(t, "quiet", 3, 10*time.Second), missed)
	checkExact(t, "resumed from 0-0", again.WaitMessages(t, "empty", 3, 10*time.Second), missedEmpty)
}

// testAdvanceIDsAndPing: AdvanceIDs moves a channel's next IDs past a
// position, never backwards, and refuses a bad channel; Ping answers.
func testAdvanceIDsAndPing(t *testing.T, backend Backend) {
	b := backend(t, Options{})()
	ctx := ctxT(t)
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	first := Publish(t, ctx, b, "advance", 1)
	past := notify.ID{Ms: first.Ms + 60_000, Seq: 7}
	if err := b.AdvanceIDs(ctx, "advance", past); err != nil {
		t.Fatalf("AdvanceIDs: %v", err)
	}
	second := Publish(t, ctx, b, "advance", 2)
	if !second.After(past) {
		t.Fatalf("after AdvanceIDs(%v) the next ID is %v", past, second)
	}
	if err := b.AdvanceIDs(ctx, "advance", first); err != nil {
		t.Fatalf("AdvanceIDs backwards: %v", err)
	}
	if third := Publish(t, ctx, b, "advance", 3); !third.After(second) {
		t.Fatalf("after AdvanceIDs(%v), an earlier position, the next ID is %v; want after %v", first, third, second)
	}
	if err := b.AdvanceIDs(ctx, "a b", past); !errors.Is(err, notify.ErrInvalidChannel) {
		t.Errorf("AdvanceIDs(invalid channel) err = %v; want invalid_channel", err)
	}
}
