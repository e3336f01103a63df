// Package ws is Herald's WebSocket transport (github.com/coder/websocket):
// the server handler for GET /v1/ws and the Go client dialer.
//
// Frames are JSON text. A server frame holds one or more envelopes separated
// by "\n" (a writer coalesces everything queued into one frame); a client
// frame holds one or more commands, also one per line. See docs/protocol.md
// for the commands, the notices and the close codes.
//
// # Resources per connection
//
// The HTTP handler returns right after the upgrade. A connection then has
// one goroutine, its reader; its writer (a wire.Writer on demand) runs only
// while there is something to write, started by the hub's wake-up and
// lingering briefly once the queue is empty (wire.Config.WriterLinger), and
// its heartbeat is a timer that pings only a connection idle for
// wire.Config.Heartbeat; no pong within the write timeout ends the
// connection (close code 4001).
//
// # Writing
//
// The writer writes data frames itself, straight to the hijacked
// connection: each frame's header in front of its payload, one Write per
// frame. coder/websocket still writes its control frames (pongs, pings,
// close) through its own small buffer; a net.Conn serializes whole Write
// calls, so the two never interleave inside a frame. The write deadline is
// set on the connection for a busy period, not per write.
package ws
