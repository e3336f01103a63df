package main

import (
	"html/template"
	"net/http"
)

var indexPage = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en"><meta charset="utf-8"><title>Herald</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em}code{background:#f3f3f3;padding:0 .3em}</style>
<h1>Herald</h1>
<p>Notifications over WebSocket, Server-Sent Events and HTTP/3 streams.</p>
<table>
<tr><td><code>POST /v1/token</code></td><td>mint a connect token (API key)</td></tr>
<tr><td><code>POST /v1/publish</code></td><td>publish a message (API key, or a token with publish rights)</td></tr>
<tr><td><code>GET /v1/history</code></td><td>a channel's retained messages</td></tr>
<tr><td><code>GET /v1/ws</code></td><td>WebSocket</td></tr>
<tr><td><code>GET /v1/sse</code></td><td>Server-Sent Events</td></tr>
<tr><td><code>GET|POST /v1/stream</code></td><td>NDJSON stream (HTTP/3 on the TLS port{{if .TLS}}, {{.TLS}}{{end}})</td></tr>
</table>
<p>Try it: <code>curl -N "http://HOST/v1/sse?token=TOKEN&amp;channel=news"</code>. See <code>docs/protocol.md</code>.</p>
</html>`))

func (s *server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = indexPage.Execute(w, struct{ TLS string }{s.tlsAddr})
}
