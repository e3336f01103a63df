package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

var transports = []Transport{WebSocket, SSE, HTTP3, WebTransport}

// Promise 3 through the client, on every transport: a numbered sequence
// published on two channels (a topic and the user's own) while the
// server drops the connection again and again — as lagging, as closed, as
// broker-unavailable, or by cutting the TCP connections — reaches the
// caller exactly once and in order. Every connection used a fresh
// single-use token.
func TestResumeExactlyOnceAcrossDisconnects(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			s := startTestServer(t)
			cfg, tokens := s.config(tr, "42", "news")
			cfg.Since = "news=0-0;user:42=0-0" // everything, however soon it is published
			st := newStates()
			cfg.OnState = st.record
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			run(t, c)

			const rounds, perRound = 6, 40
			const total = (rounds + 1) * perRound
			errc := make(chan error, 1)
			go func() { errc <- publishWithDrops(s, tr, rounds, perRound) }()

			got := map[string][]int{}
			for len(got["news"])+len(got["user:42"]) < 2*total {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				e, err := c.Next(ctx)
				cancel()
				if err != nil {
					select {
					case perr := <-errc:
						t.Fatalf("Next: %v (after %d news, %d user:42); publisher: %v; state %v", err, len(got["news"]), len(got["user:42"]), perr, c.State())
					default:
						t.Fatalf("Next: %v (after %d news, %d user:42); publisher still running; state %v", err, len(got["news"]), len(got["user:42"]), c.State())
					}
				}
				got[e.Channel] = append(got[e.Channel], number(t, e))
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			for _, ch := range []string{"news", "user:42"} {
				for i, n := range got[ch] {
					if n != i {
						t.Fatalf("%s: message %d is number %d (sequence %v…)", ch, i, n, got[ch][:min(len(got[ch]), i+3)])
					}
				}
			}
			// Nothing more: no duplicate is still on its way.
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			if e, err := c.Next(ctx); err == nil {
				t.Fatalf("extra envelope %s", e.JSON())
			}

			// A drop ends a connection, or fails a dial when it cuts one
			// the hub registered before the client saw the response.
			attempts, reconnects, unauthorized := 0, 0, 0
			for _, s := range st.all() {
				switch s.Phase {
				case Connecting:
					attempts++
				case Reconnecting:
					reconnects++
					if errors.Is(s.Err, notify.ErrUnauthorized) {
						unauthorized++
					}
				}
			}
			if reconnects < rounds {
				t.Errorf("%d reconnections for %d drops", reconnects, rounds)
			}
			if unauthorized > 0 || tokens.count() != attempts {
				t.Errorf("%d tokens, %d refused as unauthorized, for %d attempts; want one fresh token each", tokens.count(), unauthorized, attempts)
			}
			if t.Failed() {
				for _, s := range st.all() {
					t.Log(s)
				}
			}
		})
	}
}

// publishWithDrops publishes perRound numbered messages on news and
// user:42 per round, dropping the client's connection halfway through,
// rounds times, then a last round without a drop. The second half of a
// round is published while the client is (most likely) disconnected, so it
// arrives through the resume. Each round waits for the new connection, so
// that every drop ends a live one.
func publishWithDrops(s *testServer, tr Transport, rounds, perRound int) error {
	n := 0
	publish := func(k int) {
		for range k {
			s.publish("news", n)
			s.publish("user:42", n)
			n++
		}
	}
	var dropped []*notify.Conn
	for r := 0; r <= rounds; r++ {
		if err := waitNewConn(s, dropped); err != nil {
			return err
		}
		publish(perRound / 2)
		if r < rounds {
			dropped = s.hub().Conns()
			switch {
			case r%3 == 2 && tr != HTTP3 && tr != WebTransport:
				s.tcp.cutAll() // the network fails: no goodbye
			case r%3 == 0:
				s.dropAll(notify.ErrLagged)
			case r%3 == 1:
				s.dropAll(nil)
			default:
				s.dropAll(notify.ErrUnavailable)
			}
		}
		publish(perRound - perRound/2)
	}
	return nil
}

// waitNewConn polls until the current instance has one connection, not
// one of old.
func waitNewConn(s *testServer, old []*notify.Conn) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		conns := s.hub().Conns()
		if len(conns) == 1 && !slices.Contains(old, conns[0]) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for a new connection (have %d)", len(conns))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitConns polls until the current instance has n connections.
