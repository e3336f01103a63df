package client

import (
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/notify"
)

// TestPresenceView: on every transport, the client's view of a channel's
// members follows joins and leaves, and after the server drops every
// connection the reconnections' snapshots replace it: the old connections
// are gone from it, the new ones are in.
func TestPresenceView(t *testing.T) {
	for _, tr := range []Transport{WebSocket, SSE, HTTP3} {
		t.Run(string(tr), func(t *testing.T) {
			s := startTestServer(t)
			views := make(chan Presence, 256)
			cfg, ts := s.config(tr, "ann", "room.1")
			ts.presence = []string{"room."}
			cfg.OnPresence = func(p Presence) { views <- p }
			_, ann := runConnected(t, cfg)
			bcfg, bts := s.config(tr, "ben", "room.1")
			bts.presence = []string{"room."}
			runConnected(t, bcfg)

			// The view is the hub's connections, by ID.
			current := func() []notify.Member {
				var ms []notify.Member
				for _, u := range []string{"ann", "ben"} {
					for _, c := range s.hub().UserConns(u) {
						ms = append(ms, notify.Member{User: u, Conn: c.ID()})
					}
				}
				return ms
			}
			awaitView := func(what string) {
				t.Helper()
				deadline := time.After(10 * time.Second)
				for {
					want := current()
					if p, ok := ann.Presence("room.1"); ok && len(want) == 2 && slices.Equal(p.Members, want) && p.Count == 2 {
						return
					}
					select {
					case <-views:
					case <-time.After(20 * time.Millisecond):
					case <-deadline:
						p, _ := ann.Presence("room.1")
						t.Fatalf("%s: ann sees %+v; the hub has %v", what, p, current())
					}
				}
			}
			awaitView("both connected")
			old := current()
			if n := s.dropAll(notify.ErrShutdown); n != 2 {
				t.Fatalf("dropped %d connections; want 2", n)
			}
			awaitView("both reconnected")
			p, _ := ann.Presence("room.1")
			for _, m := range old {
				if slices.Contains(p.Members, m) {
					t.Fatalf("old connection %v still in the view %v", m, p.Members)
				}
			}
			if _, ok := ann.Presence("user:ann"); ok {
				t.Fatal("the user's own channel has presence without a grant on it")
			}
		})
	}
}

// TestPresenceWithoutGrant: a token without presence grants gives no view.
func TestPresenceWithoutGrant(t *testing.T) {
	s := startTestServer(t)
	called := make(chan Presence, 1)
	cfg, _ := s.config(WebSocket, "ann", "room.1")
	cfg.Since = "0-0" // the message below, even if published before the subscription
	cfg.OnPresence = func(p Presence) { called <- p }
	_, c := runConnected(t, cfg)
	s.publish("room.1", 1)
	if e := next(t, c); e.Type != notify.TypeMessage {
		t.Fatalf("got %s", e.JSON())
	}
	if p, ok := c.Presence("room.1"); ok {
		t.Fatalf("a view without a grant: %+v", p)
	}
	select {
	case p := <-called:
		t.Fatalf("OnPresence called without a grant: %+v", p)
	default:
	}
}

// The view applies diffs on the snapshot, ignores diffs of channels without
// a snapshot, drops the view with the channel, and a reconnection's
// snapshot replaces it rather than merging.
func TestPresenceViewSnapshotsAndDiffs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		var seen []Presence
		c := startFake(t, d, Config{Channels: []string{"room.1", "news"}, OnPresence: func(p Presence) { seen = append(seen, p) }})
		ann, ben, cat := notify.Member{User: "ann", Conn: "a"}, notify.Member{User: "ben", Conn: "b"}, notify.Member{User: "cat", Conn: "c"}
		snap := func(ms ...notify.Member) *notify.Envelope {
			e := subscribedAt("room.1", 1)
			e.Presence = notify.AppendPresencePage(nil, notify.PresencePage{Count: len(ms), Members: ms})
			return e
		}
		diff := func(ch string, count int, joins, leaves []notify.Member) *notify.Envelope {
			return notify.NewPresence(notify.PresenceDiff{Channel: ch, Count: count, Joins: joins, Leaves: leaves})
		}
		f := <-d.conns
		f.give(t, snap(ben), subscribedAt("news", 1),
			diff("room.1", 1, []notify.Member{ben}, nil), // already in the snapshot
			diff("room.1", 2, []notify.Member{ann}, nil),
			diff("news", 5, []notify.Member{cat}, nil), // no snapshot: not a presence subscription
			msg("room.1", 2))
		next(t, c) // the message: every envelope before it was handled
		p, ok := c.Presence("room.1")
		if !ok || p.Count != 2 || !slices.Equal(p.Members, []notify.Member{ann, ben}) {
			t.Fatalf("view %+v", p)
		}
		if _, ok := c.Presence("news"); ok {
			t.Fatal("news has a view without a snapshot")
		}
		if len(seen) != 3 || seen[2].Joins[0] != ann || seen[0].Joins != nil {
			t.Fatalf("OnPresence saw %+v", seen)
		}

		f.end <- errors.New("network down")
		f = <-d.conns
		f.give(t, snap(cat), subscribedAt("news", 1), msg("room.1", 3))
		next(t, c)
		if p, _ := c.Presence("room.1"); p.Count != 1 || !slices.Equal(p.Members, []notify.Member{cat}) {
			t.Fatalf("after a reconnection the view is %+v; want the new snapshot alone", p)
		}
		// A bare reset keeps the view; a reset with members replaces it.
		f.give(t, notify.NewPresence(notify.PresenceDiff{Channel: "room.1", Count: 1, Reset: true}),
			notify.NewPresenceSnapshot("room.1", notify.PresencePage{Count: 2, Members: []notify.Member{ann, ben}}),
			msg("room.1", 4))
		next(t, c)
		if p, _ := c.Presence("room.1"); p.Count != 2 || !slices.Equal(p.Members, []notify.Member{ann, ben}) {
			t.Fatalf("after a reset with members the view is %+v; want ann and ben", p)
		}
		errc := make(chan error, 1)
		go func() { errc <- c.Unsubscribe(t.Context(), "room.1") }()
		cmd := <-f.sent
		f.give(t, &notify.Envelope{Type: notify.TypeUnsubscribed, Channel: "room.1", Ref: cmd.Ref})
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Presence("room.1"); ok {
			t.Fatal("a view outlives its channel")
		}
	})
}
