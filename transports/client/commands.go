package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

type cmdKind uint8

const (
	cmdSubscribe cmdKind = iota
	cmdUnsubscribe
	cmdPublish
)

// waiter is a caller waiting for the server's reply to a command.
type waiter struct {
	kind    cmdKind
	channel string
	// conn is the connection whose stream will carry the reply; nil
	// while there is none (a subscribe waits for the next connection).
	// Guarded by Client.mu.
	conn *connState
	done chan result // capacity 1; receives exactly one result
}

type result struct {
	id  notify.ID // publish: the message's ID
	err error
}

// registerLocked records w under a fresh ref.
func (c *Client) registerLocked(w *waiter) string {
	c.nextRef++
	ref := strconv.FormatUint(c.nextRef, 36)
	c.waiters[ref] = w
	return ref
}

// bindLocked ties w to the connection that will carry its reply. A reader
// stuck on a full buffer is woken: it must reach the reply (see read).
func (c *Client) bindLocked(w *waiter, cs *connState) {
	if w.conn == cs {
		return
	}
	c.unbindLocked(w)
	w.conn = cs
	cs.waiting++
	if cs.waiting == 1 {
		close(cs.want)
	}
}

func (c *Client) unbindLocked(w *waiter) {
	cs := w.conn
	if cs == nil {
		return
	}
	w.conn = nil
	cs.waiting--
	if cs.waiting == 0 {
		cs.want = make(chan struct{})
	}
}

// resolveLocked hands res to w and forgets it.
func (c *Client) resolveLocked(ref string, w *waiter, res result) {
	delete(c.waiters, ref)
	c.unbindLocked(w)
	w.done <- res
}

// bindSubscribersLocked binds the pending subscribes of ch to cs.
func (c *Client) bindSubscribersLocked(ch string, cs *connState) {
	for _, w := range c.waiters {
		if w.kind == cmdSubscribe && w.channel == ch {
			c.bindLocked(w, cs)
		}
	}
}

// resolveSubscribersLocked answers the pending subscribes of ch.
func (c *Client) resolveSubscribersLocked(ch string, err error) {
	for ref, w := range c.waiters {
		if w.kind == cmdSubscribe && w.channel == ch {
			c.resolveLocked(ref, w, result{err: err})
		}
	}
}

// dropChannelLocked removes ch from the set, failing its pending
// subscribes with err.
func (c *Client) dropChannelLocked(ch string, err error) {
	delete(c.chans, ch)
	delete(c.resume, ch)
	delete(c.delivered, ch)
	delete(c.gapAt, ch)
	delete(c.presence, ch)
	c.resolveSubscribersLocked(ch, err)
}

// wait waits for w's result or ctx. A caller that gives up leaves the
// command to complete without it.
func (c *Client) wait(ctx context.Context, ref string, w *waiter) result {
	select {
	case res := <-w.done:
		return res
	case <-ctx.Done():
		c.mu.Lock()
		if c.waiters[ref] != w {
			c.mu.Unlock()
			return <-w.done // resolved meanwhile: a publish's ID is not lost
		}
		delete(c.waiters, ref)
		c.unbindLocked(w)
		c.mu.Unlock()
		return result{err: ctx.Err()}
	}
}

// Subscribe adds channel to the client's channels, resuming after since
// (an ID; "" for live messages only, "0-0" for all the server retains),
// and waits until a server confirms it. The channel is then part of every
// later connection, resumed from its position. If ctx ends first, the
// subscription proceeds without the caller; if the server refuses it
// (forbidden, invalid_channel…), it is dropped and that error returned.
// Subscribing a channel already in the set does nothing.
//
// On SSE, which cannot change a stream's channels, the client reconnects
// with the new set, resuming every channel from its position.
func (c *Client) Subscribe(ctx context.Context, channel, since string) error {
	if err := notify.ValidateChannel(channel); err != nil {
		return err
	}
	var id notify.ID
	if since != "" {
		var err error
		if id, err = notify.ParseID(since); err != nil {
			return err
		}
	}
	c.mu.Lock()
	if c.stopped {
		defer c.mu.Unlock()
		return c.err
	}
	if c.chans[channel] != nil {
		c.mu.Unlock()
		return nil
	}
	c.chans[channel] = &chanState{tentative: true}
	delete(c.excluded, channel)
	delete(c.resume, channel)
	delete(c.delivered, channel)
	if since != "" {
		c.resume[channel], c.delivered[channel] = id, id
	}
	c.version++
	w := &waiter{kind: cmdSubscribe, channel: channel, done: make(chan result, 1)}
	ref := c.registerLocked(w)
	cs := c.conn
	if cs != nil && c.cfg.Transport != SSE {
		c.bindLocked(w, cs)
	}
	c.mu.Unlock()

	switch {
	case c.cfg.Transport == SSE:
		c.kickSSE()
	case cs != nil:
		// The reply resolves w by channel: no ref, like the subscriptions
		// a connection makes at connect. A failed send means the
		// connection is ending; the next one subscribes the channel.
		_ = c.send(cs, wire.Command{Type: wire.CmdSubscribe, Channel: channel, Since: since})
	}
	return c.wait(ctx, ref, w).err
}

