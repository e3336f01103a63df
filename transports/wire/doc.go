// Package wire is what Herald's transports share: the client commands and
// their decoder, resume cursors, the Authenticator interface, the session
// that runs a client's commands against its notify.Conn, the mapping of
// errors to HTTP statuses, and server drain.
//
// Each transport (ws, sse, h3) only adapts its connection: it authenticates
// with Open, starts a writer that drains the Conn, feeds commands to
// Session.Handle (duplex transports) and closes the Conn when the client
// goes. See docs/protocol.md for the wire protocol.
package wire
