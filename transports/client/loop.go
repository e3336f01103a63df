package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// connState is one connection: the transport's conn and who waits on it.
type connState struct {
	conn   conn
	ctx    context.Context // ends when the connection is given up
	cancel context.CancelFunc
	snap   snapshot // what it was dialed with

	// Guarded by Client.mu:
	gen     uint64
	waiting int           // waiters bound to this connection
	want    chan struct{} // closed while waiting > 0: wakes a reader stuck on a full buffer
	ended   bool          // torn down: bind no more waiters

	// Owned by the reader until it returns, then by serve:
	overflowed bool          // envelopes were dropped: this connection must be resumed
	advised    bool          // the server advised to reconnect…
	advice     time.Duration // …after this delay
	reason     error         // the server's last word: an error notice naming no channel
	refreshing bool          // a refresh is under way (sent, or its token fetched)
	expiring   bool          // one-way: told the token expires; reconnect now

	refreshes sync.WaitGroup // the refresh goroutine; waited for by serve
}

// snapshot is the channel set and positions a connection is dialed with.
type snapshot struct {
	channels []string // requested: the set without the auto channels
	cursor   string
	version  uint64
}

// connEnd is how a connection ended.
type connEnd struct {
	err       error
	advised   bool
	advice    time.Duration
	immediate bool // not a failure: reconnect at once
}