func waitConns(s *testServer, n int) error {
	deadline := time.Now().Add(10 * time.Second)
	for len(s.hub().Conns()) != n {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %d connections (have %d)", n, len(s.hub().Conns()))
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// A used token is refused (401): the client fetches a fresh one and
// connects again, reporting the refusal meanwhile.
func TestTokenRefreshedPerConnect(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			s := startTestServer(t)
			cfg, tokens := s.config(tr, "7", "news")
			st, c := runConnected(t, cfg)
			for range 3 {
				s.dropAll(nil)
				st.waitFor(t, "connected again", isPhase(Connected))
			}
			tokens.reuse.Store(true) // the next token is the last one, used already
			s.dropAll(nil)
			refused := st.waitFor(t, "a refusal", func(s State) bool { return s.Phase == Reconnecting && errors.Is(s.Err, notify.ErrUnauthorized) })
			st.waitFor(t, "connected with a fresh token", isPhase(Connected))
			if !errors.Is(refused.Err, notify.ErrUnauthorized) {
				t.Errorf("refusal %v", refused.Err)
			}
			attempts := 0
			for _, s := range st.all() {
				if s.Phase == Connecting {
					attempts++
				}
			}
			issued := tokens.issuedList()
			if len(issued) != attempts-1 || len(slices.Compact(slices.Sorted(slices.Values(issued)))) != len(issued) {
				t.Errorf("%d attempts (one with a used token), %d tokens minted; want a distinct fresh one for each other attempt", attempts, len(issued))
			}
			if c.State().Phase != Connected || c.Err() != nil {
				t.Errorf("state %v, err %v", c.State(), c.Err())
			}
		})
	}
}

func (ts *tokenSource) issuedList() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.issued)
}

// wire.Drain advises every connection to reconnect after a random delay:
// the client waits that delay, reconnects — here to another instance on
// the same broker, as a load balancer would send it — and resumes.
func TestDrainAdvice(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			s := startTestServer(t)
			cfg, _ := s.config(tr, "9", "news")
			cfg.Since = "news=0-0"
			st, c := runConnected(t, cfg)
			for i := range 5 {
				s.publish("news", i)
			}
			for i := range 5 {
				if n := number(t, next(t, c)); n != i {
					t.Fatalf("got %d; want %d", n, i)
				}
			}

			old := s.swap()
			wire.Drain(old, 300*time.Millisecond)
			for i := 5; i < 10; i++ {
				s.publish("news", i) // while the client waits
			}
			rec := st.waitFor(t, "the advised reconnection", isPhase(Reconnecting))
			advisedAt := time.Now()
			st.waitFor(t, "connected again", isPhase(Connected))
			if !rec.Advised || rec.Delay < 0 || rec.Delay > 300*time.Millisecond || rec.Attempt != 0 {
				t.Errorf("reconnecting state %+v; want advised, at most 300ms", rec)
			}
			if waited := time.Since(advisedAt); waited < rec.Delay {
				t.Errorf("reconnected after %v; advised %v", waited, rec.Delay)
			}
			for i := 5; i < 10; i++ {
				if n := number(t, next(t, c)); n != i {
					t.Fatalf("got %d; want %d", n, i)
				}
			}
			if n := len(old.Conns()); n != 0 {
				t.Errorf("%d connections left on the drained instance", n)
			}
			if err := waitConns(s, 1); err != nil {
				t.Error(err)
			}
		})
	}
}

