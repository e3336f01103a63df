package conformance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// grace is the refresh grace of the expiry scenarios: long enough that a
// loaded machine reads the expiring notice in time, short enough to wait.
const grace = 500 * time.Millisecond

// testTokenExpiry: a connection whose token expires, and that is not
// refreshed, is warned (an expiring notice) and then ended with
// token_expired, counted as such.
func testTokenExpiry(t *testing.T, tr Transport) {
	e := start(t, tr, setup{wire: wire.Config{TokenRefreshGrace: grace}})
	// The expiry the token carries: ExpiringToken keeps milliseconds, so
	// the server's deadline may come up to 1 ms before Now()+2×grace.
	exp := time.UnixMilli(time.Now().Add(2 * grace).UnixMilli())
	opened := time.Now()
	r := newReader(t, e.dial(DialOptions{Token: ExpiringToken("bob", exp), Channels: []string{"news"}}), []string{"user:bob", "news"})
	r.expect(notify.TypeSubscribed, "user:bob")
	r.expect(notify.TypeSubscribed, "news")
	id := e.publish("news", 1)
	if m := r.expect(notify.TypeMessage, "news"); m.ID != id {
		t.Fatalf("message %v; want %v", m.ID, id)
	}
	warn := r.expect(notify.TypeExpiring, "")
	if warn.Code != notify.ErrTokenExpired.Code || warn.Delay <= 0 || warn.Delay > (2*grace).Milliseconds() {
		t.Fatalf("expiring notice %s; want code token_expired and a delay within (0, %d] ms", warn.JSON(), (2 * grace).Milliseconds())
	}
	got, err := r.end(10 * time.Second)
	if time.Now().Before(exp.Add(grace)) {
		t.Fatalf("ended %v after connecting, before the grace period was over", time.Since(opened))
	}
	told := errors.Is(err, notify.ErrTokenExpired)
	if n := len(got); n > 0 && got[n-1].Type == notify.TypeError && got[n-1].Code == notify.ErrTokenExpired.Code {
		told = true
		got = got[:n-1]
	}
	if !told || len(got) > 0 {
		t.Fatalf("ended with %v after %d more envelopes; want the token_expired reason and nothing else", err, len(got))
	}
	e.waitConns(0, 5*time.Second)
	if n := e.hub.Stats().Dropped[notify.DropTokenExpired]; n != 1 {
		t.Fatalf("hub counted %d token_expired drops; want 1", n)
	}
}

// refresh sends a refresh command and waits for its answer, collecting the
// messages that come meanwhile.
func (r *reader) refresh(token, ref string) (answer *notify.Envelope, msgs []*notify.Envelope) {
	r.t.Helper()
	line := `{"type":"refresh","token":"` + token + `","ref":"` + ref + `"}`
	if err := r.c.Send(context.Background(), []byte(line)); err != nil {
		r.t.Fatalf("send refresh: %v", err)
	}
	for {
		e := r.next()
		if e.Type == notify.TypeMessage {
			msgs = append(msgs, e)
			continue
		}
		if e.Ref != ref {
			r.t.Fatalf("got %s while waiting for the refresh answer", e.JSON())
		}
		return e, msgs
	}
}

