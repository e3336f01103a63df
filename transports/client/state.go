package client

import (
	"fmt"
	"time"
)

// Phase is where a Client is in its life.
type Phase int

// The phases, in the order a client usually goes through them.
const (
	// Idle: Run has not started.
	Idle Phase = iota
	// Connecting: fetching a token and dialing.
	Connecting
	// Connected: the server accepted the connection.
	Connected
	// Reconnecting: waiting State.Delay before the next attempt, because
	// of State.Err.
	Reconnecting
	// Closed: the client has stopped for good; State.Err says why.
	Closed
)

var phaseNames = [...]string{"idle", "connecting", "connected", "reconnecting", "closed"}

func (p Phase) String() string {
	if p < 0 || int(p) >= len(phaseNames) {
		return fmt.Sprintf("Phase(%d)", int(p))
	}
	return phaseNames[p]
}

// State is a Client's connection state, as reported to Config.OnState and
// by Client.State.
type State struct {
	Phase Phase
	// Attempt counts the connections that failed in a row, the last one
	// included: 0 while the first connection or the first after a healthy
	// one is made. Server advice and channel-set changes do not count.
	Attempt int
	// Delay is how long the client waits before reconnecting
	// (Reconnecting).
	Delay time.Duration
	// Advised reports that Delay is the server's reconnect advice (a
	// drain), not backoff.
	Advised bool
	// Err is why the last connection ended or failed (Reconnecting), or
	// why the client stopped (Closed): ErrClosed, the context's error or
	// the server's refusal.
	Err error
}

func (s State) String() string {
	switch s.Phase {
	case Reconnecting:
		how := "backoff"
		if s.Advised {
			how = "advised"
		}
		return fmt.Sprintf("reconnecting in %v (%s, attempt %d): %v", s.Delay, how, s.Attempt, s.Err)
	case Closed:
		return fmt.Sprintf("closed: %v", s.Err)
	}
	return s.Phase.String()
}

// setState records s and reports it to OnState. Only the goroutine running
// Run (or Close, when Run never ran) calls it, so reports arrive in order.
func (c *Client) setState(s State) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
	c.cfg.Logger.Debug("herald client: "+s.String(), "transport", string(c.cfg.Transport))
	if c.cfg.OnState != nil {
		c.cfg.OnState(s)
	}
}
