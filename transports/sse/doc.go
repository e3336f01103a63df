// Package sse is Herald's Server-Sent Events transport: the handler for
// GET /v1/sse (HTTP/1.1, HTTP/2 and HTTP/3 alike) and a Go client dialer
// built on github.com/r3labs/sse/v2's client.
//
// # Wire format
//
// The stream is one-way: channels are chosen at connect time (repeated
// channel= query parameters; the user's own channel is always included)
// and changed by reconnecting. The response starts with a retry field,
// then carries one event per envelope, with no event field, so that every
// envelope reaches EventSource's onmessage and says its own "type":
//
//	retry: 2000
//
//	id: news=1700000000000-0;user:42=1699999999999-3
//	data: {"type":"message","channel":"news","id":"1700000000000-0",…}
//
//	data: {"type":"gap","channel":"news","since":"…"}
//
//	:
//
// An id line comes only with the envelopes that move a position (messages
// and subscribed notices); it is the connection's whole cursor (see
// wire.Cursor), or the bare message ID on a single-channel connection, so
// the Last-Event-ID a browser sends back resumes every channel. Notices
// without a position carry no id and leave the browser's last one in
// place. A line holding only ":" is the heartbeat.
//
// The position to resume from is the Last-Event-ID header, else the
// last_event_id query parameter (the same value, for clients that cannot set
// headers), else the since query parameter (see ServeHTTP and wire.Open).
// Last-Event-ID wins over the URL because a browser reconnecting by itself
// sends the URL it first used, with a stale since, and the newer position in
// the header.
//
// When the server ends a stream for a reason (lagging, shutdown) its last
// event is the error notice; a drain's reconnect advice also ends it. The
// client sees the end of the stream and resumes from its cursor.
//
// # Concurrency and resources
//
// The per-connection writer is a wire.Writer; this package supplies only
// the framing (events, with their id lines) and the writes.
//
//   - HTTP/1.1: the handler hijacks the connection and returns. The stream
//     then has one goroutine, a small reader that notices the client
//     leaving; its writer runs on demand, only while something is queued
//     (lingering briefly after), and its heartbeat is a timer.
//   - HTTP/2 and HTTP/3: the handler goroutine stays in ServeHTTP for the
//     stream's life as its writer, one select over the request's end, the
//     hub connection's wake-ups and end, and a heartbeat timer.
//
// Each wake-up drains everything queued, encodes the batch into one
// pooled buffer, writes it in one Write and flushes (quic-go holds
// responses under 4 KiB until a flush). A short-lived goroutine subscribes
// the initial channels, since a long history replay waits for queue room
// that only the writer makes.
//
// Each write has a deadline (wire.Config.WriteTimeout): a client that does
// not take it in time is dropped as lagging. On HTTP/2 and HTTP/3 the
// deadline is cleared once the write is done, because on HTTP/2 a write
// deadline is a timer on the stream that resets it even while nothing is
// being written; on a hijacked HTTP/1.1 connection it stays set while the
// writer is busy and is removed when it goes idle.
//
// # Dead peers
//
// A heartbeat is written when nothing else was for wire.Config.Heartbeat,
// but a write to a vanished peer only fails once buffers are full, which
// can take long. The server must therefore be configured per protocol:
//
//   - HTTP/1.1 (and the TCP under HTTP/2): use ConnContext (or TuneConn) so
//     that TCP gives up on unacknowledged data after about
//     2×Heartbeat+WriteTimeout:
//
//     srv := &http.Server{Handler: mux, ConnContext: sse.ConnContext(cfg), …}
//
//   - HTTP/2: set http.Server.HTTP2 so that a connection that stops
//     answering pings is closed:
//
//     srv.HTTP2 = &http.HTTP2Config{SendPingTimeout: cfg.Heartbeat, PingTimeout: cfg.WriteTimeout}
//
//   - HTTP/3: set the http3.Server's QUICConfig: KeepAlivePeriod at most
//     Heartbeat, MaxIdleTimeout about 2×Heartbeat+WriteTimeout (quic-go's
//     defaults are no keep-alive and 30 s), and Allow0RTT false (a 0-RTT
//     request can be replayed, and with it a single-use token).
//
// Never set http.Server.WriteTimeout for a server that streams: it would
// cut every stream (the handler replaces it with its per-write deadline).
// http.Server.Shutdown waits for streams to end: drain the hub first
// (wire.Drain, or Hub.Close), which ends every stream.
package sse
