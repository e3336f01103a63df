package client

import (
	"fmt"
	"time"

	"github.com/heraldhq/herald/notify"
)

// read is a connection's reader: it reads envelopes until the connection
// ends, keeps the positions, answers waiting commands and hands envelopes
// for the caller to the buffer. It runs on its own goroutine, owned by
// serve, and returns why the connection ended.
func (c *Client) read(cs *connState) error {
	for {
		e, err := cs.conn.Read(cs.ctx)
		if err != nil {
			return err
		}
		if err := c.handle(cs, e); err != nil {
			return err
		}
		if cs.overflowed && !c.waitingOn(cs) {
			// Every reply is in; what was dropped comes again on the
			// next connection, resumed from the positions.
			return errOverflow
		}
	}
}

func (c *Client) handle(cs *connState, e *notify.Envelope) error {
	switch e.Type {
	case notify.TypeMessage, notify.TypeGap:
		c.deliver(cs, e)
	case notify.TypeSubscribed:
		c.subscribed(e)
		c.applyPresence(e)
	case notify.TypePresence:
		c.applyPresence(e)
	case notify.TypeUnsubscribed:
		c.reply(e.Ref, result{})
	case notify.TypeAck:
		c.reply(e.Ref, result{id: e.ID})
	case notify.TypeError:
		return c.errorNotice(cs, e)
	case notify.TypeReconnect:
		// The stream ends next; the loop waits the advised delay.
		cs.advised, cs.advice = true, time.Duration(max(e.Delay, 0))*time.Millisecond
	case notify.TypeExpiring:
		return c.expiring(cs)
	case notify.TypeRefreshed:
		cs.refreshing = false
	}
	return nil // pong, and types this client does not know
}

// deliver hands a message or gap notice to the buffer, unless its channel
// left the set or it is a duplicate: a message at or before the channel's
// position (the server never sends one; this is defence in depth), or the
// gap notice already delivered for the same position.
func (c *Client) deliver(cs *connState, e *notify.Envelope) {
	if cs.overflowed {
		return // the position stays before it: it comes again
	}
	c.mu.Lock()
	pos, known := c.resume[e.Channel]
	gap, gapped := c.gapAt[e.Channel]
	skip := c.chans[e.Channel] == nil ||
		(e.Type == notify.TypeMessage && known && !e.ID.After(pos)) ||
		(e.Type == notify.TypeGap && gapped && known && e.Since == pos && gap == pos)
	want := cs.want
	c.mu.Unlock()
	if skip {
		return
	}
	if !c.push(cs, want, e) {
		cs.overflowed = true
		return
	}
	c.mu.Lock()
	if c.chans[e.Channel] != nil {
		if e.Type == notify.TypeMessage {
			c.resume.advance(e.Channel, e.ID)
		} else {
			c.gapAt[e.Channel] = e.Since
		}
	}
	c.mu.Unlock()
}

// push puts e in the buffer. When the buffer is full it waits for room —
// the backpressure that stops reading the connection — unless a command
// waits for a reply on this connection (want is closed): the reply is
// behind e in the stream, so e is dropped instead, and the connection
// is resumed once the replies are in. It reports whether e was buffered.
func (c *Client) push(cs *connState, want <-chan struct{}, e *notify.Envelope) bool {
	select {
	case c.buf <- e:
		return true
	default:
	}
	select {
	case c.buf <- e:
		return true
	case <-want:
		return false
	case <-cs.ctx.Done():
		return false
	}
}

// subscribed records a subscription's start: its position, and the end of
// the pending Subscribe calls for it.
func (c *Client) subscribed(e *notify.Envelope) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.chans[e.Channel]
	if st == nil {
		if e.Ref != "" || c.excluded[e.Channel] {
			return // the caller left it; its messages are dropped
		}
		// Subscribed unasked at connect: the user's own channel.
		st = &chanState{auto: true}
		c.chans[e.Channel] = st
	}
	st.tentative = false
	c.resume.advance(e.Channel, e.ID)
	if _, ok := c.delivered[e.Channel]; !ok {
		// A new subscription: nothing of the channel is buffered before
		// it. (A resumed one starts at the resume position, which the
		// delivered position reaches as Next returns what is buffered.)
		c.delivered[e.Channel] = e.ID
	}
	c.resolveSubscribersLocked(e.Channel, nil)
}

// reply resolves the command waiting for ref.
func (c *Client) reply(ref string, res result) {
	if ref == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.waiters[ref]; w != nil {
		c.resolveLocked(ref, w, res)
	}
}

// errorNotice handles an error notice: a command's answer (it has a ref),
// the reason the server ends the connection (it names no channel), or a
// channel the server refused to subscribe.
func (c *Client) errorNotice(cs *connState, e *notify.Envelope) error {
	err := e.Err()
	switch {
	case e.Ref == refreshRef:
		// Refused: the server ends the connection at the expiry, and
		// the next one gets a new token.
		cs.refreshing = false
		c.cfg.Logger.Debug("herald client: refresh refused", "error", err)
		return nil
	case e.Ref != "":
		c.mu.Lock()
		if w := c.waiters[e.Ref]; w != nil {
			if w.kind == cmdUnsubscribe && errorIs(err, notify.ErrNotSubscribed.Code) {
				err = nil // the goal is reached
			}
			c.resolveLocked(e.Ref, w, result{err: err})
		}
		c.mu.Unlock()
		return nil
	case e.Channel == "":
		cs.reason = err // the stream ends next
		return nil
	}
	return c.channelError(cs, e, err)
}

// channelError handles a subscription the server refused. A failure
// retrying may fix (unavailable…) ends the connection, to be retried with
// backoff. A permanent one drops the channel and reports it to the
// pending Subscribe, or else to the caller through Next.
func (c *Client) channelError(cs *connState, e *notify.Envelope, err error) error {
	switch {
	case errorIs(err, notify.ErrAlreadySubscribed.Code):
		// The server's set already has it: as good as subscribed.
		c.mu.Lock()
		if st := c.chans[e.Channel]; st != nil {
			st.tentative = false
			c.resolveSubscribersLocked(e.Channel, nil)
		}
		c.mu.Unlock()
		return nil
	case errorIs(err, notify.ErrNotSubscribed.Code):
		return nil // an unsubscribe the server had done already
	}
	if !permanent(err) {
		return fmt.Errorf("client: channel %q: %w", e.Channel, err)
	}
	c.mu.Lock()
	if c.chans[e.Channel] == nil {
		c.mu.Unlock()
		return nil
	}
	if c.hasSubscribersLocked(e.Channel) {
		c.dropChannelLocked(e.Channel, err)
		c.mu.Unlock()
		return nil
	}
	want := cs.want
	c.mu.Unlock()
	if cs.overflowed || !c.push(cs, want, e) {
		cs.overflowed = true // kept: the next connection is refused again
		return nil
	}
	c.mu.Lock()
	c.dropChannelLocked(e.Channel, err)
	c.mu.Unlock()
	return nil
}

func (c *Client) hasSubscribersLocked(ch string) bool {
	for _, w := range c.waiters {
		if w.kind == cmdSubscribe && w.channel == ch {
			return true
		}
	}
	return false
}

// waitingOn reports whether a command waits for a reply on cs.
func (c *Client) waitingOn(cs *connState) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cs.waiting > 0
}
