package main

import (
	"context"
	"encoding/json"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/ws"
)

type presenceAnswer struct {
	Count   int
	Members []notify.Member
	Next    string
	Error   struct{ Code, Message string }
}

func mintPresence(t *testing.T, s *server, user string, channels, presence []string) string {
	t.Helper()
	var out struct{ Token string }
	body := map[string]any{"user": user, "channels": channels, "presence": presence, "ttl": "5m"}
	if st := call(t, "POST", s.url("/v1/token"), testAPIKey, body, &out); st != 200 {
		t.Fatalf("mint: status %d", st)
	}
	return out.Token
}

func getPresence(t *testing.T, s *server, bearer, query string) (int, presenceAnswer) {
	t.Helper()
	var a presenceAnswer
	st := call(t, "GET", s.url("/v1/presence?"+query), bearer, nil, &a)
	return st, a
}

// TestRESTPresence: GET /v1/presence lists the members that WebSocket
// subscriptions with a presence grant made, page by page, for an API key or
// a token allowed presence on the channel; bad input is a 400, no grant a
// 403.
func TestRESTPresence(t *testing.T) {
	s := startServer(t, "--presence-interval", "20ms")
	ctx := context.Background()
	users := []string{"u1", "u2", "u3"}
	for _, u := range users {
		tok := mintPresence(t, s, u, []string{"room."}, []string{"room."})
		c, err := ws.Dial(ctx, "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: tok, Channels: []string{"room.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		next(t, c, notify.TypeSubscribed) // user:<u>
		if e := next(t, c, notify.TypeSubscribed); e.Presence == nil {
			t.Fatalf("subscribed with a presence grant has no snapshot: %s", e.JSON())
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, a := getPresence(t, s, testAPIKey, "channel=room.1&limit=0"); st == 200 && a.Count == 3 && len(a.Members) == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("count only: %d %+v; want count 3", st, a)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Paged by 2 with a token allowed presence on room.*: every member once.
	reader := mintPresence(t, s, "reader", nil, []string{"room."})
	var got []string
	cursor := ""
	for range 3 {
		st, a := getPresence(t, s, reader, "channel=room.1&limit=2&cursor="+url.QueryEscape(cursor))
		if st != 200 || a.Count != 3 || len(a.Members) > 2 {
			t.Fatalf("page: %d %+v", st, a)
		}
		for _, m := range a.Members {
			got = append(got, m.User)
		}
		if cursor = a.Next; cursor == "" {
			break
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, users) {
		t.Fatalf("members %v; want %v", got, users)
	}

	subscriber := mint(t, s, "sub", []string{"room."}, nil) // may subscribe, not see presence
	for _, c := range []struct {
		name, bearer, query string
		status              int
		code                string
	}{
		{"no credentials", "", "channel=room.1", 401, "unauthorized"},
		{"forged token", reader + "x", "channel=room.1", 401, "unauthorized"},
		{"no presence grant", subscriber, "channel=room.1", 403, "forbidden"},
		{"outside the grant", reader, "channel=news", 403, "forbidden"},
		{"no channel", testAPIKey, "", 400, "invalid_channel"},
		{"bad channel", testAPIKey, "channel=a%20b", 400, "invalid_channel"},
		{"limit not a number", testAPIKey, "channel=room.1&limit=x", 400, "invalid_command"},
		{"limit negative", testAPIKey, "channel=room.1&limit=-1", 400, "invalid_command"},
		{"limit too large", testAPIKey, "channel=room.1&limit=1001", 400, "invalid_command"},
		{"bad cursor", testAPIKey, "channel=room.1&cursor=%00garbage", 400, "invalid_cursor"},
	} {
		if st, a := getPresence(t, s, c.bearer, c.query); st != c.status || a.Error.Code != c.code || a.Error.Message == "" {
			t.Errorf("%s: %d %+v; want %d %s", c.name, st, a.Error, c.status, c.code)
		}
	}
	// The refusals changed nothing.
	if st, a := getPresence(t, s, testAPIKey, "channel=room.1"); st != 200 || a.Count != 3 || len(a.Members) != 3 {
		t.Fatalf("after the refusals: %d %+v", st, a)
	}
}

// TestTokenPresenceGrantErrors: a bad presence grant is refused when
// minting, naming the claim.
func TestTokenPresenceGrantErrors(t *testing.T) {
	s := startServer(t)
	var e presenceAnswer
	st := call(t, "POST", s.url("/v1/token"), testAPIKey, map[string]any{"user": "x", "presence": []string{"a b"}}, &e)
	if st != 400 || e.Error.Code != "invalid_channel" {
		t.Fatalf("bad presence grant: %d %+v; want 400 invalid_channel", st, e.Error)
	}
	if err := runToken([]string{"--secret", strings.Repeat("s", 32), "--user", "x", "--presence", "a b"}, io.Discard); err == nil {
		t.Fatal("herald token --presence 'a b': no error")
	}
	var out strings.Builder
	if err := runToken([]string{"--secret", strings.Repeat("s", 32), "--user", "x", "--presence", "room."}, &out); err != nil {
		t.Fatal(err)
	}
	g, err := s.auth.Verify(context.Background(), strings.TrimSpace(out.String()))
	if err != nil || !g.CanPresence("room.1") {
		t.Fatalf("herald token --presence room.: %+v, %v", g, err)
	}
}

func TestServePresenceFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--presence-interval", "0"}, {"--presence-lease", "-1s"}, {"--presence-interval", "1s", "--presence-lease", "2s"},
		{"--presence-snapshot", "0"}, {"--presence-snapshot", "1001"},
	} {
		if _, err := serveFlags(args); err == nil {
			t.Errorf("serve %v: no error", args)
		}
	}
}

// TestPresenceAcrossInstancesOnRedis: two servers on one Redis share a
// channel's presence: a subscriber on one sees a member of the other join
// and leave, and either REST API lists both.
func TestPresenceAcrossInstancesOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	a := startServer(t, "--redis", srv.URL(), "--presence-interval", "20ms")
	b := startServer(t, "--redis", srv.URL(), "--presence-interval", "20ms")
	ctx := context.Background()
	ca, err := ws.Dial(ctx, "ws://"+a.plainAddr+"/v1/ws", ws.DialOptions{Token: mintPresence(t, a, "ann", []string{"room."}, []string{"room."}), Channels: []string{"room.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.CloseNow()
	next(t, ca, notify.TypeSubscribed)
	next(t, ca, notify.TypeSubscribed)
	cb, err := sse.Dial(ctx, b.url("/v1/sse"), sse.DialOptions{Token: mintPresence(t, b, "ben", []string{"room."}, []string{"room."}), Channels: []string{"room.1"}})
	if err != nil {
		t.Fatal(err)
	}
	next(t, cb, notify.TypeSubscribed)
	next(t, cb, notify.TypeSubscribed)

	users := map[string]bool{}
	waitPresence := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			e := next(t, ca, notify.TypePresence)
			var d struct{ Joins, Leaves []notify.Member }
			if err := json.Unmarshal(e.Presence, &d); err != nil {
				t.Fatal(err)
			}
			for _, m := range d.Joins {
				users[m.User] = true
			}
			for _, m := range d.Leaves {
				delete(users, m.User)
			}
		}
	}
	waitPresence("ben's join, from the other instance", func() bool { return users["ann"] && users["ben"] })
	for _, s := range []*server{a, b} {
		if st, p := getPresence(t, s, testAPIKey, "channel=room.1"); st != 200 || p.Count != 2 || len(p.Members) != 2 {
			t.Fatalf("GET /v1/presence on %s: %d %+v; want ann and ben", s.plainAddr, st, p)
		}
	}
	cb.Close()
	waitPresence("ben's leave", func() bool { return !users["ben"] })
	if st, p := getPresence(t, b, testAPIKey, "channel=room.1&limit=0"); st != 200 || p.Count != 1 {
		t.Fatalf("after ben left: %d %+v", st, p)
	}
}
