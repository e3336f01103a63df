package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/ws"
	"github.com/heraldhq/herald/transports/wt"
)

const testAPIKey = "test-api-key-0123456789"

// startServer runs a server on free loopback ports with extra flags, a
// fixed secret and API key.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	return runServer(t, append([]string{"--secret", strings.Repeat("s", 32), "--api-key", testAPIKey}, args...)...)
}

// runServer runs a server on free loopback ports with args, drained when t
// ends.
func runServer(t *testing.T, args ...string) *server {
	t.Helper()
	base := []string{"--addr", "127.0.0.1:0", "--tls-addr", "127.0.0.1:0", "--cert-dir", t.TempDir(), "--drain-timeout", "5s"}
	cfg, err := serveFlags(append(base, args...))
	if err != nil {
		t.Fatal(err)
	}
	s, err := newServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.closer != nil {
			s.drain()
		}
	})
	return s
}

func (s *server) url(path string) string { return "http://" + s.plainAddr + path }

// call makes a REST call with a bearer credential and decodes the JSON
// answer into out; it returns the status.
func call(t *testing.T, method, url, bearer string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %s: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode
}

func mint(t *testing.T, s *server, user string, channels, publish []string) string {
	t.Helper()
	var out struct{ Token, ExpiresAt string }
	if st := call(t, "POST", s.url("/v1/token"), testAPIKey, map[string]any{"user": user, "channels": channels, "publish": publish, "ttl": "5m"}, &out); st != 200 {
		t.Fatalf("mint: status %d", st)
	}
	return out.Token
}

func publish(t *testing.T, s *server, bearer, channel, data string) string {
	t.Helper()
	var out struct{ ID string }
	var e struct{ Error struct{ Code string } }
	st := call(t, "POST", s.url("/v1/publish"), bearer, map[string]any{"channel": channel, "event": "e", "data": json.RawMessage(data)}, &out)
	if st != 200 {
		call(t, "POST", s.url("/v1/publish"), bearer, map[string]any{"channel": channel, "data": json.RawMessage(data)}, &e)
		t.Fatalf("publish: status %d %s", st, e.Error.Code)
	}
	return out.ID
}

type reader interface {
	Read(context.Context) (*notify.Envelope, error)
}

func next(t *testing.T, r reader, typ string) *notify.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := r.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if e.Type != typ {
		t.Fatalf("got %s; want %s", e.JSON(), typ)
	}
	return e
}

