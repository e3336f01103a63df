package wire

import (
	"net/http"
	"net/url"
	"path"
	"strings"
)

// OriginAllowed reports whether r may be served given the allowed origin
// patterns: requests without an Origin header (non-browser clients) and
// same-host requests always may; others must match a pattern
// ("https://app.example.com", "https://*.example.com", or "*").
func OriginAllowed(r *http.Request, patterns []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range patterns {
		if p == "*" {
			return true
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(origin)); ok {
			return true
		}
	}
	return false
}

// CORS sets the CORS headers of a cross-origin request from an allowed
// origin and reports whether the request may proceed. It answers preflight
// (OPTIONS) requests itself, returning false for them.
func CORS(w http.ResponseWriter, r *http.Request, patterns []string) bool {
	origin := r.Header.Get("Origin")
	if origin != "" {
		w.Header().Add("Vary", "Origin")
	}
	if !OriginAllowed(r, patterns) {
		WriteError(w, errForbiddenOrigin(origin))
		return false
	}
	if origin != "" {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", "Content-Type")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "600")
		}
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}
