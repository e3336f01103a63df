package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// startDevServer runs a server the way `herald serve` runs with no flags:
// a generated secret and API key (development mode).
func startDevServer(t *testing.T) *server {
	t.Helper()
	return runServer(t)
}

// TestDemoTokens: only a development server hands out demo tokens, and
// only to loopback clients of its own origin.
func TestDemoTokens(t *testing.T) {
	if st := call(t, "POST", startServer(t).url("/v1/demo/token"), "", map[string]any{"user": "ada"}, nil); st != 404 {
		t.Fatalf("a server with an API key answers /v1/demo/token with %d; want 404", st)
	}
	s := startDevServer(t)
	var out struct{ Token string }
	if st := call(t, "POST", s.url("/v1/demo/token"), "", map[string]any{"user": "ada"}, &out); st != 200 || out.Token == "" {
		t.Fatalf("demo token: %d %q", st, out.Token)
	}
	publish(t, s, out.Token, "user:ada", `1`) // fails the test if refused
	publish(t, s, out.Token, "demo.news", `1`)
	var e struct{ Error struct{ Code string } }
	if st := call(t, "POST", s.url("/v1/demo/token"), "", map[string]any{}, &e); st != 400 || e.Error.Code != "invalid_user" {
		t.Fatalf("no user: %d %q; want 400 invalid_user (the demo page's probe)", st, e.Error.Code)
	}
	req, _ := http.NewRequest("POST", s.url("/v1/demo/token"), strings.NewReader(`{"user":"ada"}`))
	req.Header.Set("Origin", "https://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("from another origin: %d; want 403", resp.StatusCode)
	}
}

// TestBrowserDemoDevTokens: on a fresh `herald serve`, the demo page works
// with no key: it connects every transport and publishes with tokens from
// POST /v1/demo/token.
func TestBrowserDemoDevTokens(t *testing.T) {
	s := startDevServer(t)
	tab := startBrowser(t, s)
	tab.do(t, "open the demo page", chromedp.Navigate("https://"+s.tlsAddr+"/"))
	tab.waitFor(t, "the token status", `document.querySelector("#token-status").textContent.includes("development server")`)
	tab.do(t, "connect all", chromedp.Click(chromedp.CSS("#connect-all")))
	tab.waitSubscribed(t, "demo.chat demo.news user:alice")
	tab.do(t, "publish through the REST API", chromedp.Click(chromedp.CSS("#publish-one")))
	tab.waitFor(t, "the publish status", `document.querySelector("#publish-status").textContent !== ""`)
	status := tab.eval(t, `document.querySelector("#publish-status").textContent`)
	m := regexp.MustCompile(`^Published (\d+-\d+) to demo\.news through the REST API`).FindStringSubmatch(status)
	if m == nil {
		t.Fatalf("publish status %q", status)
	}
	tab.waitReceived(t, []string{m[1]})
}
