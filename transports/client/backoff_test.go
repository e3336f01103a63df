package client

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/notify"
)

func TestBackoffCeiling(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Factor: 2}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for n, w := range want {
		if got := b.ceiling(n); got != w*time.Millisecond {
			t.Errorf("ceiling(%d) = %v; want %v", n, got, w*time.Millisecond)
		}
	}
	if got := b.ceiling(1 << 20); got != time.Second {
		t.Errorf("ceiling(huge) = %v; want the cap", got)
	}
	flat := Backoff{Min: 300 * time.Millisecond, Max: time.Second, Factor: 1}
	if got := flat.ceiling(50); got != 300*time.Millisecond {
		t.Errorf("factor 1: ceiling(50) = %v; want 300ms", got)
	}
}

// Full jitter: every delay is in [0, ceiling], both ends reachable.
func TestBackoffFullJitterBounds(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Factor: 2}
	for n := range 8 {
		if got := b.delay(n, zeroRand{}); got != 0 {
			t.Errorf("delay(%d) with the smallest draw = %v; want 0", n, got)
		}
		if got := b.delay(n, maxRand{}); got != b.ceiling(n) {
			t.Errorf("delay(%d) with the largest draw = %v; want the ceiling %v", n, got, b.ceiling(n))
		}
		r := rand.New(rand.NewPCG(1, uint64(n)))
		for range 1000 {
			if d := b.delay(n, r); d < 0 || d > b.ceiling(n) {
				t.Fatalf("delay(%d) = %v outside [0, %v]", n, d, b.ceiling(n))
			}
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := New(Config{URL: "http://h:1"})
	if err != nil {
		t.Fatal(err)
	}
	b := c.cfg.Backoff
	if b.Min != 250*time.Millisecond || b.Max != 30*time.Second || b.Factor != 2 || c.cfg.HealthyAfter != 5*time.Second || c.cfg.Transport != WebSocket {
		t.Errorf("defaults: %+v, healthy after %v, %s", b, c.cfg.HealthyAfter, c.cfg.Transport)
	}
	for _, bad := range []Config{
		{URL: "ftp://h"},
		{URL: "http://h", Transport: "carrier-pigeon"},
		{URL: "http://h", Transport: HTTP3},
		{URL: "http://h", Transport: WebTransport},
		{URL: "http://h", Backoff: Backoff{Factor: 0.5}},
		{URL: "http://h", Channels: []string{"a b"}},
		{URL: "http://h", Channels: []string{"a", "b"}, Since: "1-0"},
		{URL: "http://h", Since: "news=x"},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) succeeded", bad)
		}
	}
}

func TestEndpoint(t *testing.T) {
	cases := []struct {
		base string
		tr   Transport
		want string
	}{
		{"http://h:8080", WebSocket, "ws://h:8080/v1/ws"},
		{"https://h:8443/", WebSocket, "wss://h:8443/v1/ws"},
		{"http://h:8080/herald", SSE, "http://h:8080/herald/v1/sse"},
		{"https://h:8443", HTTP3, "https://h:8443/v1/stream"},
		{"https://h:8443/p/", WebTransport, "https://h:8443/p/v1/wt"},
	}
	for _, c := range cases {
		if got, err := endpoint(c.base, c.tr); err != nil || got != c.want {
			t.Errorf("endpoint(%q, %s) = %q, %v; want %q", c.base, c.tr, got, err, c.want)
		}
	}
}