// loop connects, serves and reconnects until ctx ends (it then returns
// nil) or a connection is refused for good (it returns the refusal).
func (c *Client) loop(ctx context.Context) error {
	attempt := 0 // connections failed in a row
	var reconnect State
	for first := true; ; first = false {
		if !first {
			reconnect.Phase, reconnect.Attempt = Reconnecting, attempt
			c.setState(reconnect)
			if !sleep(ctx, reconnect.Delay) {
				return nil
			}
		}
		c.setState(State{Phase: Connecting, Attempt: attempt})
		cn, snap, err := c.connect(ctx)
		if ctx.Err() != nil {
			if cn != nil {
				_ = cn.Close()
			}
			return nil
		}
		if err != nil {
			if permanent(err) {
				if !c.dropTentative(err) {
					return err
				}
				reconnect = State{Err: err} // at once, without them
				continue
			}
			reconnect = State{Delay: c.cfg.Backoff.delay(attempt, c.cfg.Rand), Err: err}
			attempt++
			continue
		}
		c.setState(State{Phase: Connected, Attempt: attempt})
		start := time.Now()
		end := c.serve(ctx, cn, snap)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) >= c.cfg.HealthyAfter {
			attempt = 0
		}
		reconnect = State{Err: end.err}
		switch {
		case end.advised:
			reconnect.Delay, reconnect.Advised = end.advice, true
		case end.immediate:
		default:
			reconnect.Delay = c.cfg.Backoff.delay(attempt, c.cfg.Rand)
			attempt++
		}
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connect fetches a token and dials with the current channels and
// positions.
func (c *Client) connect(ctx context.Context) (conn, snapshot, error) {
	token := ""
	if c.cfg.Token != nil {
		var err error
		if token, err = c.cfg.Token(ctx); err != nil {
			return nil, snapshot{}, fmt.Errorf("client: token: %w", err)
		}
	}
	c.mu.Lock()
	snap := c.snapshotLocked()
	c.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	cn, err := c.dial(dctx, dialRequest{Token: token, Channels: snap.channels, Since: snap.cursor})
	return cn, snap, err
}

func (c *Client) snapshotLocked() snapshot {
	s := snapshot{cursor: c.resume.cursor(), version: c.version}
	for ch, st := range c.chans {
		if !st.auto {
			s.channels = append(s.channels, ch)
		}
	}
	slices.Sort(s.channels)
	return s
}

// dropTentative removes the channels Subscribe added that no server has
// confirmed yet, failing their Subscribe with err. It reports whether
// there were any: the refusal may be theirs, and the client then retries
// without them rather than stopping.
func (c *Client) dropTentative(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	dropped := false
	for ch, st := range c.chans {
		if st.tentative {
			c.dropChannelLocked(ch, err)
			dropped = true
		}
	}
	return dropped
}

// serve runs one accepted connection until it ends.
func (c *Client) serve(ctx context.Context, cn conn, snap snapshot) connEnd {
	cctx, cancel := context.WithCancel(ctx)
	cs := &connState{conn: cn, ctx: cctx, cancel: cancel, snap: snap, want: make(chan struct{})}
	cmds, redial := c.install(cs)
	readErr := make(chan error, 1)
	go func() { readErr <- c.read(cs) }() // owned by serve, which waits for it below
	for _, cmd := range cmds {
		// A failed send breaks the connection, which the reader reports.
		_ = c.send(cs, cmd)
	}
	if redial {
		c.kickSSE()
	}
	var end connEnd
	for waiting := true; waiting; {
		select {
		case end.err = <-readErr:
			waiting = false
		case <-c.kick:
			if !c.setChanged(snap) {
				continue
			}
			// SSE cannot change its channels on a connection: reconnect
			// with the new set, resuming from the positions.
			cancel()
			_ = cn.Close()
			<-readErr
			end.err, end.immediate, waiting = errResubscribe, true, false
		}
	}
	cancel()
	_ = cn.Close()
	cs.refreshes.Wait() // Token is never called concurrently
	c.teardown(cs)
	end.advised, end.advice = cs.advised, cs.advice
	switch {
	case errors.Is(end.err, errOverflow):
		end.immediate = true
	case cs.reason != nil && !end.immediate && !errors.Is(end.err, cs.reason):
		end.err = fmt.Errorf("%w (%w)", cs.reason, end.err)
	}
	if cs.expiring || errors.Is(end.err, notify.ErrTokenExpired) {
		// Not a failure: a new token is all it takes.
		end.immediate = true
	}
	c.cfg.Logger.Debug("herald client: connection ended", "error", end.err)
	return end
}

// install makes cs the current connection. It returns the commands that
// bring the connection's channels up to date with the set — Subscribe and
// Unsubscribe calls made while it was dialed — or, for SSE, whether it must
// be redialed for them.
func (c *Client) install(cs *connState) (cmds []wire.Command, redial bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	cs.gen = c.gen
	c.conn = cs
	close(c.connReady)
	sse := c.cfg.Transport == SSE
	if sse {
		redial = c.version != cs.snap.version
	}
	for ch, st := range c.chans {
		if st.auto {
			continue
		}
		requested := slices.Contains(cs.snap.channels, ch)
		if !requested {
			if sse {
				continue // the redial requests it
			}
			cmd := wire.Command{Type: wire.CmdSubscribe, Channel: ch}
			if id, ok := c.resume[ch]; ok {
				cmd.Since = id.String()
			}
			cmds = append(cmds, cmd)
		}
		c.bindSubscribersLocked(ch, cs)
	}
	if !sse {
		for _, ch := range cs.snap.channels {
			if c.chans[ch] == nil {
				cmds = append(cmds, wire.Command{Type: wire.CmdUnsubscribe, Channel: ch})
			}
		}
	}
	return cmds, redial
}

// teardown ends cs's part: publishes awaiting an ack fail with
// ErrUnconfirmed, unsubscribes succeed (the next connection will not have
// the channel), subscribes wait for the next connection.
func (c *Client) teardown(cs *connState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs.ended = true
	if c.conn == cs {
		c.conn = nil
		c.connReady = make(chan struct{})
	}
	for ref, w := range c.waiters {
		if w.conn != cs {
			continue
		}
		switch w.kind {
		case cmdPublish:
			c.resolveLocked(ref, w, result{err: ErrUnconfirmed})
		case cmdUnsubscribe:
			c.resolveLocked(ref, w, result{})
		default:
			c.unbindLocked(w)
		}
	}
}

// setChanged reports whether the channel set changed since snap.
func (c *Client) setChanged(snap snapshot) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version != snap.version
}

// kickSSE asks serve to redial an SSE connection for a new channel set.
func (c *Client) kickSSE() {
	select {
	case c.kick <- struct{}{}:
	default: // one is pending already
	}
}

// send sends cmd on cs under the connection's context, never a caller's:
// an interrupted write breaks a WebSocket or HTTP/3 connection.
func (c *Client) send(cs *connState, cmd wire.Command) error {
	ctx, cancel := context.WithTimeout(cs.ctx, c.cfg.WriteTimeout)
	defer cancel()
	return cs.conn.Send(ctx, cmd)
}
