package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/ws"
)

// waitReadyz polls /readyz until it answers status with a body containing
// want, and fails t after 30s.
func waitReadyz(t *testing.T, s *server, status int, want, why string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.url("/readyz"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == status && strings.Contains(string(body), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz answers %d %q; want %d %q", why, resp.StatusCode, body, status, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricValue scrapes /metrics for an unlabelled metric's value.
func metricValue(t *testing.T, s *server, name string) float64 {
	t.Helper()
	resp, err := http.Get(s.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestReadyzSeesWedgedPubSub: a proxy between the instance and Redis stops
// forwarding on its Pub/Sub connections only — publishes still answer 200
// and Redis answers PING (centrifugo#1189) — and /readyz must answer 503,
// with the canary metrics showing it, until deliveries flow again: when the
// freeze ends, and, with the old connections still wedged, once the health
// loop replaced them. The message published meanwhile is delivered.
func TestReadyzSeesWedgedPubSub(t *testing.T) {
	srv := redistest.Start(t)
	fz := redistest.NewFreezer(t)
	s := startServer(t, "--redis", "redis://"+fz.Addr(srv.Addr()), "--pubsub-canary-interval", "100ms", "--pubsub-canary-timeout", "1s")
	tok := mint(t, s, "r", []string{"news"}, nil)
	c, err := ws.Dial(context.Background(), "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: tok, Channels: []string{"news"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	next(t, c, notify.TypeSubscribed)
	next(t, c, notify.TypeSubscribed)
	waitReadyz(t, s, 200, "ready", "before the freeze")
	for deadline := time.Now().Add(10 * time.Second); fz.Subscribers() < 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d Pub/Sub connections through the proxy; want 4", fz.Subscribers())
		}
	}

	fz.Freeze()
	id := publish(t, s, testAPIKey, "news", `"during the freeze"`) // 200: the publish path is fine
	waitReadyz(t, s, 503, "fan-out stalled", "Pub/Sub frozen")
	if age := metricValue(t, s, "herald_pubsub_canary_age_seconds"); age <= 1 {
		t.Errorf("herald_pubsub_canary_age_seconds = %v while frozen; want > 1 (the timeout)", age)
	}
	// A canary loop counts its connection late at its next tick.
	for deadline := time.Now().Add(10 * time.Second); metricValue(t, s, "herald_pubsub_canary_late_total") < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("herald_pubsub_canary_late_total stayed 0 while frozen")
		}
	}
	fz.Thaw()
	waitReadyz(t, s, 200, "ready", "after the freeze")
	if got := next(t, c, notify.TypeMessage); got.ID.String() != id {
		t.Fatalf("after the freeze got %s; want the message %s published during it", got.JSON(), id)
	}

	// Wedge every Pub/Sub connection for good: only replacing them helps.
	resubscribed := metricValue(t, s, "herald_redis_resubscriptions_total")
	if n := fz.Wedge(0); n < 4 {
		t.Fatalf("wedged %d connections; want 4", n)
	}
	waitReadyz(t, s, 503, "fan-out stalled", "Pub/Sub wedged")
	waitReadyz(t, s, 200, "ready", "after the health loop replaced the wedged connections")
	if got := metricValue(t, s, "herald_redis_resubscriptions_total"); got <= resubscribed {
		t.Errorf("herald_redis_resubscriptions_total = %v, was %v: the connections were not replaced", got, resubscribed)
	}
}

// TestCanaryFlags: a negative interval, or a timeout not longer than the
// interval, is refused with the flags named; 0 disables the canary; the
// HERALD_* variables set them.
func TestCanaryFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pubsub-canary-interval", "-1s"}, "--pubsub-canary-interval must not be negative"},
		{[]string{"--pubsub-canary-interval", "5s", "--pubsub-canary-timeout", "5s"}, "--pubsub-canary-timeout (5s) must be longer than --pubsub-canary-interval (5s)"},
		{[]string{"--pubsub-canary-timeout", "1s"}, "--pubsub-canary-timeout (1s) must be longer than --pubsub-canary-interval (2s)"},
	} {
		if _, err := serveFlags(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: %v; want %q", tc.args, err, tc.want)
		}
	}
	cfg, err := serveFlags([]string{"--pubsub-canary-interval", "0", "--pubsub-canary-timeout", "0"})
	if err != nil || cfg.canaryInterval() >= 0 {
		t.Fatalf("--pubsub-canary-interval 0: %v, interval %v; want disabled", err, cfg.canaryInterval())
	}
	t.Setenv("HERALD_PUBSUB_CANARY_TIMEOUT", "30s")
	if cfg, err := serveFlags(nil); err != nil || cfg.canaryTimeout != 30*time.Second || cfg.canaryInterval() != 2*time.Second {
		t.Fatalf("HERALD_PUBSUB_CANARY_TIMEOUT: %+v %v", cfg, err)
	}
}
