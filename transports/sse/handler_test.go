package sse

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// testServer serves a Handler over HTTP/1.1 for user alice (channels news
// and room.*); any token works.
type testServer struct {
	url    string
	hub    *notify.Hub
	broker *notify.MemoryBroker
}

func newTestServer(t *testing.T, cfg wire.Config) *testServer {
	t.Helper()
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	hub := notify.NewHub(b, notify.HubConfig{})
	t.Cleanup(func() { _ = hub.Close(); _ = b.Close() })
	cfg.Hub = hub
	cfg.Auth = wire.AuthFunc(func(r *http.Request) (*notify.Grants, error) {
		if wire.Token(r) == "" {
			return nil, notify.Errorf(notify.ErrUnauthorized, "no token")
		}
		return &notify.Grants{User: "alice", Subscribe: []string{"news", "room."}}, nil
	})
	srv := httptest.NewServer(NewHandler(cfg))
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	return &testServer{url: srv.URL + "/v1/sse", hub: hub, broker: b}
}

func (s *testServer) publish(t *testing.T, channel string, n string) notify.ID {
	t.Helper()
	id, err := s.broker.Publish(context.Background(), notify.Publication{Channel: channel, Event: "e", Data: []byte(n)})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// rawStream reads a response body line by line.
type rawStream struct {
	t    *testing.T
	resp *http.Response
	br   *bufio.Reader
}

// open sends a GET to url (with query) and headers; the request ends
// with the test.
func (s *testServer) open(t *testing.T, query string, header http.Header) *rawStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"?"+query, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return &rawStream{t: t, resp: resp, br: bufio.NewReader(resp.Body)}
}

func (r *rawStream) line() string {
	r.t.Helper()
	l, err := r.br.ReadString('\n')
	if err != nil {
		r.t.Fatalf("read: %v (after %q)", err, l)
	}
	return strings.TrimSuffix(l, "\n")
}

// event reads the lines of the next event, skipping heartbeats and the
// retry field.
func (r *rawStream) event() []string {
	r.t.Helper()
	var lines []string
	for {
		l := r.line()
		switch {
		case l == "" && len(lines) > 0:
			return lines
		case l == "", l == ":", strings.HasPrefix(l, "retry:"):
		default:
			lines = append(lines, l)
		}
	}
}

func TestStreamStart(t *testing.T) {
	s := newTestServer(t, wire.Config{})
	r := s.open(t, "token=x&channel=news", nil)
	h := r.resp.Header
	if r.resp.StatusCode != http.StatusOK || h.Get("Content-Type") != "text/event-stream" ||
		h.Get("Cache-Control") != "no-store" || h.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("status %d, headers %v", r.resp.StatusCode, h)
	}
	if _, ok := h["Connection"]; ok {
		t.Fatalf("a Connection header (forbidden on HTTP/2 and HTTP/3): %v", h)
	}
	if l := r.line(); l != "retry: 2000" {
		t.Fatalf("first line %q; want the retry field", l)
	}
	if l := r.line(); l != "" {
		t.Fatalf("second line %q; want a blank line", l)
	}
	if ev := r.event(); len(ev) != 2 || ev[0] != "id: user:alice=0-0" || !strings.HasPrefix(ev[1], `data: {"type":"subscribed","channel":"user:alice"`) {
		t.Fatalf("first event %q; want user:alice's subscribed notice", ev)
	}
}

func TestHeartbeat(t *testing.T) {
	s := newTestServer(t, wire.Config{Heartbeat: 20 * time.Millisecond})
	r := s.open(t, "token=x", nil)
	r.event() // subscribed
	for r.line() != ":" {
	}
}

// TestLastEventIDWinsOverSince: a browser reconnecting by itself sends
// its first URL (with a stale since) and its newer Last-Event-ID.
func TestLastEventIDWinsOverSince(t *testing.T) {
	s := newTestServer(t, wire.Config{})
	first := s.publish(t, "user:alice", "1")
	second := s.publish(t, "user:alice", "2")
	third := s.publish(t, "user:alice", "3")
	r := s.open(t, "token=x&since="+first.String(), http.Header{"Last-Event-ID": {second.String()}})
	r.event() // subscribed
	if ev := r.event(); len(ev) != 2 || ev[0] != "id: "+third.String() {
		t.Fatalf("resumed with %q; want message %v only", ev, third)
	}
}

func TestResumePositionSources(t *testing.T) {
	s := newTestServer(t, wire.Config{})
	first := s.publish(t, "user:alice", "1")
	second := s.publish(t, "user:alice", "2")
	for _, q := range []string{"since=" + first.String(), "last_event_id=" + first.String()} {
		r := s.open(t, "token=x&"+q, nil)
		r.event() // subscribed
		if ev := r.event(); ev[0] != "id: "+second.String() {
			t.Fatalf("%s: resumed with %q; want message %v", q, ev, second)
		}
	}
}

// TestResumedCursorKeepsEveryChannel: the first id written on a resumed
// connection still holds the positions of the channels not subscribed yet.
func TestResumedCursorKeepsEveryChannel(t *testing.T) {
	s := newTestServer(t, wire.Config{})
	n := s.publish(t, "news", "1")
	r := s.open(t, "token=x&channel=news", http.Header{"Last-Event-ID": {"news=" + n.String()}})
	if ev := r.event(); ev[0] != "id: user:alice=0-0;news="+n.String() {
		t.Fatalf("first event %q; want an id with news's position", ev)
	}
}

func TestMethodsAndPreflight(t *testing.T) {
	s := newTestServer(t, wire.Config{AllowedOrigins: []string{"https://app.example"}})
	resp, err := http.Post(s.url+"?token=x", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
		t.Fatalf("POST: %s %v", resp.Status, resp.Header)
	}
	req, _ := http.NewRequest(http.MethodOptions, s.url, nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Headers", "last-event-id")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Fatalf("preflight: %s %v", resp.Status, resp.Header)
	}
	if n := s.hub.Stats().Connections; n != 0 {
		t.Fatalf("%d connections after refused requests", n)
	}
}

// TestServerEndGivesReason: a connection the hub closes ends with the
// error notice, and Read's final error carries the reason.
func TestServerEndGivesReason(t *testing.T) {
	s := newTestServer(t, wire.Config{})
	c := dial(t, s.url, DialOptions{Token: "x"})
	if e := read(t, c); e.Type != notify.TypeSubscribed {
		t.Fatalf("got %s", e.JSON())
	}
	_ = s.hub.Close()
	if e := read(t, c); e.Type != notify.TypeError || e.Code != notify.ErrShutdown.Code {
		t.Fatalf("got %s; want the shutdown notice", e.JSON())
	}
	_, err := c.Read(context.Background())
	if !errors.Is(err, io.EOF) || !errors.Is(err, notify.ErrShutdown) {
		t.Fatalf("end of stream: %v; want io.EOF and shutdown", err)
	}
}

func dial(t *testing.T, url string, opts DialOptions) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func read(t *testing.T, c *Client) *notify.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
