package browser

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestHeraldJS runs herald.js's unit tests (testdata/herald.test.mjs) with
// Node's built-in test runner: cursors, ID order, backoff bounds, and the
// client's reconnect, resume, dedup and publish logic against fake
// transports. It fails, not skips, without Node, so that CI cannot pass
// without running them.
func TestHeraldJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found in PATH: install Node.js 18 or later (Debian: apt-get install -y nodejs) to run herald.js's unit tests")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "testdata/herald.test.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	cases := []struct {
		path, contentType, body string
		status                  int
	}{
		{"/", "text/html; charset=utf-8", "<title>Herald", 200},
		{"/herald.js", "text/javascript; charset=utf-8", "export class Herald", 200},
		{"/herald.d.ts", "application/typescript; charset=utf-8", "export class Herald", 200},
		{"/nope.js", "", "", 404},
	}
	for _, c := range cases {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d; want %d", c.path, resp.StatusCode, c.status)
			continue
		}
		if c.status != 200 {
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != c.contentType {
			t.Errorf("%s: Content-Type %q; want %q", c.path, got, c.contentType)
		}
		if !strings.Contains(string(body), c.body) {
			t.Errorf("%s: body lacks %q", c.path, c.body)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", c.path)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); (c.path == "/") != (csp != "") {
			t.Errorf("%s: Content-Security-Policy %q", c.path, csp)
		}
	}
}

// TestPageCSP: the policy names the hash of the page's inline module and
// style, so the page runs under it (the browser tests prove it in
// Chromium), and allows no other inline code.
func TestPageCSP(t *testing.T) {
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	page := "<style>b{}</style><noscript>x</noscript><script type=\"module\">go()</script><script src=\"a.js\"></script>"
	got := contentSecurityPolicy([]byte(page))
	for _, want := range []string{
		"script-src 'self' " + hash("go()") + ";",
		"style-src 'self' " + hash("b{}") + ";",
		"default-src 'none'", "connect-src 'self'",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("policy %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "unsafe-inline") {
		t.Errorf("policy allows any inline code: %q", got)
	}
	if n := strings.Count(pageCSP, "'sha256-"); n != 2 {
		t.Errorf("the demo page's policy has %d hashes; want 2 (one module script, one style): %s", n, pageCSP)
	}
}
