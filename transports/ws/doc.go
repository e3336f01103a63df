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
// one goroutine, its reader; its writer goroutine runs only while there is
// something to write (started by the hub's wake-up), and its heartbeat is a
// timer whose callback pings and re-arms itself.
package ws
