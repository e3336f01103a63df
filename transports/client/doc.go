// Package client is Herald's reconnecting Go client: one API over the
// transports (WebSocket, SSE, HTTP/3 streams, WebTransport), built on their
// single-connection dialers (transports/ws, transports/sse,
// transports/h3, transports/wt).
//
//	c, err := client.New(client.Config{
//		URL:       "https://herald.example:8443",
//		Transport: client.HTTP3,
//		Token:     fetchToken, // called before every connection
//		Channels:  []string{"news"},
//	})
//	go c.Run(ctx)
//	defer c.Close()
//	for {
//		e, err := c.Next(ctx)
//		…
//	}
//
// # Reconnecting and resuming
//
// Run connects, and whenever the connection ends it reconnects — with a
// fresh token, after a backoff delay with full jitter (Backoff), or after
// the delay of the server's reconnect advice — until its context ends or
// Close is called. It never gives up on its own, except when the server
// refuses the connection in a way retrying cannot fix (see Run). Every
// connection resumes every channel from its position: the ID of the
// channel's last message received, or before any, the position of its
// subscribed notice (the semantics of wire.Positions). Messages at or
// before a channel's position are dropped, so none reaches the caller
// twice; a gap notice tells the caller when the server no longer held
// what was missed.
//
// A connection is healthy once it has stayed up for Config.HealthyAfter
// (default 5s): the backoff then starts over from Backoff.Min. Receiving
// messages does not count: a server that accepts, replays and crashes
// would otherwise be reconnected to in a tight loop.
//
// # Dead servers
//
// The client keeps no timer on a connection (it does not watch the
// server's heartbeats): it learns that a server is gone from the
// transport. A server process that dies has its TCP connections
// (WebSocket, SSE over HTTP/1.1 and HTTP/2) reset by its kernel at once;
// a host or network path that vanished is noticed over TCP only by TCP
// keep-alive, in minutes. A killed QUIC server (HTTP3, WebTransport, SSE over
// HTTP/3)
// sends no close. Its host's kernel answers the client's next packet (the
// default dialer's liveness probe at the latest, a second into silence:
// QUICDialer) with ICMP port unreachable, which the dialer's connected UDP
// socket hears (ConnectedUDP): the connection ends at once. A restarted
// server sharing the reset key answers with a stateless reset instead. Where neither comes back (a host or path
// gone) the client notices at the QUIC idle timeout (DefaultQUICConfig:
// keep-alive + idle timeout; quic-go's defaults take up to 40 s).
// Config.QUICConfig changes it for HTTP3 and WebTransport; SSE over HTTP/3 takes its
// settings from the *http3.Transport in Config.HTTPClient. Config.DialQUIC
// opens HTTP3's and WebTransport's QUIC connections, every attempt anew.
//
// The SSE path goes through sse.Dial, which uses r3labs/sse/v2's client
// for one stream with its own retries off. Its traps (a clean end of
// stream that it never retries, a backoff that gives up after 15 minutes,
// a 64 KiB event limit) therefore cannot stop delivery: this package's
// loop does every reconnection, and the event size limit is ours.
//
// # Concurrency
//
// All methods are safe for concurrent use. A Client has, while Run runs:
//
//   - the loop, on the goroutine that called Run: it fetches tokens,
//     dials, waits out the backoff, and owns the current connection; it
//     returns when Run's context ends, Close is called or a refusal is
//     permanent;
//   - one reader per connection, started and waited for by the loop: it
//     reads envelopes, keeps the positions, answers commands waiting for a
//     reply and hands envelopes to a bounded buffer for Next. It ends with
//     its connection.
//
// Close cancels the loop and waits for both. Subscribe, Unsubscribe and
// Publish send their command from the caller's goroutine on the current
// connection, under the connection's context (an interrupted write breaks
// a WebSocket or HTTP/3 connection), and wait for the reply under the
// caller's.
//
// # Slow readers
//
// Nothing is ever dropped for a slow reader: when the buffer is full the
// reader stops reading the connection, and the server holds the messages
// — and, if the client falls too far behind, disconnects it as lagged, so
// it reconnects and resumes. Publish waits for an ack that is in the
// stream behind what Next has not taken; so that a caller who publishes
// from the goroutine that calls Next cannot deadlock, the reader then
// drops what does not fit (its positions stay before it) until the
// replies are in, and resumes on a new connection.
package client
