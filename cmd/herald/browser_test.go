package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/transports/devcert"
)

// TestBrowserDemo drives the demo page in headless Chromium: the page,
// loaded over HTTP/3 from the TLS listener, connects over WebSocket, SSE,
// the fetch stream (HTTP/3) and a WebTransport session (checked: no
// fallback), subscribes a channel at runtime (a subscribe command on
// WebSocket and WebTransport), publishes
// through its WebSocket, and receives what POST /v1/publish sends. Then the
// server restarts on the same ports (on Redis, so history survives), a
// second instance publishes during the outage, and every transport receives
// each message exactly once: the ones published before, during and after
// the restart.
func TestBrowserDemo(t *testing.T) {
	rdb := redistest.Start(t)
	a := startServer(t, "--redis", rdb.URL())
	other := startServer(t, "--redis", rdb.URL()) // publishes while a is down
	tab := startBrowser(t, a)

	// The page gets its tokens with the API key, passed in the fragment
	// (never sent to the server) as a developer would paste it.
	tab.do(t, "open the demo page", chromedp.Navigate("https://"+a.tlsAddr+"/#key="+testAPIKey))
	tab.do(t, "connect all",
		chromedp.SetValue(chromedp.CSS("#user"), "ada"),
		chromedp.SetValue(chromedp.CSS("#channels"), "demo.news"),
		chromedp.Click(chromedp.CSS("#connect-all")),
	)
	tab.waitSubscribed(t, "demo.news user:ada")
	if proto := tab.eval(t, `performance.getEntriesByType("navigation")[0].nextHopProtocol`); proto != "h3" {
		t.Errorf("the page came over %q; want h3 (Chromium forced to QUIC)", proto)
	}
	// WebTransport opened a session: no fallback to WebSocket.
	if active := tab.eval(t, `herald.clients.webtransport.activeTransport`); active != "webtransport" {
		t.Fatalf("the webtransport client runs on %q; want a WebTransport session\n%s", active, tab.output.String())
	}

	// A channel added at runtime: a subscribe command on WebSocket, a
	// reconnection with the new set (and resume) on SSE and the stream.
	tab.do(t, "add a channel",
		chromedp.SetValue(chromedp.CSS("#channels"), "demo.news, demo.extra"),
		chromedp.Click(chromedp.CSS("#connect-all")),
	)
	tab.waitSubscribed(t, "demo.extra demo.news user:ada")

	var want []string
	// Published by the page, through its WebSocket (an acknowledged publish).
	tab.do(t, "publish through the WebSocket",
		chromedp.SetValue(chromedp.CSS("#pub-via"), "ws"),
		chromedp.SetValue(chromedp.CSS("#pub-channel"), "demo.extra"),
		chromedp.Click(chromedp.CSS("#publish-one")),
	)
	tab.waitFor(t, "the publish status", `document.querySelector("#publish-status").textContent !== ""`)
	status := tab.eval(t, `document.querySelector("#publish-status").textContent`)
	m := regexp.MustCompile(`^Published (\d+-\d+) to demo\.extra through the WebSocket`).FindStringSubmatch(status)
	if m == nil {
		t.Fatalf("publish status %q", status)
	}
	want = append(want, m[1])
	// Published through the REST API by a backend.
	for i, ch := range []string{"demo.news", "user:ada", "demo.extra"} {
		want = append(want, publish(t, a, testAPIKey, ch, fmt.Sprintf(`{"text":"before %d"}`, i)))
	}
	tab.waitReceived(t, want)

	// Restart on the same ports. Each page connection gets reconnect advice,
	// then finds the server gone and backs off; meanwhile another instance
	// publishes.
	a = restartServer(t, a, func() {
		tab.waitFor(t, "every transport to lose its connection", `[...document.querySelectorAll(".panel")].every((p) => p.dataset.state !== "connected")`)
		for i, ch := range []string{"demo.news", "user:ada", "demo.extra", "demo.news"} {
			want = append(want, publish(t, other, testAPIKey, ch, fmt.Sprintf(`{"text":"during %d"}`, i)))
		}
	})
	tab.waitReceived(t, want)
	want = append(want, publish(t, a, testAPIKey, "demo.news", `{"text":"after"}`))
	tab.waitReceived(t, want)

	// Exactly once: no row twice, and no duplicate even reached the client
	// (herald.js drops and counts them).
	for _, p := range tab.panels(t) {
		if p.Dups != "0" {
			t.Errorf("%s: herald.js dropped %s duplicates; the server sent messages twice", p.Transport, p.Dups)
		}
	}

	// HTTP/3, seen by both ends: the stream that the restart ended has a
	// resource timing entry, and the new server saw its new stream arrive
	// over HTTP/3.
	protos := tab.eval(t, `JSON.stringify(performance.getEntriesByType("resource")
		.filter((e) => new URL(e.name).pathname === "/v1/stream").map((e) => e.nextHopProtocol))`)
	var ended []string
	if err := json.Unmarshal([]byte(protos), &ended); err != nil || len(ended) == 0 {
		t.Fatalf("no ended /v1/stream request in the page's resource timing: %s", protos)
	}
	for _, p := range ended {
		if p != "h3" {
			t.Errorf("a stream used %q; want h3 (all: %v)", p, ended)
		}
	}
	if got := a.protocols("/v1/stream"); !slices.Equal(got, []string{"HTTP/3.0"}) {
		t.Errorf("the restarted server saw /v1/stream over %v; want HTTP/3.0 only", got)
	}
	// The WebTransport client resumed on a new session, not on WebSocket.
	if got := a.protocols("/v1/wt"); !slices.Equal(got, []string{"webtransport-h3"}) && !slices.Equal(got, []string{"webtransport"}) {
		t.Errorf("the restarted server saw /v1/wt as %v; want WebTransport CONNECTs only", got)
	}
	if active := tab.eval(t, `herald.clients.webtransport.activeTransport`); active != "webtransport" {
		t.Errorf("after the restart the webtransport client runs on %q", active)
	}
	t.Logf("protocols after the restart: stream %v, sse %v, ws %v, wt %v", a.protocols("/v1/stream"), a.protocols("/v1/sse"), a.protocols("/v1/ws"), a.protocols("/v1/wt"))
	tab.screenshot(t, "demo.png")
}