// The delays between attempts are exactly the backoff ceilings when the
// jitter draws its largest value, capped at Max; a healthy connection
// resets them, a short one does not. Fake time (synctest) makes the
// measurement exact.
func TestReconnectBackoffTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := errors.New("connection refused")
		d := newFakeDialer(refused, refused, refused, refused, refused, refused)
		st := newStates()
		c, tokens := newFakeClient(t, d, Config{
			Backoff:      Backoff{Min: 100 * time.Millisecond, Max: time.Second, Factor: 2},
			HealthyAfter: 5 * time.Second,
			Rand:         maxRand{},
			OnState:      st.record,
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()

		f := <-d.conns // the seventh attempt
		calls := d.callList()
		want := []time.Duration{100, 200, 400, 800, 1000, 1000}
		if len(calls) != len(want)+1 {
			t.Fatalf("%d attempts; want %d", len(calls), len(want)+1)
		}
		for i, w := range want {
			if gap := calls[i+1].at.Sub(calls[i].at); gap != w*time.Millisecond {
				t.Errorf("wait before attempt %d: %v; want %v", i+2, gap, w*time.Millisecond)
			}
		}
		var reconnecting []State
		for _, s := range st.all() {
			if s.Phase == Reconnecting {
				reconnecting = append(reconnecting, s)
			}
		}
		for i, s := range reconnecting {
			if s.Delay != want[i]*time.Millisecond || s.Attempt != i+1 || !errors.Is(s.Err, refused) || s.Advised {
				t.Errorf("state %d: %+v", i, s)
			}
		}

		// Healthy (up for HealthyAfter): the backoff starts over.
		time.Sleep(5 * time.Second)
		f.end <- io.EOF
		ended := time.Now()
		f = <-d.conns
		if gap := time.Since(ended); gap != 100*time.Millisecond {
			t.Errorf("after a healthy connection: waited %v; want 100ms", gap)
		}
		// Short-lived connections are failures: the backoff grows.
		for _, w := range []time.Duration{200, 400} {
			time.Sleep(time.Second)
			f.end <- io.EOF
			ended = time.Now()
			f = <-d.conns
			if gap := time.Since(ended); gap != w*time.Millisecond {
				t.Errorf("after a short connection: waited %v; want %v", gap, w*time.Millisecond)
			}
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		if n := len(d.callList()); *tokens != n {
			t.Errorf("%d tokens fetched for %d attempts; want one per attempt", *tokens, n)
		}
	})
}

// The server's reconnect advice replaces the backoff: the client waits
// exactly the advised delay, and the advice does not count as a failure.
func TestReconnectAdviceDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		st := newStates()
		c, _ := newFakeClient(t, d, Config{Channels: []string{"news"}, Rand: maxRand{}, OnState: st.record})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() { _ = c.Run(ctx) }()

		f := <-d.conns
		f.give(t, subscribedAt("news", 7), msg("news", 8))
		if e := next(t, c); e.ID.Ms != 8 {
			t.Fatalf("got %s", e.JSON())
		}
		f.give(t, &notify.Envelope{Type: notify.TypeReconnect, Code: "shutdown", Delay: 1500})
		f.end <- io.EOF
		advised := time.Now()
		<-d.conns
		if gap := time.Since(advised); gap != 1500*time.Millisecond {
			t.Errorf("reconnected after %v; want the advised 1.5s", gap)
		}
		last := d.callList()[1]
		if last.req.Since != "news=8-0" {
			t.Errorf("resumed from %q; want news=8-0", last.req.Since)
		}
		var rec State
		for _, s := range st.all() {
			if s.Phase == Reconnecting {
				rec = s
			}
		}
		if !rec.Advised || rec.Delay != 1500*time.Millisecond || rec.Attempt != 0 {
			t.Errorf("reconnecting state %+v; want advised 1.5s, attempt 0", rec)
		}
	})
}

// A token error is retried with backoff; one the server's codes call
// permanent stops the client.
func TestTokenErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		calls := 0
		c, err := New(Config{URL: "http://h", Rand: zeroRand{}, Token: func(context.Context) (string, error) {
			calls++
			switch calls {
			case 1:
				return "", errors.New("auth backend down")
			case 2:
				return "", notify.Errorf(notify.ErrForbidden, "user banned")
			}
			return "t", nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		c.dial = d.dial
		err = c.Run(t.Context())
		if !errors.Is(err, notify.ErrForbidden) || calls != 2 || len(d.callList()) != 0 {
			t.Errorf("Run: %v after %d token calls, %d dials", err, calls, len(d.callList()))
		}
		if _, err := c.Next(t.Context()); !errors.Is(err, notify.ErrForbidden) {
			t.Errorf("Next: %v", err)
		}
		if s := c.State(); s.Phase != Closed || !errors.Is(s.Err, notify.ErrForbidden) {
			t.Errorf("state %+v", s)
		}
	})
}

// A connection refused as unauthorized (a used or expired token) is
// retried with a fresh token; one refused as forbidden stops the client.
func TestRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		unauthorized := notify.Errorf(notify.ErrUnauthorized, "token already used")
		forbidden := notify.Errorf(notify.ErrForbidden, "not allowed to subscribe to channel \"x\"")
		d := newFakeDialer(unauthorized, unauthorized, forbidden)
		c, tokens := newFakeClient(t, d, Config{Channels: []string{"x"}})
		if err := c.Run(t.Context()); !errors.Is(err, notify.ErrForbidden) {
			t.Errorf("Run: %v; want forbidden", err)
		}
		if *tokens != 3 {
			t.Errorf("%d tokens; want 3", *tokens)
		}
	})
}
