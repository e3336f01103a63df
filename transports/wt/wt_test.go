package wt_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/wt"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
)

// testAuth knows alice (subscribe and publish room.*).
var testAuth = wire.AuthFunc(func(r *http.Request) (*notify.Grants, error) {
	if wire.Token(r) == "alice" {
		return &notify.Grants{User: "alice", Subscribe: []string{"room."}, Publish: []string{"room."}}, nil
	}
	return nil, notify.Errorf(notify.ErrUnauthorized, "unknown token")
})

type testEnv struct {
	t   *testing.T
	hub *notify.Hub
	srv *testServer
}

func newEnv(t *testing.T, cfg wire.Config, extra func(*http.ServeMux)) *testEnv {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	h := notify.NewHub(b, notify.HubConfig{})
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	cfg.Hub, cfg.Auth = h, testAuth
	mux := wtMux(wt.NewHandler(cfg))
	if extra != nil {
		extra(mux)
	}
	return &testEnv{t: t, hub: h, srv: startServer(t, mux, cfg)}
}

func (e *testEnv) dial(opts wt.DialOptions) *wt.Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts.TLSConfig = e.srv.tlsConfig()
	if opts.Token == "" {
		opts.Token = "alice"
	}
	c, err := wt.Dial(ctx, e.srv.url(), opts)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// readUntil reads envelopes until one of type typ with ref arrives.
func readUntil(t *testing.T, c *wt.Client, typ, ref string) *notify.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		e, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read (want %s ref %q): %v", typ, ref, err)
		}
		if e.Type == typ && e.Ref == ref {
			return e
		}
	}
}

// TestCommandTiming: commands reach the session however their bytes are
// cut: written with the stream's opening (before the server has accepted
// the stream or subscribed the initial channels), late, one byte per
// write, several in one write, and cut in the middle of a multi-byte
// character.
func TestCommandTiming(t *testing.T) {
	e := newEnv(t, wire.Config{}, nil)
	early := `{"type":"ping","ref":"early1"}` + "\n" + `{"type":"subscribe","channel":"room.1","ref":"early2"}` + "\n"
	c := e.dial(wt.DialOptions{First: []byte(early)})
	readUntil(t, c, notify.TypePong, "early1")
	readUntil(t, c, notify.TypeSubscribed, "early2")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Late, one byte at a time, with pauses.
	for i, b := range []byte(`{"type":"ping","ref":"bytewise"}` + "\n") {
		if err := c.WriteRaw(ctx, []byte{b}); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	readUntil(t, c, notify.TypePong, "bytewise")
	// Two commands and the start of a third in one write; the rest, cut
	// inside "é" (two bytes in UTF-8), in two more.
	pub := `{"type":"publish","channel":"room.1","event":"e","data":{"s":"é"},"ref":"split"}` + "\n"
	cut := strings.Index(pub, "é") + 1
	writes := []string{`{"type":"ping","ref":"a"}` + "\n" + `{"type":"ping","ref":"b"}` + "\n" + pub[:10], pub[10:cut], pub[cut:]}
	for _, w := range writes {
		if err := c.WriteRaw(ctx, []byte(w)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	readUntil(t, c, notify.TypePong, "a")
	readUntil(t, c, notify.TypePong, "b")
	// The ack and the message itself, in either order.
	var acked, got bool
	for !acked || !got {
		env, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read (acked %v, message %v): %v", acked, got, err)
		}
		acked = acked || (env.Type == notify.TypeAck && env.Ref == "split")
		if env.Type == notify.TypeMessage {
			if string(env.Data) != `{"s":"é"}` {
				t.Fatalf("published data arrived as %s", env.Data)
			}
			got = true
		}
	}
}

// TestNotWebTransport: a plain HTTP/3 request to the endpoint gets a clear
// 400 and registers nothing, while the same connection serves HTTP/3
// requests to other routes (the h3 stream shares the server).
func TestNotWebTransport(t *testing.T) {
	e := newEnv(t, wire.Config{}, func(mux *http.ServeMux) {
		mux.HandleFunc("/other", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(r.Proto)) })
	})
	tr := &h3Transport{tls: e.srv.tlsConfig()}
	defer tr.close()
	resp := tr.get(t, "https://"+e.srv.addr+"/v1/wt?token=alice")
	err := wire.ResponseError(resp)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(err.Error(), "webtransport_required") {
		t.Fatalf("GET /v1/wt: %d %v", resp.StatusCode, err)
	}
	if n := e.hub.Stats().Connections; n != 0 {
		t.Fatalf("%d connections registered by a refused request", n)
	}
	if resp := tr.get(t, "https://"+e.srv.addr+"/other"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /other: %d", resp.StatusCode)
	}
}