// TestBrowserDemoPlainHTTP: the page as a new user first opens it, from
// the plain listener (http://localhost:8080/ by default): every transport
// works over HTTP/1.1 under the page's Content-Security-Policy, and the
// stream panel tells which HTTP version a stream used once it ends.
func TestBrowserDemoPlainHTTP(t *testing.T) {
	s := startServer(t)
	tab := startBrowser(t, s)
	tab.do(t, "open the demo page", chromedp.Navigate(s.url("/#key="+testAPIKey+"&user=bo&channels=demo.news")))
	if frag := tab.eval(t, `location.hash`); frag != "" {
		t.Errorf("the fragment (with the API key) is still in the address: %q", frag)
	}
	tab.do(t, "connect all", chromedp.Click(chromedp.CSS("#connect-all")))
	tab.waitSubscribed(t, "demo.news user:bo")
	want := []string{publish(t, s, testAPIKey, "demo.news", `{"text":"one"}`), publish(t, s, testAPIKey, "user:bo", `{"text":"two"}`)}
	tab.waitReceived(t, want)
	// No WebTransport session opens from a plain-HTTP page (the plain port
	// serves no QUIC): the webtransport client fell back to WebSocket, at
	// once, and received the same messages.
	if active := tab.eval(t, `herald.clients.webtransport.activeTransport`); active != "ws" {
		t.Errorf("on the plain-HTTP page the webtransport client runs on %q; want the WebSocket fallback", active)
	}
	if proto := tab.eval(t, `document.querySelector('[data-transport="webtransport"] [data-field="proto"]').textContent`); proto != "fell back to WebSocket" {
		t.Errorf("the WebTransport panel says %q", proto)
	}
	tab.do(t, "disconnect the stream", chromedp.Click(chromedp.CSS(`[data-transport="stream"] [data-action="disconnect"]`)))
	tab.waitFor(t, "the stream's HTTP version", `document.querySelector('[data-transport="stream"] [data-field="proto"]').textContent === "last stream: HTTP/1.1"`)
	// Resume after a disconnect the application asked for.
	want = append(want, publish(t, s, testAPIKey, "demo.news", `{"text":"three"}`))
	tab.do(t, "connect the stream again", chromedp.Click(chromedp.CSS(`[data-transport="stream"] [data-action="connect"]`)))
	tab.waitReceived(t, want)
}

