// Package browser serves Herald's browser client, herald.js (an ES module,
// no build step, typed by herald.d.ts), and the demo page.
//
// herald.js gives WebSocket (/v1/ws), EventSource (/v1/sse) and fetch
// streaming (/v1/stream) one API with the semantics of the Go client:
// reconnection with backoff and full jitter, a token callback before every
// connection, resume of every channel from its position, duplicates dropped,
// gaps surfaced. Its unit tests run with Node's test runner
// (testdata/herald.test.mjs, from TestHeraldJS); cmd/herald's browser tests
// drive the demo page in headless Chromium.
package browser

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
)

//go:embed static
var static embed.FS

// Files are the browser files: herald.js, herald.d.ts, index.html.
var Files, _ = fs.Sub(static, "static")

// pageCSP is the demo page's Content-Security-Policy: its inline script
// and style by hash, herald.js from the same origin, and connections
// (fetch, EventSource, WebSocket) to the same origin only.
var pageCSP = func() string {
	page, err := fs.ReadFile(Files, "index.html")
	if err != nil {
		panic(err)
	}
	return contentSecurityPolicy(page)
}()

// Handler serves GET / (the demo page), /herald.js and /herald.d.ts.
func Handler() http.Handler {
	fileServer := http.FileServerFS(Files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		switch {
		case r.URL.Path == "/" || r.URL.Path == "/index.html":
			h.Set("Content-Security-Policy", pageCSP)
			h.Set("Referrer-Policy", "no-referrer")
		case strings.HasSuffix(r.URL.Path, ".d.ts"):
			// Not video/mp2t, which the system's MIME table says for .ts.
			h.Set("Content-Type", "application/typescript; charset=utf-8")
		case strings.HasSuffix(r.URL.Path, ".js"):
			h.Set("X-TypeScript-Types", "./herald.d.ts") // Deno finds the types
		}
		fileServer.ServeHTTP(w, r)
	})
}

var inlineBlock = regexp.MustCompile(`(?s)<(script|style)\b[^>]*>(.*?)</(?:script|style)>`)

// contentSecurityPolicy allows page's inline scripts and styles by their
// SHA-256, and nothing else inline.
func contentSecurityPolicy(page []byte) string {
	sources := map[string]string{"script": "'self'", "style": "'self'"}
	for _, m := range inlineBlock.FindAllSubmatch(page, -1) {
		if len(m[2]) == 0 {
			continue
		}
		sum := sha256.Sum256(m[2])
		sources[string(m[1])] += " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; script-src " + sources["script"] + "; style-src " + sources["style"] +
		"; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}
