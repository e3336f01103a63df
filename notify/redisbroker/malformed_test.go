package redisbroker_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
	"github.com/heraldhq/herald/notify/redisbroker"
)

// countingHandler counts the records about malformed messages.
type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "dropping malformed pubsub message" {
		h.n.Add(1)
	}
	return nil
}

// A foreign writer flooding a channel's Pub/Sub name with garbage: every
// malformed message is dropped and counted, the log gets one record per
// 10 s (not one per message), and Herald's own messages still arrive.
func TestMalformedPubSubIsCountedAndLogRateLimited(t *testing.T) {
	srv := redistest.Start(t)
	var records atomic.Int64
	logger := slog.New(countingHandler{Handler: slog.DiscardHandler, n: &records})
	b := newBroker(t, srv, redisbroker.Config{Logger: logger})
	h := notify.NewHub(b, notify.HubConfig{})
	t.Cleanup(func() { _ = h.Close() })
	cl := brokertest.Connect(t, h)
	cl.Subscribe(t, "news", "")

	raw := newClient(t, srv)
	const junk = 500
	for i := 0; i < junk; i++ {
		if err := raw.Publish(context.Background(), "herald:{news}", "not a herald payload").Err(); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.Publish(t, context.Background(), b, "news", 1)
	cl.WaitMessages(t, "news", 1, 10*time.Second)
	if n := b.Stats().Malformed; n != junk {
		t.Fatalf("counted %d malformed messages; want %d", n, junk)
	}
	if n := records.Load(); n != 1 {
		t.Fatalf("%d log records for %d malformed messages in well under 10 s; want 1", n, junk)
	}
}
