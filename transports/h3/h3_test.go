package h3_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go/http3"
)

// TestOneWayGET: a GET stream delivers like a POST one; it has no command
// side, so the client refuses to send and the server ignores a body.
func TestOneWayGET(t *testing.T) {
	e := newEnv(t, wire.Config{})
	c := e.dial(h3.DialOptions{Token: "bob", Channels: []string{"news"}})
	expect(t, c, notify.TypeSubscribed, "user:bob")
	expect(t, c, notify.TypeSubscribed, "news")
	want := e.publish("news", `{"n":1}`)
	if got := expect(t, c, notify.TypeMessage, "news"); string(got.AppendJSON(nil)) != string(want.JSON()) {
		t.Fatalf("got %s; want %s", got.AppendJSON(nil), want.JSON())
	}
	ctx := context.Background()
	if err := c.Ping(ctx, "p"); !errors.Is(err, h3.ErrOneWay) {
		t.Fatalf("ping on a GET stream: %v; want ErrOneWay", err)
	}
	if err := c.Subscribe(ctx, "news", "", ""); !errors.Is(err, h3.ErrOneWay) {
		t.Fatalf("subscribe on a GET stream: %v; want ErrOneWay", err)
	}
}

// TestGETBodyIgnored: commands in the body of a GET (which HTTP/3 lets a
// client send) are not run.
func TestGETBodyIgnored(t *testing.T) {
	e := newEnv(t, wire.Config{})
	tr := &http3.Transport{TLSClientConfig: e.srv.tlsConfig()}
	defer tr.Close()
	body := strings.NewReader(`{"type":"ping","ref":"p"}` + "\n" + `{"type":"subscribe","channel":"news"}` + "\n")
	req, _ := http.NewRequest(http.MethodGet, e.srv.url(), body)
	req.Header.Set("Authorization", "Bearer bob")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() *notify.Envelope {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("stream ended: %v", lines.Err())
		}
		env, err := notify.ParseEnvelope(lines.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	if env := next(); env.Type != notify.TypeSubscribed || env.Channel != "user:bob" {
		t.Fatalf("got %s", env.JSON())
	}
	e.publish("news", `1`)
	want := e.publish("user:bob", `2`)
	// Had the server run the body, a pong or the news message would come
	// first.
	if env := next(); env.Type != notify.TypeMessage || env.ID != want.ID {
		t.Fatalf("got %s; want the user message only", env.JSON())
	}
}

// TestPlainHTTP3Client: an ordinary quic-go HTTP/3 client, with no Herald
// code, reads the stream as NDJSON and sends commands in a POST body.
func TestPlainHTTP3Client(t *testing.T) {
	e := newEnv(t, wire.Config{})
	client := &http.Client{Transport: &http3.Transport{TLSClientConfig: e.srv.tlsConfig()}}
	defer client.Transport.(*http3.Transport).Close()

	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest(http.MethodPost, e.srv.url()+"?channel=room.1", pr)
	req.Header.Set("Authorization", "Bearer alice")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/3.0" || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %s, proto %s, content type %q", resp.Status, resp.Proto, resp.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(resp.Body)
	next := func() map[string]any {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("stream ended: %v", lines.Err())
		}
		var m map[string]any
		if err := json.Unmarshal(lines.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", lines.Bytes(), err)
		}
		return m
	}
	for _, ch := range []string{"user:alice", "room.1"} {
		if m := next(); m["type"] != "subscribed" || m["channel"] != ch {
			t.Fatalf("got %v; want subscribed to %s", m, ch)
		}
	}
	want := e.publish("room.1", `{"text":"hi"}`)
	if !lines.Scan() || lines.Text() != string(want.JSON()) {
		t.Fatalf("got line %q; want the core's %s", lines.Text(), want.JSON())
	}
	if _, err := io.WriteString(pw, `{"type":"ping","ref":"x"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	if m := next(); m["type"] != "pong" || m["ref"] != "x" {
		t.Fatalf("got %v; want pong x", m)
	}
}

// TestBodyEndKeepsStream: a client that closes its command side goes on
// receiving.
func TestBodyEndKeepsStream(t *testing.T) {
	e := newEnv(t, wire.Config{})
	c := e.dial(h3.DialOptions{Token: "alice", Duplex: true})
	expect(t, c, notify.TypeSubscribed, "user:alice")
	ctx := context.Background()
	if err := c.Ping(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	expect(t, c, notify.TypePong, "")
	if err := c.CloseSend(); err != nil {
		t.Fatal(err)
	}
	want := e.publish("user:alice", `3`)
	if got := expect(t, c, notify.TypeMessage, "user:alice"); got.ID != want.ID {
		t.Fatalf("got %v; want %v", got.ID, want.ID)
	}
	if n := len(e.hub.UserConns("alice")); n != 1 {
		t.Fatalf("alice has %d connections", n)
	}
}

// TestEndReason: the server's reason for ending a stream is its last
// line, and Read returns it.
func TestEndReason(t *testing.T) {
	e := newEnv(t, wire.Config{})
	c := e.dial(h3.DialOptions{Token: "bob"})
	expect(t, c, notify.TypeSubscribed, "user:bob")
	for _, conn := range e.hub.UserConns("bob") {
		conn.Close(notify.ErrShutdown)
	}
	end := expect(t, c, notify.TypeError, "")
	if end.Code != notify.ErrShutdown.Code {
		t.Fatalf("got %s; want a shutdown error", end.JSON())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Read(ctx); !errors.Is(err, notify.ErrShutdown) {
		t.Fatalf("read after the end: %v; want shutdown", err)
	}
}

// TestRefusals: what is refused before the stream starts gets a status and
// a JSON error body.
func TestRefusals(t *testing.T) {
	e := newEnv(t, wire.Config{AllowedOrigins: []string{"https://app.example"}})
	tr := &http3.Transport{TLSClientConfig: e.srv.tlsConfig()}
	defer tr.Close()
	do := func(method, token, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, e.srv.url(), nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		return resp
	}
	errCode := func(resp *http.Response) string {
		var body struct{ Error struct{ Code string } }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return body.Error.Code
	}
	if resp := do(http.MethodGet, "", ""); resp.StatusCode != http.StatusUnauthorized || errCode(resp) != "unauthorized" {
		t.Errorf("no token: %s", resp.Status)
	}
	if resp := do(http.MethodPut, "bob", ""); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" || errCode(resp) != "method_not_allowed" {
		t.Errorf("PUT: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}
	if resp := do(http.MethodGet, "bob", "https://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign origin: %s", resp.Status)
	}
	resp := do(http.MethodOptions, "", "https://app.example")
	if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %s %v", resp.Status, resp.Header)
	}
	if n := e.hub.Stats().Connections; n != 0 {
		t.Fatalf("refused requests left %d connections", n)
	}
}

// TestHTTP2Fallback: the handler is plain net/http, so the same stream
// works over HTTP/2 (and HTTP/1.1), full duplex, with blank heartbeat lines
// since there is no QUIC keep-alive below it.
func TestHTTP2Fallback(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			b := notify.NewMemoryBroker(notify.MemoryConfig{})
			h := notify.NewHub(b, notify.HubConfig{})
			t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
			srv := httptest.NewUnstartedServer(h3.NewHandler(wire.Config{Hub: h, Auth: testAuth, Heartbeat: 50 * time.Millisecond}))
			srv.EnableHTTP2 = proto == "HTTP/2.0"
			srv.StartTLS()
			t.Cleanup(srv.Close)
			client := srv.Client()
			if proto == "HTTP/1.1" {
				client.Transport.(*http.Transport).TLSClientConfig.NextProtos = nil
				client.Transport.(*http.Transport).ForceAttemptHTTP2 = false
				client.Transport.(*http.Transport).TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/stream", pr)
			req.Header.Set("Authorization", "Bearer alice")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != proto {
				t.Fatalf("proto %s", resp.Proto)
			}
			lines := bufio.NewScanner(resp.Body)
			// next skips heartbeats.
			next := func() *notify.Envelope {
				t.Helper()
				for lines.Scan() {
					if len(lines.Bytes()) == 0 {
						continue
					}
					env, err := notify.ParseEnvelope(lines.Bytes())
					if err != nil {
						t.Fatal(err)
					}
					return env
				}
				t.Fatalf("stream ended: %v", lines.Err())
				return nil
			}
			if env := next(); env.Type != notify.TypeSubscribed {
				t.Fatalf("got %s", env.JSON())
			}
			if _, err := io.WriteString(pw, `{"type":"ping","ref":"x"}`+"\n"); err != nil {
				t.Fatal(err)
			}
			if env := next(); env.Type != notify.TypePong || env.Ref != "x" {
				t.Fatalf("got %s; want pong", env.JSON())
			}
			// An idle stream carries heartbeats; the watchdog turns their
			// absence into a failure instead of a hang.
			watchdog := time.AfterFunc(10*time.Second, func() { _ = resp.Body.Close() })
			defer watchdog.Stop()
			for beats := 0; beats < 2; beats++ {
				if !lines.Scan() || len(lines.Bytes()) != 0 {
					t.Fatalf("got %q, %v; want a heartbeat (blank line)", lines.Bytes(), lines.Err())
				}
			}
		})
	}
}

// TestReadContext: a Read whose context ends returns its error and, as
// documented, cancels the stream: the server sees the client leave.
func TestReadContext(t *testing.T) {
	e := newEnv(t, wire.Config{})
	c := e.dial(h3.DialOptions{Token: "bob", Duplex: true})
	expect(t, c, notify.TypeSubscribed, "user:bob")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Read(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read: %v; want the context's deadline", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.hub.Stats().Connections != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server kept the cancelled stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