// testRefresh: a refresh before expiry keeps the connection past the old
// expiry, and messages published across it arrive once each, in order.
func testRefresh(t *testing.T, tr Transport) {
	e := start(t, tr, setup{wire: wire.Config{TokenRefreshGrace: grace}})
	if !e.dialer.Duplex() {
		t.Skip("one-way transport: it reconnects on the expiring notice (TokenExpiryEndsConnection)")
	}
	exp := time.Now().Add(4 * grace)
	r := newReader(t, e.dial(DialOptions{Token: ExpiringToken("alice", exp), Channels: []string{"news"}}), []string{"user:alice", "news"})
	r.expect(notify.TypeSubscribed, "user:alice")
	r.expect(notify.TypeSubscribed, "news")
	var want []notify.ID
	for i := range 5 {
		want = append(want, e.publish("news", i))
	}
	publishing := make(chan []notify.ID)
	go func() {
		var ids []notify.ID
		for i := range 20 {
			ids = append(ids, e.publish("news", 100+i))
			time.Sleep(5 * time.Millisecond)
		}
		publishing <- ids
	}()
	ack, got := r.refresh(ExpiringToken("alice", time.Now().Add(time.Hour)), "r1")
	if ack.Type != notify.TypeRefreshed {
		t.Fatalf("refresh answered %s; want refreshed", ack.JSON())
	}
	want = append(want, <-publishing...)
	// Past the old token's expiry and grace: still open, still live.
	time.Sleep(time.Until(exp.Add(grace + 200*time.Millisecond)))
	want = append(want, e.publish("news", 999))
	for len(got) < len(want) {
		m := r.next()
		if m.Type != notify.TypeMessage {
			t.Fatalf("got %s; want only messages after the refresh", m.JSON())
		}
		got = append(got, m)
	}
	for i := range want {
		if got[i].ID != want[i] {
			t.Fatalf("message %d is %v; want %v (every message once, in order)", i, got[i].ID, want[i])
		}
	}
	if n := e.hub.Stats().Dropped[notify.DropTokenExpired]; n != 0 {
		t.Fatalf("hub counted %d token_expired drops; want 0", n)
	}
}

// testRefreshRefused: refreshes with another user's token, an unknown or
// expired token, or no token at all are refused with an error naming the
// ref, and change nothing: the grants and the expiry stay the first
// token's.
func testRefreshRefused(t *testing.T, tr Transport) {
	e := start(t, tr, setup{wire: wire.Config{TokenRefreshGrace: grace}})
	if !e.dialer.Duplex() {
		t.Skip("one-way transport: no commands")
	}
	exp := time.Now().Add(6 * grace)
	r := newReader(t, e.dial(DialOptions{Token: ExpiringToken("alice", exp)}), []string{"user:alice", "room.1"})
	r.expect(notify.TypeSubscribed, "user:alice")
	cases := []struct{ token, code string }{
		{ExpiringToken("bob", time.Now().Add(time.Hour)), notify.ErrForbidden.Code},
		{TokenBob, notify.ErrForbidden.Code},
		{"forged-token", notify.ErrUnauthorized.Code},
		{ExpiringToken("alice", time.Now().Add(-time.Second)), notify.ErrUnauthorized.Code},
	}
	for i, c := range cases {
		ans, _ := r.refresh(c.token, "bad"+itoa(i))
		if ans.Type != notify.TypeError || ans.Code != c.code || ans.Message == "" {
			t.Fatalf("refresh with %q answered %s; want an error %s with a message", c.token, ans.JSON(), c.code)
		}
	}
	if err := r.c.Send(context.Background(), []byte(`{"type":"refresh","ref":"empty"}`)); err != nil {
		t.Fatal(err)
	}
	if ans := r.expect(notify.TypeError, ""); ans.Ref != "empty" || ans.Code != notify.ErrInvalidCommand.Code {
		t.Fatalf("refresh without a token answered %s; want invalid_command", ans.JSON())
	}
	// Still alice's grants (bob's would forbid room.1).
	if err := r.c.Send(context.Background(), []byte(`{"type":"subscribe","channel":"room.1","ref":"s"}`)); err != nil {
		t.Fatal(err)
	}
	r.expect(notify.TypeSubscribed, "room.1")
	// Still alice's expiry: warned, then ended.
	r.expect(notify.TypeExpiring, "")
	got, err := r.end(10 * time.Second)
	t.Logf("ended with %v after %d envelopes", err, len(got))
	e.waitConns(0, 5*time.Second)
	if n := e.hub.Stats().Dropped[notify.DropTokenExpired]; n != 1 {
		t.Fatalf("hub counted %d token_expired drops; want 1", n)
	}
}
