// Package h3 is Herald's HTTP/3 streams transport (github.com/quic-go/quic-go):
// the server handler for /v1/stream, the HTTP/3 server settings it is meant
// to run under (NewServer, QUICConfig), and the Go client (Dial).
//
// # Protocol
//
// One request stream carries newline-delimited JSON (application/x-ndjson):
// each server line is one envelope, as on every transport. The channels,
// the resume cursor and the token come from the request as for the other
// transports (channel=, since=, token= or Authorization: Bearer).
//
//   - GET listens only. It is what browsers use (fetch with a streamed
//     response body): they cannot read a response while still sending the
//     request. A GET's body, if any, is ignored.
//   - POST is full duplex: its body carries the client's commands, one JSON
//     object per line, the same commands as on WebSocket; the response
//     carries the replies among the other envelopes. A line longer than
//     wire.Config.MaxCommandSize is answered with a too_large error notice
//     and skipped up to its newline; the stream stays usable. The end of
//     the body (the client closed its sending side) ends nothing: the
//     client has no more commands but goes on listening.
//
// A refused request (authentication, grants, origin, cursor) gets its HTTP
// status and the JSON body {"error":{"code","message"}} before any stream.
// The response header is sent at once, before the first envelope.
//
// The stream lasts until the client cancels it or the server ends it. When
// the server ends it, its last line says why: an error notice with no ref
// (lagged, shutdown, unavailable), or the reconnect advice of a drain. A
// client that stops reading cannot be told: its stream is reset
// (H3_REQUEST_CANCELLED) once a write has waited wire.Config.WriteTimeout,
// and the client resumes from the last envelope it read.
//
// # HTTP versions
//
// The handler is plain net/http, meant for HTTP/3, where QUIC keep-alive
// (see QUICConfig) keeps idle streams open and finds dead peers, and a
// stream costs no TCP connection. Served over HTTP/1.1 or HTTP/2 (the TLS
// listener's TCP side) it works the same, and, having no QUIC keep-alive
// below it, writes an empty line every wire.Config.Heartbeat while idle;
// clients skip empty lines.
//
// # Concurrency and resources
//
// ServeHTTP stays for the stream's life: its goroutine is the stream's
// writer (a wire loop writer), one select over the request's context, the
// Conn's wake-ups and end, and (HTTP/1.1, HTTP/2) a heartbeat timer. This
// package supplies only the framing and the writes. Each wake-up drains the
// queue, encodes the batch into one pooled buffer — a message's shared
// encoding is copied, never re-encoded — and writes it in one write and
// one flush, under a write deadline; the buffer returns to the pool, so an
// idle stream holds none. One more goroutine subscribes the initial
// channels (that may wait for queue room while history replays, so the
// writer cannot do it), then, for POST, reads commands until the body ends;
// for GET it ends after subscribing. ServeHTTP waits for it before it
// returns.
//
// An idle HTTP/3 stream costs about 90 KiB of server memory (heap and
// stacks after GC; GET, 2,000 streams; POST about 2 KiB more for its
// reader), of which about 81 KiB is what quic-go and http3 hold for a
// connection whose handler does nothing (-memfloor): the QUIC connection
// with the TLS state crypto/tls keeps after the handshake, and five
// goroutines (connection loop, send queue, two accept loops, control
// stream). Herald's share is the handler goroutine's stack and about
// 3 KiB of heap. BenchmarkIdleMemory measures it.
//
// # Deployment
//
// quic-go wants UDP socket buffers of about 7 MiB; raise the kernel's caps
// (sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000), or it
// logs a warning and throughput suffers under load.
package h3