// TestRefusedSession: bad credentials and a foreign origin are refused with
// the server's error before the session exists; nothing is registered.
func TestRefusedSession(t *testing.T) {
	e := newEnv(t, wire.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		opts wt.DialOptions
		want error
	}{
		{wt.DialOptions{Token: "nobody"}, notify.ErrUnauthorized},
		{wt.DialOptions{Token: "alice", Channels: []string{"news"}}, notify.ErrForbidden},
		{wt.DialOptions{Token: "alice", Since: "room.1=bogus", Channels: []string{"room.1"}}, notify.ErrInvalidPosition},
		{wt.DialOptions{Token: "alice", Header: http.Header{"Origin": {"https://evil.example"}}}, notify.ErrForbidden},
	} {
		tc.opts.TLSConfig = e.srv.tlsConfig()
		c, err := wt.Dial(ctx, e.srv.url(), tc.opts)
		if err == nil {
			_ = c.Close()
			t.Fatalf("%+v: dialed", tc.opts)
		}
		if !errors.Is(err, tc.want) {
			t.Fatalf("%+v: %v, want %v", tc.opts, err, tc.want)
		}
	}
	if n := e.hub.Stats().Connections; n != 0 {
		t.Fatalf("%d connections registered by refused requests", n)
	}
}

// TestNoStreamCloses: a session whose client opens no stream is closed
// with CodeNoStream after the write timeout, and its connection is
// unregistered.
func TestNoStreamCloses(t *testing.T) {
	e := newEnv(t, wire.Config{WriteTimeout: 300 * time.Millisecond}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &webtransport.Transport{TLSClientConfig: e.srv.tlsConfig()}
	_, sess, err := d.Dial(ctx, e.srv.url()+"?token=alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.CloseWithError(0, "")
	select {
	case <-sess.Context().Done():
	case <-ctx.Done():
		t.Fatal("session not closed")
	}
	_, err = sess.AcceptStream(ctx)
	var se *webtransport.SessionError
	if !errors.As(err, &se) || se.ErrorCode != wt.CodeNoStream || !se.Remote {
		t.Fatalf("session ended with %v, want code %d", err, wt.CodeNoStream)
	}
	waitConns(t, e.hub, 0)
}

// TestDrainCloseCode: a drain's advice arrives whole, the stream ends, and
// Read reports shutdown; the session's close code is CodeGoingAway.
func TestDrainCloseCode(t *testing.T) {
	e := newEnv(t, wire.Config{}, nil)
	c := e.dial(wt.DialOptions{})
	readUntil(t, c, notify.TypeSubscribed, "")
	wire.Drain(e.hub, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env, err := c.Read(ctx)
	if err != nil || env.Type != notify.TypeReconnect {
		t.Fatalf("read %v, %v; want the reconnect advice", env, err)
	}
	if _, err := c.Read(ctx); !errors.Is(err, notify.ErrShutdown) && !errors.Is(err, io.EOF) {
		t.Fatalf("after the advice: %v", err)
	}
	waitConns(t, e.hub, 0)
}

func waitConns(t *testing.T, hub *notify.Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for hub.Stats().Connections != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want %d", hub.Stats().Connections, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// h3Transport makes plain HTTP/3 requests.
type h3Transport struct {
	tls *tls.Config
	tr  *http3.Transport
}

func (h *h3Transport) get(t *testing.T, url string) *http.Response {
	t.Helper()
	if h.tr == nil {
		h.tr = &http3.Transport{TLSClientConfig: h.tls}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := h.tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func (h *h3Transport) close() {
	if h.tr != nil {
		_ = h.tr.Close()
	}
}

// TestShutdownRefusesNewRequests: once Shutdown has begun, an open QUIC
// connection's new requests and sessions get 503 shutdown (http3 sends no
// GOAWAY on connections it does not serve itself), while the session
// already open goes on until it ends.
func TestShutdownRefusesNewRequests(t *testing.T) {
	e := newEnv(t, wire.Config{}, func(mux *http.ServeMux) {
		mux.HandleFunc("/other", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	})
	tr := &h3Transport{tls: e.srv.tlsConfig()}
	defer tr.close()
	if resp := tr.get(t, "https://"+e.srv.addr+"/other"); resp.StatusCode != http.StatusOK {
		t.Fatalf("before Shutdown: %d", resp.StatusCode)
	}
	c := e.dial(wt.DialOptions{})
	readUntil(t, c, notify.TypeSubscribed, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.srv.Shutdown(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := tr.get(t, "https://"+e.srv.addr+"/other") // the same QUIC connection
		if resp.StatusCode == http.StatusServiceUnavailable {
			if err := wire.ResponseError(resp); !errors.Is(err, notify.ErrShutdown) {
				t.Fatalf("refused with %v; want shutdown", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still served after Shutdown: %d", resp.StatusCode)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.Ping(context.Background(), "still"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, c, notify.TypePong, "still")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v", err)
	}
}