// Unsubscribe removes channel from the client's channels. No envelope of
// it is returned by Next afterwards, and its position is forgotten. On
// WebSocket and HTTP/3 it waits for the server's confirmation (or the end
// of the connection, the next one not having the channel); on SSE the
// client reconnects without the channel and Unsubscribe returns at once.
// The user's own channel is subscribed by the server on every
// connection; once unsubscribed, the client drops its envelopes on later
// connections too.
func (c *Client) Unsubscribe(ctx context.Context, channel string) error {
	c.mu.Lock()
	if c.stopped {
		defer c.mu.Unlock()
		return c.err
	}
	if c.chans[channel] == nil {
		c.mu.Unlock()
		return nil
	}
	c.dropChannelLocked(channel, fmt.Errorf("client: unsubscribed from %q before the server confirmed it", channel))
	c.excluded[channel] = true
	c.version++
	cs := c.conn
	if cs == nil || c.cfg.Transport == SSE {
		c.mu.Unlock()
		if c.cfg.Transport == SSE {
			c.kickSSE()
		}
		return nil
	}
	w := &waiter{kind: cmdUnsubscribe, channel: channel, done: make(chan result, 1)}
	ref := c.registerLocked(w)
	c.bindLocked(w, cs)
	c.mu.Unlock()
	// A failed send means the connection is ending; teardown resolves w.
	_ = c.send(cs, wire.Command{Type: wire.CmdUnsubscribe, Channel: channel, Ref: ref})
	return c.wait(ctx, ref, w).err
}

// Publish publishes data (JSON; nil for none) on channel with an event
// name, and returns the message's ID once the server acknowledged it. It
// waits for a connection if there is none. If the connection ends between
// sending and the ack, it returns ErrUnconfirmed and does not resend. The
// token must allow publishing to the channel (else a forbidden error).
// SSE cannot publish: ErrOneWay.
func (c *Client) Publish(ctx context.Context, channel, event string, data json.RawMessage) (notify.ID, error) {
	if c.cfg.Transport == SSE {
		return notify.ID{}, ErrOneWay
	}
	w := &waiter{kind: cmdPublish, channel: channel, done: make(chan result, 1)}
	cs, ref, err := c.bindPublish(ctx, w)
	if err != nil {
		return notify.ID{}, err
	}
	if err := c.send(cs, wire.Command{Type: wire.CmdPublish, Channel: channel, Event: event, Data: data, Ref: ref}); err != nil {
		c.mu.Lock()
		if c.waiters[ref] == w {
			c.resolveLocked(ref, w, result{err: fmt.Errorf("%w: %w", ErrUnconfirmed, err)})
		}
		c.mu.Unlock()
	}
	res := c.wait(ctx, ref, w)
	return res.id, res.err
}

// bindPublish waits for a connection and binds w to it.
func (c *Client) bindPublish(ctx context.Context, w *waiter) (*connState, string, error) {
	for {
		c.mu.Lock()
		if c.stopped {
			defer c.mu.Unlock()
			return nil, "", c.err
		}
		if cs := c.conn; cs != nil && !cs.ended {
			ref := c.registerLocked(w)
			c.bindLocked(w, cs)
			c.mu.Unlock()
			return cs, ref, nil
		}
		ready := c.connReady
		c.mu.Unlock()
		select {
		case <-ready:
		case <-c.done:
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
	}
}
