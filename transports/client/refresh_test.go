package client

import (
	"context"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// refreshGrace is the server's refresh grace in these tests; tokens live
// 2 s (1 to 2 s: exp is whole seconds), so the expiring notice comes
// 0.5 to 1.5 s after connecting.
const refreshGrace = 500 * time.Millisecond

// expiringClient starts a server with the refresh grace and a client on tr
// whose tokens live 2 s.
func expiringClient(t *testing.T, tr Transport) (*testServer, *tokenSource, *states, *Client) {
	t.Helper()
	s := startTestServerWith(t, notify.HubConfig{}, wire.Config{TokenRefreshGrace: refreshGrace})
	cfg, tokens := s.config(tr, "42", "news")
	tokens.ttl = 2 * time.Second
	cfg.Since = "news=0-0;user:42=0-0"
	st, c := runConnected(t, cfg)
	return s, tokens, st, c
}

// publishAcross publishes numbered messages on news every 10 ms for d and
// checks that the client receives each exactly once, in order.
func publishAcross(t *testing.T, s *testServer, c *Client, d time.Duration) {
	t.Helper()
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); n++ {
		s.publish("news", n)
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < n; i++ {
		if got := number(t, next(t, c)); got != i {
			t.Fatalf("message %d is number %d; want every message once, in order", i, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if e, err := c.Next(ctx); err == nil {
		t.Fatalf("extra envelope %s", e.JSON())
	}
}

func reconnects(st *states) int {
	n := 0
	for _, s := range st.all() {
		if s.Phase == Reconnecting {
			n++
		}
	}
	return n
}

// On duplex transports the client refreshes its token on the connection:
// past several expiries, no reconnect, no loss, no duplicate.
func TestRefreshKeepsDuplexConnection(t *testing.T) {
	for _, tr := range []Transport{WebSocket, HTTP3, WebTransport} {
		t.Run(string(tr), func(t *testing.T) {
			s, tokens, st, c := expiringClient(t, tr)
			publishAcross(t, s, c, 3500*time.Millisecond)
			if n := tokens.count(); n < 3 {
				t.Fatalf("%d tokens fetched in 3.5 s of 2 s tokens; want the connect one and refreshes", n)
			}
			if n := reconnects(st); n != 0 {
				t.Fatalf("%d reconnects; want none (states %v)", n, st.all())
			}
			if n := s.hub().Stats().Dropped[notify.DropTokenExpired]; n != 0 {
				t.Fatalf("%d token_expired drops; want 0", n)
			}
		})
	}
}

// A duplex connection that cannot refresh (the token source fails once)
// is ended with token_expired; the client reconnects at once with a new
// token and resumes: no loss, no duplicate.
func TestExpiryWithoutRefreshReconnectsAndResumes(t *testing.T) {
	for _, tr := range []Transport{WebSocket, HTTP3, WebTransport} {
		t.Run(string(tr), func(t *testing.T) {
			s, tokens, st, c := expiringClient(t, tr)
			tokens.fail.Store(1)
			publishAcross(t, s, c, 3*time.Second)
			if n := s.hub().Stats().Dropped[notify.DropTokenExpired]; n != 1 {
				t.Fatalf("%d token_expired drops; want 1", n)
			}
			if n := reconnects(st); n != 1 {
				t.Fatalf("%d reconnects; want 1 (states %v)", n, st.all())
			}
			var expired State
			for _, s := range st.all() {
				if s.Phase == Reconnecting {
					expired = s
				}
			}
			if expired.Delay != 0 {
				t.Fatalf("reconnected after %v; want at once", expired.Delay)
			}
		})
	}
}

// SSE cannot refresh: on the expiring notice the client reconnects with a
// new token before the server ends the connection, and resumes.
func TestExpiringOneWayReconnectsAndResumes(t *testing.T) {
	s, tokens, st, c := expiringClient(t, SSE)
	publishAcross(t, s, c, 3*time.Second)
	if n := tokens.count(); n < 2 {
		t.Fatalf("%d tokens fetched; want a new one per connection", n)
	}
	if n := reconnects(st); n < 1 {
		t.Fatalf("no reconnect in 3 s of 2 s tokens (states %v)", st.all())
	}
	if n := s.hub().Stats().Dropped[notify.DropTokenExpired]; n != 0 {
		t.Fatalf("%d token_expired drops; want 0 (the client leaves first)", n)
	}
}
