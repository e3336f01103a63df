// Package wire is what Herald's transports share: the client commands and
// their decoder, resume cursors, the Authenticator interface, the session
// that runs a client's commands against its notify.Conn, the per-connection
// Writer, the mapping of errors to HTTP statuses, and server drain.
//
// The session decides each subscription's presence: on when the grants
// allow presence on the channel and the hub has a Presence, unless the
// client opts out (Command.Presence, the presence query parameter).
// Presence envelopes are envelopes like the others: the writers frame them
// unchanged, and they move no position (no SSE id line).
//
// Each transport (ws, sse, h3) only adapts its connection: it authenticates
// with Open, gives a Writer its Output (how to frame envelopes and write a
// frame), feeds commands to Session.Handle (duplex transports) and closes
// the session when the client goes. See docs/protocol.md for the wire
// protocol.
//
// # Concurrency contract
//
//   - A Writer's Wake is safe from any goroutine and never blocks; it is
//     the notify.Conn's wake-up. Everything else a Writer does happens in
//     the goroutine that holds its writer role — at most one at a time —
//     and the Output's methods are only called from there (a Prober's
//     Probe excepted: it runs on the heartbeat timer's goroutine, so it
//     must be safe while frames are written).
//   - An on-demand Writer starts a goroutine on a wake-up when none holds
//     the role and lets it exit after Config.WriterLinger without work; a
//     loop Writer runs on the caller's goroutine until the connection ends.
//   - Session.Handle, SubscribeInitial and Close are safe for concurrent
//     use; Close is idempotent and the first reason wins.
//   - A session whose credentials expire holds one timer (none otherwise):
//     its callback queues the expiring notice and closes the session with
//     notify.DropTokenExpired; a refresh command re-arms it. Close stops it.
package wire
