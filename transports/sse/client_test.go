package sse

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// rawServer serves body as an event stream, counting requests.
func rawServer(t *testing.T, body string) (url string, requests *atomic.Int32) {
	requests = new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, requests
}

// TestClientLargeEvent: a message at the payload limit is larger than the
// r3labs client's default buffer.
func TestClientLargeEvent(t *testing.T) {
	s := newTestServer(t, wire.Config{})
	c := dial(t, s.url, DialOptions{Token: "x"})
	read(t, c) // subscribed
	data := `"` + strings.Repeat("x", notify.DefaultMaxPayload-2) + `"`
	s.publish(t, "user:alice", data)
	if e := read(t, c); string(e.Data) != data {
		t.Fatalf("got %d bytes of data; want %d", len(e.Data), len(data))
	}
}

// TestClientDoesNotReconnect: the end of the stream is the caller's to
// handle; the r3labs client must not retry behind its back.
func TestClientDoesNotReconnect(t *testing.T) {
	url, requests := rawServer(t, "retry: 1\n\nid: 3-0\ndata: {\"type\":\"message\",\"channel\":\"a\",\"id\":\"3-0\"}\n\n")
	c := dial(t, url, DialOptions{Since: "2-0"})
	if c.Cursor() != "2-0" {
		t.Fatalf("cursor %q before any event; want Since", c.Cursor())
	}
	if e := read(t, c); e.ID != (notify.ID{Ms: 3}) || c.Cursor() != "3-0" {
		t.Fatalf("got %s, cursor %q", e.JSON(), c.Cursor())
	}
	if _, err := c.Read(context.Background()); err != io.EOF {
		t.Fatalf("end: %v; want io.EOF", err)
	}
	_ = c.Close()
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d requests; want 1", n)
	}
}

// TestClientTornLastEvent: an event the stream ends in the middle of is
// discarded, as the spec says, and the cursor stays before it.
func TestClientTornLastEvent(t *testing.T) {
	url, _ := rawServer(t, "id: 3-0\ndata: {\"type\":\"message\",\"channel\":\"a\",\"id\":\"3-0\"}\n\nid: 4-0\ndata: {\"type\":\"mess")
	c := dial(t, url, DialOptions{})
	read(t, c)
	if _, err := c.Read(context.Background()); err != io.EOF {
		t.Fatalf("end: %v; want io.EOF", err)
	}
	if c.Cursor() != "3-0" {
		t.Fatalf("cursor %q; want 3-0", c.Cursor())
	}
}

func TestClientMalformedEvent(t *testing.T) {
	url, _ := rawServer(t, "id: 3-0\ndata: nope\n\ndata: {\"type\":\"pong\"}\n\n")
	c := dial(t, url, DialOptions{})
	if _, err := c.Read(context.Background()); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("malformed envelope: %v; want a parse error", err)
	}
	if c.Cursor() != "" {
		t.Fatalf("cursor %q moved by an envelope that did not parse", c.Cursor())
	}
	// The next event has no id: the last one the server gave stands, as
	// in EventSource (the caller was told of the envelope it skips).
	if e := read(t, c); e.Type != notify.TypePong || c.Cursor() != "3-0" {
		t.Fatalf("then %s, cursor %q; want the next envelope, cursor 3-0", e.JSON(), c.Cursor())
	}
}

func TestDialRefused(t *testing.T) {
	s := newTestServer(t, wire.Config{})
	ctx := context.Background()
	if _, err := Dial(ctx, s.url, DialOptions{}); !errors.Is(err, notify.ErrUnauthorized) {
		t.Fatalf("no token: %v; want the server's unauthorized error", err)
	}
	var ne *notify.Error
	if _, err := Dial(ctx, s.url, DialOptions{Token: "x", Channels: []string{"secret"}}); !errors.As(err, &ne) || ne.Code != notify.ErrForbidden.Code || ne.Message == "" {
		t.Fatalf("forbidden channel: %v; want the server's *notify.Error", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}))
	defer srv.Close()
	if _, err := Dial(ctx, srv.URL, DialOptions{}); err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("a proxy's refusal: %v; want its status", err)
	}
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "<html>") }))
	defer html.Close()
	if _, err := Dial(ctx, html.URL, DialOptions{}); err == nil || !strings.Contains(err.Error(), "not an event stream") {
		t.Fatalf("an HTML page: %v", err)
	}
	url, _ := rawServer(t, "")
	if c, err := Dial(ctx, url, DialOptions{}); err != nil {
		t.Fatalf("an empty stream: %v", err)
	} else if _, err := c.Read(ctx); err != io.EOF {
		t.Fatalf("an empty stream: %v; want io.EOF", err)
	}
}

func TestDialContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, srv.URL, DialOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v; want the context's error", err)
	}
}

func TestClientClose(t *testing.T) {
	s := newTestServer(t, wire.Config{})
	c := dial(t, s.url, DialOptions{Token: "x"})
	read(t, c)
	_ = c.Close()
	if _, err := c.Read(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v; want net.ErrClosed", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.hub.Stats().Connections != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server kept the connection of a closed client")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