// TestEveryTransportEndToEnd: a token from the REST API opens WebSocket,
// SSE over HTTP/1.1 and over HTTP/3, the HTTP/3 stream and a WebTransport
// session (on the same UDP port); one REST publish reaches all five with the
// same envelope.
func TestEveryTransportEndToEnd(t *testing.T) {
	s := startServer(t)
	tok := mint(t, s, "42", []string{"news"}, nil)
	ctx := context.Background()
	cert, _, err := devcert.LoadOrCreate(s.cfg.certDir, devcert.DefaultHosts)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{RootCAs: devcert.Pool(cert)}

	wc, err := ws.Dial(ctx, "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: tok, Channels: []string{"news"}})
	if err != nil {
		t.Fatal(err)
	}
	defer wc.CloseNow()
	sc, err := sse.Dial(ctx, s.url("/v1/sse"), sse.DialOptions{Token: tok, Channels: []string{"news"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	hc, err := h3.Dial(ctx, "https://"+s.tlsAddr+"/v1/stream", h3.DialOptions{Token: tok, Channels: []string{"news"}, TLSConfig: tlsCfg, Duplex: true})
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	wtc, err := wt.Dial(ctx, "https://"+s.tlsAddr+"/v1/wt", wt.DialOptions{Token: tok, Channels: []string{"news"}, TLSConfig: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer wtc.Close()
	clients := map[string]reader{"ws": wc, "sse": sc, "h3": hc, "wt": wtc}
	for name, c := range clients {
		for i := 0; i < 2; i++ {
			if e := next(t, c, notify.TypeSubscribed); e.Channel != "user:42" && e.Channel != "news" {
				t.Fatalf("%s: %s", name, e.JSON())
			}
		}
	}
	id := publish(t, s, testAPIKey, "news", `{"headline":"hi"}`)
	var first []byte
	for name, c := range clients {
		e := next(t, c, notify.TypeMessage)
		if e.ID.String() != id {
			t.Fatalf("%s received %v; want %s", name, e.ID, id)
		}
		if first == nil {
			first = e.AppendJSON(nil)
		} else if !bytes.Equal(first, e.AppendJSON(nil)) {
			t.Fatalf("%s's envelope differs: %s vs %s", name, e.AppendJSON(nil), first)
		}
	}
}

func TestRESTErrors(t *testing.T) {
	s := startServer(t)
	tok := mint(t, s, "7", []string{"news"}, []string{"room."})
	var e struct {
		Error struct{ Code, Message string }
	}
	cases := []struct {
		name, method, path, bearer string
		body                       any
		status                     int
		code                       string
	}{
		{"token without API key", "POST", "/v1/token", tok, map[string]any{"user": "x"}, 401, "unauthorized"},
		{"token bad user", "POST", "/v1/token", testAPIKey, map[string]any{"user": "a b"}, 400, "invalid_user"},
		{"token bad ttl", "POST", "/v1/token", testAPIKey, map[string]any{"user": "x", "ttl": "soon"}, 400, "invalid_command"},
		{"publish no auth", "POST", "/v1/publish", "", map[string]any{"channel": "news", "data": 1}, 401, "unauthorized"},
		{"publish forged", "POST", "/v1/publish", tok + "x", map[string]any{"channel": "news", "data": 1}, 401, "unauthorized"},
		{"publish forbidden", "POST", "/v1/publish", tok, map[string]any{"channel": "news", "data": 1}, 403, "forbidden"},
		{"publish bad channel", "POST", "/v1/publish", testAPIKey, map[string]any{"channel": "a b", "data": 1}, 400, "invalid_channel"},
		{"publish too large", "POST", "/v1/publish", testAPIKey, map[string]any{"channel": "news", "data": strings.Repeat("x", 70000)}, 413, "too_large"},
		{"publish batch one bad", "POST", "/v1/publish", tok, map[string]any{"messages": []any{map[string]any{"channel": "room.1", "data": 1}, map[string]any{"channel": "news", "data": 1}}}, 403, "forbidden"},
		{"history forbidden", "GET", "/v1/history?channel=user:8", tok, nil, 403, "forbidden"},
		{"history bad since", "GET", "/v1/history?channel=news&since=x", tok, nil, 400, "invalid_position"},
	}
	for _, c := range cases {
		e.Error.Code = ""
		if st := call(t, c.method, s.url(c.path), c.bearer, c.body, &e); st != c.status || e.Error.Code != c.code {
			t.Errorf("%s: %d %q; want %d %q", c.name, st, e.Error.Code, c.status, c.code)
		}
	}
	// Malformed JSON.
	resp, _ := http.Post(s.url("/v1/publish"), "application/json", strings.NewReader(`{"channel":`))
	if resp.StatusCode != 401 { // unauthenticated first
		t.Errorf("malformed unauthenticated: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", s.url("/v1/publish"), strings.NewReader(`{"channel":`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, _ = http.DefaultClient.Do(req)
	if resp.StatusCode != 400 {
		t.Errorf("malformed JSON: %d; want 400", resp.StatusCode)
	}
	// Nothing was published by the failures above.
	var h struct {
		Messages []json.RawMessage
		Gap      bool
	}
	if st := call(t, "GET", s.url("/v1/history?channel=news"), testAPIKey, nil, &h); st != 200 || len(h.Messages) != 0 {
		t.Fatalf("history after rejected publishes: %d, %d messages", st, len(h.Messages))
	}
	// A batch publishes in order; history returns it.
	var ids struct{ IDs []string }
	call(t, "POST", s.url("/v1/publish"), tok, map[string]any{"messages": []any{map[string]any{"channel": "room.1", "data": 1}, map[string]any{"channel": "room.1", "data": 2}}}, &ids)
	if len(ids.IDs) != 2 {
		t.Fatalf("batch ids %v", ids.IDs)
	}
	call(t, "GET", s.url("/v1/history?channel=room.1&since="+ids.IDs[0]), testAPIKey, nil, &h)
	if len(h.Messages) != 1 || !strings.Contains(string(h.Messages[0]), ids.IDs[1]) {
		t.Fatalf("history since the first: %s", h.Messages)
	}
}

// TestTwoInstancesOnRedis: two servers on one Redis deliver each other's
// messages.
func TestTwoInstancesOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	a := startServer(t, "--redis", srv.URL())
	b := startServer(t, "--redis", srv.URL())
	ctx := context.Background()
	tok := mint(t, a, "1", []string{"news"}, nil)
	ca, err := ws.Dial(ctx, "ws://"+a.plainAddr+"/v1/ws", ws.DialOptions{Token: tok, Channels: []string{"news"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.CloseNow()
	cb, err := sse.Dial(ctx, b.url("/v1/sse"), sse.DialOptions{Token: tok, Channels: []string{"news"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	for _, c := range []reader{ca, cb} {
		next(t, c, notify.TypeSubscribed)
		next(t, c, notify.TypeSubscribed)
	}
	ida := publish(t, a, testAPIKey, "news", `"from a"`)
	idb := publish(t, b, testAPIKey, "user:1", `"from b"`)
	for _, c := range []reader{ca, cb} {
		got := map[string]bool{}
		for i := 0; i < 2; i++ {
			got[next(t, c, notify.TypeMessage).ID.String()] = true
		}
		if !got[ida] || !got[idb] {
			t.Fatalf("received %v; want %s and %s", got, ida, idb)
		}
	}
}

// TestDrainAdvisesReconnect: stopping a server sends every client reconnect
// advice, then ends the connection, within the drain timeout.
func TestDrainAdvisesReconnect(t *testing.T) {
	s := startServer(t)
	tok := mint(t, s, "9", nil, nil)
	c, err := ws.Dial(context.Background(), "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	next(t, c, notify.TypeSubscribed)
	done := make(chan struct{})
	go func() { s.drain(); close(done) }()
	e := next(t, c, notify.TypeReconnect)
	if e.Delay < 0 || e.Delay > 2500 {
		t.Fatalf("delay %d", e.Delay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Read(ctx); !errors.Is(err, notify.ErrShutdown) {
		t.Fatalf("after the advice: %v; want close 1001 (shutdown)", err)
	}
	// Counted as a reconnect advice, not as a plain shutdown.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := s.hub.Stats()
		if st.Dropped[notify.DropReconnectAdvice] == 1 && st.Dropped[notify.DropShutdown] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drops counted %v; want one reconnect advice", st.Dropped)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not finish")
	}
	if resp, err := http.Get(s.url("/healthz")); err == nil {
		resp.Body.Close()
		t.Fatal("server still accepting after drain")
	}
}

func TestServeFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--history-size", "0"}, {"--secret", "short"}, {"--cert", "a.pem"}, {"--max-conns-per-user", "0"},
		{"--publish-rate", "-1"}, {"--bogus"}, {"extra"},
	} {
		if _, err := serveFlags(args); err == nil {
			t.Errorf("serve %v: no error", args)
		}
	}
	t.Setenv("HERALD_HISTORY_SIZE", "12")
	t.Setenv("HERALD_API_KEY", "k1-0123456789abcdef,k2-0123456789abcdef")
	cfg, err := serveFlags([]string{"--history-size", "13"})
	if err != nil || cfg.historySize != 13 || len(cfg.apiKeys) != 2 {
		t.Fatalf("env + flags: %+v %v", cfg, err)
	}
}

// TestMetrics: /metrics reports connections by transport, deliveries with
// their latency, publishes and refusals.
func TestMetrics(t *testing.T) {
	s := startServer(t)
	tok := mint(t, s, "m", []string{"news"}, nil)
	c, err := ws.Dial(context.Background(), "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: tok, Channels: []string{"news"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	next(t, c, notify.TypeSubscribed)
	next(t, c, notify.TypeSubscribed)
	publish(t, s, testAPIKey, "news", `1`)
	next(t, c, notify.TypeMessage)
	call(t, "POST", s.url("/v1/publish"), "wrong", map[string]any{"channel": "news", "data": 1}, nil)
	// The writer records a delivery after its write returns, which may be
	// after the client has read it: scrape until the figures settle.
	scrape := func() string {
		resp, err := http.Get(s.url("/metrics"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	body := scrape()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(body, `herald_messages_delivered_total{transport="ws"} 1`) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		body = scrape()
	}
	for _, want := range []string{
		`herald_connections{transport="ws"} 1`,
		`herald_messages_delivered_total{transport="ws"} 1`,
		`herald_delivery_latency_seconds_count{transport="ws"} 1`,
		`herald_messages_published_total{result="ok"} 1`,
		`herald_rejected_total{code="unauthorized",transport="rest"} 1`,
		`herald_hub_deliveries_total 1`,
		`herald_channels 2`,
		`herald_connections_dropped_total{reason="queue_overflow"} 0`,
		`herald_connections_dropped_total{reason="write_timeout"} 0`,
		`herald_connections_dropped_total{reason="heartbeat_timeout"} 0`,
		`herald_connections_dropped_total{reason="reconnect_advice"} 0`,
		`herald_queue_overflows_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestConnectionFloodRefused: past --max-conns-per-user, a user's further
// connections are refused with 429 on every transport; others are not
// affected, and a closed connection frees its slot.
func TestConnectionFloodRefused(t *testing.T) {
	s := startServer(t, "--max-conns-per-user", "3")
	tok := mint(t, s, "flood", nil, nil)
	ctx := context.Background()
	var open []*ws.Client
	for i := 0; i < 3; i++ {
		c, err := ws.Dial(ctx, "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: tok})
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.CloseNow()
		open = append(open, c)
	}
	for i := 0; i < 20; i++ {
		if _, err := ws.Dial(ctx, "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: tok}); !errors.Is(err, notify.ErrTooManyConnections) {
			t.Fatalf("flood connection %d: %v; want too_many_connections", i, err)
		}
	}
	if _, err := sse.Dial(ctx, s.url("/v1/sse"), sse.DialOptions{Token: tok}); !errors.Is(err, notify.ErrTooManyConnections) {
		t.Fatalf("SSE past the limit: %v", err)
	}
	other := mint(t, s, "other", nil, nil)
	c, err := ws.Dial(ctx, "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: other})
	if err != nil {
		t.Fatalf("another user: %v", err)
	}
	c.CloseNow()
	_ = open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := ws.Dial(ctx, "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: tok})
		if err == nil {
			c.CloseNow()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed after a close: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisDownIs503: with Redis unreachable, publishing answers 503
// unavailable and /readyz reports not ready.
func TestRedisDownIs503(t *testing.T) {
	srv := redistest.Start(t)
	s := startServer(t, "--redis", srv.URL())
	srv.Kill()
	var e struct{ Error struct{ Code string } }
	if st := call(t, "POST", s.url("/v1/publish"), testAPIKey, map[string]any{"channel": "news", "data": 1}, &e); st != 503 || e.Error.Code != "unavailable" {
		t.Fatalf("publish with Redis down: %d %q; want 503 unavailable", st, e.Error.Code)
	}
	resp, err := http.Get(s.url("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz with Redis down: %d", resp.StatusCode)
	}
}

// TestWebSocketTokenSubprotocol: a browser can send its token as a
// subprotocol instead of in the URL.
func TestWebSocketTokenSubprotocol(t *testing.T) {
	s := startServer(t)
	tok := mint(t, s, "sp", nil, nil)
	c, err := ws.Dial(context.Background(), "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Subprotocols: []string{"herald.v1", "herald.token." + tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if e := next(t, c, notify.TypeSubscribed); e.Channel != "user:sp" {
		t.Fatalf("got %s", e.JSON())
	}
}

// TestSingleUseTokenReplayAcrossInstances: with --single-use-tokens, a token
// used on one instance is refused on another sharing the Redis.
func TestSingleUseTokenReplayAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	a := startServer(t, "--redis", srv.URL(), "--single-use-tokens")
	b := startServer(t, "--redis", srv.URL(), "--single-use-tokens")
	tok := mint(t, a, "once", nil, nil)
	ctx := context.Background()
	c, err := ws.Dial(ctx, "ws://"+a.plainAddr+"/v1/ws", ws.DialOptions{Token: tok})
	if err != nil {
		t.Fatalf("first use: %v", err)
	}
	c.CloseNow()
	for _, s := range []*server{a, b} {
		if _, err := ws.Dial(ctx, "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: tok}); !errors.Is(err, notify.ErrUnauthorized) {
			t.Fatalf("replay on %s: %v; want unauthorized", s.plainAddr, err)
		}
		if _, err := sse.Dial(ctx, s.url("/v1/sse"), sse.DialOptions{Token: tok}); !errors.Is(err, notify.ErrUnauthorized) {
			t.Fatalf("replay over SSE on %s: %v; want unauthorized", s.plainAddr, err)
		}
	}
}

// TestDebugListener: --debug-addr serves the metrics and the profiler on a
// private listener, and takes /metrics off the public one.
func TestDebugListener(t *testing.T) {
	s := startServer(t, "--debug-addr", "127.0.0.1:0")
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(s.url("/metrics")); code != http.StatusNotFound {
		t.Errorf("public /metrics: %d; want 404 when --debug-addr is set", code)
	}
	debug := "http://" + s.debugAddr
	if code, body := get(debug + "/metrics"); code != http.StatusOK || !strings.Contains(body, "herald_") {
		t.Errorf("debug /metrics: %d %.80q", code, body)
	}
	if code, body := get(debug + "/debug/pprof/profile?seconds=1"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("debug CPU profile: %d, %d bytes", code, len(body))
	}
	if code, _ := get(debug + "/debug/pprof/cmdline"); code == http.StatusOK {
		t.Errorf("the debug listener serves the command line, which holds the secret and API keys")
	}
	if code, _ := get(s.url("/debug/pprof/")); code == http.StatusOK {
		t.Errorf("the profiler is on the public listener")
	}

	// An address that cannot be bound is an error at start.
	cfg, err := serveFlags([]string{"--addr", "127.0.0.1:0", "--tls-addr", "", "--debug-addr", s.debugAddr})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := newServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.start(); err == nil || !strings.Contains(err.Error(), "--debug-addr") {
		t.Errorf("start with a taken --debug-addr: %v; want a --debug-addr error", err)
	}
}
