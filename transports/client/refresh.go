package client

import (
	"errors"

	"github.com/heraldhq/herald/transports/wire"
)

// refreshRef is the ref of the client's refresh commands. Command refs are
// base-36 numbers: it never collides with one.
const refreshRef = "refresh"

// errExpiring ends a one-way connection told that its token expires: the
// next connection, with a new token, resumes from the positions.
var errExpiring = errors.New("client: the connection's token is expiring; reconnecting with a new one")

// expiring handles the server's expiring notice. A duplex connection
// fetches a new token and sends it in a refresh command, once per notice
// and off the reader (Token may take a round trip); a one-way connection
// cannot, and ends so as to reconnect at once. Without a Token callback
// there is nothing to refresh with.
func (c *Client) expiring(cs *connState) error {
	if c.cfg.Token == nil {
		return nil
	}
	if c.cfg.Transport == SSE {
		cs.expiring = true
		return errExpiring
	}
	if cs.refreshing {
		return nil
	}
	cs.refreshing = true
	cs.refreshes.Add(1)
	go func() { // owned by serve, which waits for it
		defer cs.refreshes.Done()
		tok, err := c.cfg.Token(cs.ctx)
		if err != nil {
			c.cfg.Logger.Debug("herald client: no token to refresh with", "error", err)
			return // the server ends the connection at the expiry
		}
		if err := c.send(cs, wire.Command{Type: wire.CmdRefresh, Token: tok, Ref: refreshRef}); err != nil {
			c.cfg.Logger.Debug("herald client: refresh not sent", "error", err)
		}
	}()
	return nil
}