// ---- Chromium ----

// tab is a page of a headless Chromium owned by a test.
type tab struct {
	ctx    context.Context
	output *lockedBuffer // Chromium's stderr and the page's console
}

// startBrowser starts Debian's chromium, headless, trusting s's development
// certificate and forced to QUIC for s's TLS address. It fails the test,
// never skips it, when Chromium cannot be started. The whole browser lives
// at most three minutes.
func startBrowser(t *testing.T, s *server) *tab {
	t.Helper()
	return launchBrowser(t, s, true)
}

// launchBrowser is startBrowser; with trust false, Chromium is not told to
// trust the development certificate (nor forced to QUIC).
func launchBrowser(t *testing.T, s *server, trust bool) *tab {
	t.Helper()
	exe := os.Getenv("HERALD_CHROMIUM")
	if exe == "" {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
			if p, err := exec.LookPath(name); err == nil {
				exe = p
				break
			}
		}
	}
	if exe == "" {
		t.Fatal("Chromium not found: the browser tests need it. Install Debian's chromium package (apt-get install -y chromium), or set HERALD_CHROMIUM to a Chromium binary")
	}
	cert, _, err := devcert.LoadOrCreate(s.cfg.certDir, devcert.DefaultHosts)
	if err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
		chromedp.CombinedOutput(out),
	)
	if trust {
		opts = append(opts,
			chromedp.Flag("origin-to-force-quic-on", s.tlsAddr),
			chromedp.Flag("ignore-certificate-errors-spki-list", devcert.SPKIHash(cert)))
	}
	life, cancelLife := context.WithTimeout(context.Background(), 3*time.Minute)
	alloc, cancelAlloc := chromedp.NewExecAllocator(life, opts...)
	ctx, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancelLife()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium (%s) failed: %v\nInstall Debian's chromium package (apt-get install -y chromium).\n%s", exe, err, out.String())
	}
	err = chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			fmt.Fprintf(out, "console.%s: %s\n", ev.Type, strings.Join(args, " "))
		case *runtime.EventExceptionThrown:
			fmt.Fprintf(out, "exception: %s %s\n", ev.ExceptionDetails.Text, ev.ExceptionDetails.Exception.Description)
		case *log.EventEntryAdded:
			fmt.Fprintf(out, "log %s: %s %s\n", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL)
		}
	})
	if err == nil {
		_, err = chromedp.Call(ctx, log.Enable, struct{}{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return &tab{ctx: ctx, output: out}
}

// do runs actions, failing the test after 20 seconds.
func (b *tab) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(t, what, err)
	}
}

func (b *tab) eval(t *testing.T, expr string, opts ...chromedp.EvaluateOption) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, opts...))
	if err != nil {
		b.fail(t, "evaluating "+expr, err)
	}
	return v
}

// evalAsync evaluates expr, a promise of a string, and waits for it.
func (b *tab) evalAsync(t *testing.T, expr string) string {
	t.Helper()
	return b.eval(t, expr, chromedp.EvalAwaitPromise)
}

// waitFor waits up to 30 seconds for expr to be truthy.
func (b *tab) waitFor(t *testing.T, what, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 35*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		b.fail(t, "waiting for "+what, err)
	}
}

// panel is what the page shows of one transport.
type panel struct {
	Transport, State, Subscribed, Cause, Dups string
	IDs                                       []string
}