// Subscribe, Publish and Unsubscribe against a real server on each
// transport; subscriptions survive reconnection; refusals reach the
// caller and leave the client running.
func TestSubscribePublishUnsubscribe(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			s := startTestServer(t)
			cfg, _ := s.config(tr, "5", "news")
			st := newStates()
			cfg.OnState = st.record
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			run(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			if err := c.Subscribe(ctx, "room.1", ""); err != nil {
				t.Fatal(err)
			}
			var id notify.ID
			if tr == SSE {
				if _, err := c.Publish(ctx, "room.1", "chat", json.RawMessage(`{"n":0}`)); !errors.Is(err, ErrOneWay) {
					t.Errorf("Publish on SSE: %v", err)
				}
				id = s.publish("room.1", 0)
			} else if id, err = c.Publish(ctx, "room.1", "chat", json.RawMessage(`{"n":0}`)); err != nil {
				t.Fatal(err)
			}
			if e := next(t, c); e.Channel != "room.1" || e.ID != id || number(t, e) != 0 {
				t.Fatalf("got %s; want room.1's %v", e.JSON(), id)
			}

			// Refused channels: an error for the caller, the client goes on.
			if err := c.Subscribe(ctx, "secret", ""); !errors.Is(err, notify.ErrForbidden) {
				t.Fatalf("Subscribe(secret): %v; want forbidden", err)
			}
			if tr != SSE {
				if _, err := c.Publish(ctx, "news", "", nil); !errors.Is(err, notify.ErrForbidden) {
					t.Errorf("Publish(news): %v; want forbidden", err)
				}
			}

			// The subscription is re-established on reconnect.
			st.waitFor(t, "connected", isPhase(Connected))
			s.dropAll(nil)
			st.waitFor(t, "reconnected", isPhase(Connected))
			s.publish("room.1", 1)
			if e := next(t, c); e.Channel != "room.1" || number(t, e) != 1 {
				t.Fatalf("got %s; want room.1's 1", e.JSON())
			}

			if err := c.Unsubscribe(ctx, "room.1"); err != nil {
				t.Fatal(err)
			}
			if tr == SSE {
				st.waitFor(t, "reconnected without room.1", isPhase(Connected))
			}
			s.publish("room.1", 2)
			s.publish("news", 3)
			if e := next(t, c); e.Channel != "news" || number(t, e) != 3 {
				t.Fatalf("got %s; want news' 3, nothing of room.1", e.JSON())
			}
			if got := c.Channels(); !slices.Equal(got, []string{"news", "user:5"}) {
				t.Errorf("Channels = %v", got)
			}
		})
	}
}

// A connection refused for good (a channel outside the token's grants)
// stops the client with that error, on every transport.
func TestForbiddenStops(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			s := startTestServer(t)
			cfg, _ := s.config(tr, "5")
			cfg.Channels = []string{"secret"}
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Run(ctx); !errors.Is(err, notify.ErrForbidden) {
				t.Fatalf("Run: %v; want forbidden", err)
			}
			if _, err := c.Next(ctx); !errors.Is(err, notify.ErrForbidden) {
				t.Errorf("Next: %v", err)
			}
		})
	}
}

// Positions resumes a later client exactly after what Next returned.
func TestPositionsResumeAnotherClient(t *testing.T) {
	s := startTestServer(t)
	cfg, _ := s.config(WebSocket, "3", "news")
	cfg.Since = "news=0-0"
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Run(context.Background()) })
	for i := range 10 {
		s.publish("news", i)
	}
	for i := range 4 {
		if n := number(t, next(t, c)); n != i {
			t.Fatalf("got %d", n)
		}
	}
	_ = c.Close()
	wg.Wait()
	cursor := c.Positions()
	if !strings.Contains(cursor, "news=") || !strings.Contains(cursor, "user:3=") {
		t.Fatalf("Positions = %q", cursor)
	}

	cfg, _ = s.config(WebSocket, "3", "news")
	cfg.Since = cursor
	c2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, c2)
	for i := 4; i < 10; i++ {
		if n := number(t, next(t, c2)); n != i {
			t.Fatalf("resumed client got %d; want %d", n, i)
		}
	}
}

// A reader that does not keep up loses nothing: the client stops reading
// the connection when its buffer is full, the server drops it as lagged
// once its own queue overflows, and the client resumes from the last
// envelope it buffered.
func TestSlowReaderLosesNothing(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			s := startTestServerWith(t, notify.HubConfig{QueueLength: 16}, wire.Config{WriteTimeout: 100 * time.Millisecond})
			cfg, _ := s.config(tr, "1", "news")
			cfg.Since = "news=0-0"
			cfg.BufferSize = 4
			st, c := runConnected(t, cfg)
			const total = 3000
			for i := range total {
				s.publishPadded("news", i, 2048) // 6 MB: more than the socket buffers hold
			}
			for i := range total {
				if n := number(t, next(t, c)); n != i {
					t.Fatalf("message %d is number %d", i, n)
				}
			}
			lagged := 0
			for _, s := range st.all() {
				if s.Phase == Reconnecting && errors.Is(s.Err, notify.ErrLagged) {
					lagged++
				}
			}
			t.Logf("%d reconnections after lagging", lagged)
		})
	}
}
