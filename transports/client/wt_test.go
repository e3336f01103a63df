package client

import (
	"context"
	"testing"
	"time"
)

// TestWebTransportServerRestart: the QUIC server (HTTP/3 and WebTransport
// on one socket) is stopped three times while a numbered sequence is
// published, part of it while no server listens, and started again on the
// same address; the WebTransport client reconnects with backoff each time
// and resumes: every message exactly once, in order, nothing more after.
func TestWebTransportServerRestart(t *testing.T) {
	s := startTestServer(t)
	cfg, _ := s.config(WebTransport, "42", "news")
	cfg.Since = "news=0-0" // everything, however soon it is published
	st, c := runConnected(t, cfg)

	const restarts, perRound = 3, 30
	n := 0
	publish := func(k int) {
		for range k {
			s.publish("news", n)
			n++
		}
	}
	got := make([]int, 0, (restarts+1)*perRound)
	receive := func(upTo int) {
		for len(got) < upTo {
			got = append(got, number(t, next(t, c)))
		}
	}
	for r := 0; r < restarts; r++ {
		publish(perRound / 2)
		receive(n)
		s.stopH3()
		stopped := time.Now()
		st.waitFor(t, "reconnecting", isPhase(Reconnecting))
		publish(perRound - perRound/2) // while no server listens
		s.restartH3()
		st.waitFor(t, "connected again", isPhase(Connected))
		t.Logf("restart %d: connected again %v after the stop", r+1, time.Since(stopped).Round(time.Millisecond))
	}
	publish(perRound)
	receive(n)
	for i, v := range got {
		if v != i {
			t.Fatalf("message %d is number %d (got %v)", i, v, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if e, err := c.Next(ctx); err == nil {
		t.Fatalf("extra envelope %s", e.JSON())
	}
}
