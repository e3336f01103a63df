// Package browser serves Herald's browser client, herald.js (an ES module,
// no build step), and the demo page.
package browser

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Files are the browser files: herald.js, herald.d.ts, index.html.
var Files, _ = fs.Sub(static, "static")

// Handler serves GET / (the demo page), /herald.js and /herald.d.ts.
func Handler() http.Handler {
	fileServer := http.FileServerFS(Files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})
}
