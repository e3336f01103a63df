// Package wt is Herald's WebTransport transport
// (github.com/quic-go/webtransport-go): the handler of WebTransport sessions
// at /v1/wt, the Server that serves them on the TLS port's QUIC socket next
// to HTTP/3 (one QUIC connection carries both), and the Go client (Dial).
//
// # Protocol
//
// A session is an extended CONNECT (:protocol webtransport-h3) authenticated
// and checked like every transport's request: the token (token= query
// parameter, which browsers must use, or Authorization: Bearer), the
// channel= and since= parameters, and the Origin (wire.OriginAllowed, the
// same rules as WebSocket). A refusal is the request's HTTP status and the
// JSON body {"error":{"code","message"}}; nothing is registered. A request
// that is not a WebTransport CONNECT gets 400 webtransport_required.
//
// Once the session is up, the client opens one bidirectional stream (its
// first write may carry commands). It carries NDJSON exactly like the
// HTTP/3 duplex stream (package h3): the client's commands one per line,
// the server's envelopes one per line, and the same rules (a line over
// wire.Config.MaxCommandSize gets too_large and is skipped; the end of the
// client's side ends nothing). A client that opens no stream within the
// write timeout is closed with CodeNoStream. Further streams and datagrams
// are ignored.
//
// When the server ends a session its last line says why (an error notice
// without ref, or a drain's reconnect advice), the stream ends (FIN), and
// the session is closed with a session error code (close.go: the numbers
// of Herald's WebSocket close codes, the message the error code). The
// server waits up to two seconds for the client to close the session first:
// closing a session resets its streams, which would lose the last lines.
// A client that stops reading is closed at once with CodeLagged once a
// write has waited wire.Config.WriteTimeout.
//
// # Concurrency and resources
//
// ServeHTTP stays for the session's life: its goroutine is the session's
// writer (a wire loop writer), one select over the session's context and
// the Conn's wake-ups and end; QUIC keep-alive replaces heartbeats (see
// h3.QUICConfig; the same idle timeout finds dead peers). One more goroutine
// subscribes the initial channels, then reads commands until the stream's
// reading side ends; ServeHTTP waits for it before it returns. webtransport-
// go adds two goroutines per session (the CONNECT stream's capsule reader
// and writer) and, per connection, its own stream accept loops and a
// goroutine per open HTTP/3 unidirectional stream, to quic-go's
// per-connection ones. Measured (BenchmarkIdleMemory, 1,000 idle sessions,
// each on its own QUIC connection): 120 KiB and 12 goroutines per session
// on the server, against 93 KiB and 7 for an idle duplex h3 stream.
//
// Shutdown stops accepting QUIC connections and answers 503 shutdown to
// every request and session the open ones carry afterwards: http3 sends a
// GOAWAY only on connections it serves itself, not on those a
// webtransport.Server serves, so without it a client told to reconnect by
// a drain would come back on its pooled connection to the same instance.
//
// Server methods and Handler.ServeHTTP are safe for concurrent use. A
// Client's Read must be called from one goroutine; its command methods may
// be called concurrently with Read and with each other; Close is
// idempotent.
//
// # Deployment
//
// WebTransport needs HTTP/3 (UDP) and a certificate the browser trusts.
// Browsers may instead trust a self-signed ECDSA certificate valid for at
// most 14 days (the development certificate is one) by its SHA-256 hash
// (serverCertificateHashes); see docs/transports.md.
package wt
