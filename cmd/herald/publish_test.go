package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/auth"
)

// benchData is a message's data as a publisher sends it: valid JSON with
// the spaces encoders put in, which Normalize compacts.
const benchData = `{"order": 12345, "status": "shipped", "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}], "note": "leave it at the door"}`

// BenchmarkRESTPublish is POST /v1/publish through the server's handler and
// broker (the memory broker; no network), one message and a batch of 100:
// what a publish costs the server besides I/O.
func BenchmarkRESTPublish(b *testing.B) {
	cfg, err := serveFlags([]string{"--secret", strings.Repeat("s", 32), "--api-key", testAPIKey, "--tls-addr", "", "--publish-rate", "0"})
	if err != nil {
		b.Fatal(err)
	}
	s, err := newServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.close)
	h := s.plain.Handler
	msg := map[string]any{"channel": "bench", "event": "e", "data": json.RawMessage(benchData)}
	for _, n := range []int{1, 100} {
		var body []byte
		if n == 1 {
			body, _ = json.Marshal(msg)
		} else {
			msgs := make([]any, n)
			for i := range msgs {
				msgs[i] = msg
			}
			body, _ = json.Marshal(map[string]any{"messages": msgs})
		}
		b.Run(fmt.Sprintf("messages=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/publish", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+testAPIKey)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/message")
		})
	}
}

// normalizedBroker records whether the publications it is handed were
// normalized already.
type normalizedBroker struct {
	notify.Broker
	mu         sync.Mutex
	normalized []bool
}

func (b *normalizedBroker) Publish(ctx context.Context, p notify.Publication) (notify.ID, error) {
	b.record(p)
	return b.Broker.Publish(ctx, p)
}

func (b *normalizedBroker) PublishBatch(ctx context.Context, ps []notify.Publication) ([]notify.ID, error) {
	b.record(ps...)
	return b.Broker.PublishBatch(ctx, ps)
}

func (b *normalizedBroker) record(ps ...notify.Publication) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range ps {
		b.normalized = append(b.normalized, p.Normalized())
	}
}

// TestRESTPublishNormalizesOnce: POST /v1/publish validates each message
// (before authorizing and rate-limiting the request) and hands the broker
// normalized publications, which the broker does not validate again (see
// notify's TestPublishTrustsNormalized): one validation and compaction per
// message, single or batch. Data is compacted on its way to subscribers.
func TestRESTPublishNormalizesOnce(t *testing.T) {
	mem := notify.NewMemoryBroker(notify.MemoryConfig{})
	t.Cleanup(func() { _ = mem.Close() })
	broker := &normalizedBroker{Broker: mem}
	hub := notify.NewHub(broker, notify.HubConfig{})
	t.Cleanup(func() { _ = hub.Close() })
	authn, err := auth.New(auth.Config{Secret: []byte(strings.Repeat("s", 32)), APIKeys: []string{testAPIKey}})
	if err != nil {
		t.Fatal(err)
	}
	a := &api{hub: hub, auth: authn, maxPayload: notify.DefaultMaxPayload, limiter: newRateLimiter(0, 0)}
	msg := map[string]any{"channel": "rest", "event": "e", "data": json.RawMessage(benchData)}
	for _, body := range []any{msg, map[string]any{"messages": []any{msg, msg, msg}}} {
		raw, _ := json.Marshal(body)
		req := httptest.NewRequest(http.MethodPost, "/v1/publish", bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		w := httptest.NewRecorder()
		a.publish(w, req)
		if w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	if want := []bool{true, true, true, true}; !slices.Equal(broker.normalized, want) {
		t.Fatalf("the broker was handed publications normalized: %v; want %v", broker.normalized, want)
	}
	var compact bytes.Buffer
	_ = json.Compact(&compact, []byte(benchData))
	h, err := mem.History(context.Background(), "rest", notify.ID{}, 10)
	if err != nil || len(h.Messages) != 4 {
		t.Fatalf("history: %d messages, %v", len(h.Messages), err)
	}
	for _, m := range h.Messages {
		if !bytes.Equal(m.Data, compact.Bytes()) {
			t.Fatalf("stored data %s; want %s", m.Data, compact.Bytes())
		}
	}
}