const panelsJS = `JSON.stringify([...document.querySelectorAll(".panel")].map((p) => ({
	Transport: p.dataset.transport, State: p.dataset.state, Subscribed: p.dataset.subscribed ?? "",
	Cause: p.querySelector(".cause").textContent, Dups: p.querySelector('[data-field="dups"]').textContent,
	IDs: [...p.querySelectorAll("li[data-id]")].map((li) => li.dataset.id).reverse(),
})))`

func (b *tab) panels(t *testing.T) []panel {
	t.Helper()
	var ps []panel
	if err := json.Unmarshal([]byte(b.eval(t, panelsJS)), &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 4 {
		t.Fatalf("the page shows %d transports; want 4", len(ps))
	}
	return ps
}

// waitSubscribed waits until every transport is connected and has a
// position on exactly the channels (space-separated, sorted).
func (b *tab) waitSubscribed(t *testing.T, channels string) {
	t.Helper()
	b.waitFor(t, "every transport connected to "+channels, `[...document.querySelectorAll(".panel")].every((p) =>
		p.dataset.state === "connected" && p.dataset.subscribed === `+jsString(channels)+`)`)
}

// waitReceived waits until every transport shows the messages ids, and
// fails if one shows another message, or one twice.
func (b *tab) waitReceived(t *testing.T, ids []string) {
	t.Helper()
	b.waitFor(t, fmt.Sprintf("%d messages on every transport", len(ids)), `[...document.querySelectorAll(".panel")].every((p) =>
		p.querySelectorAll("li[data-id]").length >= `+fmt.Sprint(len(ids))+`)`)
	for _, p := range b.panels(t) {
		got := slices.Clone(p.IDs)
		slices.Sort(got)
		want := slices.Clone(ids)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s received %v; want each of %v once", p.Transport, p.IDs, ids)
		}
	}
}

// screenshot saves the page to $HERALD_SCREENSHOTS/name, if set.
func (b *tab) screenshot(t *testing.T, name string) {
	dir := os.Getenv("HERALD_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), png, 0o644)
	}
	if err != nil {
		t.Errorf("screenshot: %v", err)
	}
}

func (b *tab) fail(t *testing.T, what string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](panelsJS))
	t.Fatalf("%s: %v\npage: %s\nbrowser:\n%s", what, err, state, b.output.String())
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// lockedBuffer collects Chromium's output and the page's console, written
// from chromedp's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ---- restart ----

// protoLog records the HTTP version of each request by path.
type protoLog struct {
	mu     sync.Mutex
	protos map[string][]string // guarded by mu
}

var serverProtos sync.Map // *server → *protoLog

func (s *server) protocols(path string) []string {
	v, ok := serverProtos.Load(s)
	if !ok {
		return nil
	}
	l := v.(*protoLog)
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Compact(slices.Sorted(slices.Values(l.protos[path])))
}

// restartServer drains s (clients get reconnect advice), runs during while
// it is down, and starts a server with the same configuration on the same
// addresses, retrying the bind for a few seconds. The new server records
// the protocol of every request (see protocols).
func restartServer(t *testing.T, s *server, during func()) *server {
	t.Helper()
	s.drain()
	during()
	cfg := *s.cfg
	cfg.addr, cfg.tlsAddr = s.plainAddr, s.tlsAddr
	deadline := time.Now().Add(10 * time.Second)
	for attempt := 1; ; attempt++ {
		n, err := newServer(&cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		l := &protoLog{protos: map[string][]string{}}
		next := n.plain.Handler
		n.plain.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			l.mu.Lock()
			l.protos[r.URL.Path] = append(l.protos[r.URL.Path], r.Proto)
			l.mu.Unlock()
			next.ServeHTTP(w, r)
		})
		_, err = n.start()
		if err == nil {
			if attempt > 1 {
				t.Logf("restarted on the same ports at attempt %d", attempt)
			}
			serverProtos.Store(n, l)
			t.Cleanup(func() {
				if n.closer != nil {
					n.drain()
				}
			})
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarting on %s and %s: %v", cfg.addr, cfg.tlsAddr, err)
		}
		time.Sleep(50 * time.Millisecond) // the old ports may linger briefly
	}
}
