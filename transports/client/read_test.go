package client

import (
	"context"
	"errors"
	"io"
	"testing"
	"testing/synctest"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// startFake runs a fake client for the rest of the bubble's test.
func startFake(t *testing.T, d *fakeDialer, cfg Config) *Client {
	t.Helper()
	c, _ := newFakeClient(t, d, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func wantIDs(t *testing.T, c *Client, ids ...uint64) {
	t.Helper()
	for _, id := range ids {
		if e := next(t, c); e.Type != notify.TypeMessage || e.ID.Ms != id {
			t.Fatalf("got %s; want message %d-0", e.JSON(), id)
		}
	}
}

// Messages at or before the channel's position never reach the caller,
// nor a gap notice already delivered for the same position; a reconnect
// resumes from the last message delivered.
func TestDuplicatesDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		c := startFake(t, d, Config{Channels: []string{"news"}})
		f := <-d.conns
		f.give(t, subscribedAt("news", 0), msg("news", 1), msg("news", 2), msg("news", 2), msg("news", 1), msg("news", 3))
		wantIDs(t, c, 1, 2, 3)
		f.end <- io.EOF

		f = <-d.conns
		if got := d.callList()[1].req.Since; got != "news=3-0" {
			t.Errorf("resumed from %q; want news=3-0", got)
		}
		gap := &notify.Envelope{Type: notify.TypeGap, Channel: "news", Since: notify.ID{Ms: 3}}
		f.give(t, subscribedAt("news", 3), gap, msg("news", 3), msg("news", 4))
		if e := next(t, c); e.Type != notify.TypeGap {
			t.Fatalf("got %s; want the gap", e.JSON())
		}
		wantIDs(t, c, 4)
		f.give(t, &notify.Envelope{Type: notify.TypeGap, Channel: "news", Since: notify.ID{Ms: 4}})
		if e := next(t, c); e.Type != notify.TypeGap {
			t.Fatalf("got %s; want the second gap", e.JSON())
		}
		f.end <- io.EOF

		f = <-d.conns
		f.give(t, subscribedAt("news", 4), &notify.Envelope{Type: notify.TypeGap, Channel: "news", Since: notify.ID{Ms: 4}}, msg("news", 5))
		wantIDs(t, c, 5) // the repeated gap was dropped
	})
}

// A full buffer stops the reader without dropping anything or
// reconnecting; Positions follows what Next returned, not what is
// buffered.
func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		c := startFake(t, d, Config{Channels: []string{"news"}, BufferSize: 2})
		f := <-d.conns
		f.give(t, subscribedAt("news", 0), msg("news", 1), msg("news", 2), msg("news", 3))
		synctest.Wait() // the reader is stuck on message 3
		select {
		case f.envs <- msg("news", 4):
			t.Fatal("the reader took more than the buffer holds")
		default:
		}
		if n := len(d.callList()); n != 1 {
			t.Fatalf("%d connections; want 1", n)
		}
		if p := c.Positions(); p != "news=0-0" {
			t.Errorf("Positions = %q before any Next; want news=0-0", p)
		}
		wantIDs(t, c, 1)
		if p := c.Positions(); p != "news=1-0" {
			t.Errorf("Positions = %q; want news=1-0", p)
		}
		f.give(t, msg("news", 4))
		wantIDs(t, c, 2, 3, 4)
	})
}

// A Publish waiting for its ack behind a full buffer: the reader drops
// what does not fit to reach the ack, then resumes on a new connection
// from the last envelope buffered. Nothing is lost or repeated.
func TestPublishBehindFullBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		c := startFake(t, d, Config{Channels: []string{"news"}, BufferSize: 2})
		f := <-d.conns
		f.give(t, subscribedAt("news", 0), msg("news", 1), msg("news", 2), msg("news", 3))
		synctest.Wait()

		type pub struct {
			id  notify.ID
			err error
		}
		published := make(chan pub, 1)
		go func() {
			id, err := c.Publish(t.Context(), "room.1", "chat", []byte(`{"text":"hi"}`))
			published <- pub{id, err}
		}()
		cmd := <-f.sent
		if cmd.Type != wire.CmdPublish || cmd.Ref == "" || cmd.Channel != "room.1" {
			t.Fatalf("sent %+v", cmd)
		}
		f.give(t, msg("news", 4), &notify.Envelope{Type: notify.TypeAck, Channel: "room.1", ID: notify.ID{Ms: 99}, Ref: cmd.Ref})
		if p := <-published; p.err != nil || p.id.Ms != 99 {
			t.Fatalf("Publish = %v, %v", p.id, p.err)
		}
		f2 := <-d.conns // reconnected at once, resuming after message 2
		if got := d.callList()[1].req.Since; got != "news=2-0" {
			t.Errorf("resumed from %q; want news=2-0", got)
		}
		wantIDs(t, c, 1, 2)
		f2.give(t, subscribedAt("news", 2), msg("news", 3), msg("news", 4))
		wantIDs(t, c, 3, 4)
		if s := c.State(); s.Attempt != 0 {
			t.Errorf("state %+v: the overflow counted as a failure", s)
		}
	})
}

// A connection lost between a publish and its ack: the outcome is unknown
// and the client says so rather than resending.
func TestPublishUnconfirmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		c := startFake(t, d, Config{})
		f := <-d.conns
		errc := make(chan error, 1)
		go func() {
			_, err := c.Publish(t.Context(), "room.1", "", nil)
			errc <- err
		}()
		<-f.sent
		f.end <- io.EOF
		if err := <-errc; !errors.Is(err, ErrUnconfirmed) {
			t.Errorf("Publish: %v; want ErrUnconfirmed", err)
		}
		f2 := <-d.conns
		select {
		case cmd := <-f2.sent:
			t.Errorf("resent %+v", cmd)
		default:
		}
	})
}

// Subscribe and Unsubscribe on a duplex transport send commands; a
// subscription made while disconnected is part of the next connection; a
// server refusal drops the channel and returns the error.
func TestSubscribeCommands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		c := startFake(t, d, Config{})
		f := <-d.conns
		f.give(t, subscribedAt("user:42", 5)) // the server's own pick

		errc := make(chan error, 1)
		go func() { errc <- c.Subscribe(t.Context(), "room.1", "3-0") }()
		if cmd := <-f.sent; cmd.Type != wire.CmdSubscribe || cmd.Channel != "room.1" || cmd.Since != "3-0" {
			t.Fatalf("sent %+v", cmd)
		}
		f.give(t, subscribedAt("room.1", 3), msg("room.1", 4))
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		wantIDs(t, c, 4)

		go func() { errc <- c.Subscribe(t.Context(), "room.2", "") }()
		<-f.sent
		f.give(t, &notify.Envelope{Type: notify.TypeError, Channel: "room.2", Code: "forbidden", Message: "no"})
		if err := <-errc; !errors.Is(err, notify.ErrForbidden) {
			t.Fatalf("Subscribe: %v; want forbidden", err)
		}

		go func() { errc <- c.Unsubscribe(t.Context(), "user:42") }()
		cmd := <-f.sent
		if cmd.Type != wire.CmdUnsubscribe || cmd.Channel != "user:42" {
			t.Fatalf("sent %+v", cmd)
		}
		f.give(t, msg("user:42", 6), &notify.Envelope{Type: notify.TypeUnsubscribed, Channel: "user:42", Ref: cmd.Ref})
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		f.give(t, msg("room.1", 5))
		wantIDs(t, c, 5) // user:42's message 6 was dropped
		f.end <- io.EOF

		<-d.conns
		if req := d.callList()[1].req; len(req.Channels) != 1 || req.Channels[0] != "room.1" || req.Since != "room.1=5-0" {
			t.Errorf("reconnected with %+v; want room.1 from 5-0 and no user channel", req)
		}
		if p := c.Positions(); p != "room.1=5-0" {
			t.Errorf("Positions = %q", p)
		}
	})
}

// On SSE a subscription change reconnects with the new channel set; a
// refusal of that connection drops the new channel only.
func TestSSESubscribeReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		forbidden := notify.Errorf(notify.ErrForbidden, "not allowed")
		d := newFakeDialer(newFakeConn(), forbidden)
		c := startFake(t, d, Config{Transport: SSE, Channels: []string{"news"}})
		f := <-d.conns
		f.give(t, subscribedAt("news", 1), msg("news", 2))
		wantIDs(t, c, 2)

		if err := c.Subscribe(t.Context(), "secret", ""); !errors.Is(err, notify.ErrForbidden) {
			t.Fatalf("Subscribe: %v; want forbidden", err)
		}
		f3 := <-d.conns
		calls := d.callList()
		if got := calls[1].req; len(got.Channels) != 2 || got.Since != "news=2-0" {
			t.Errorf("second dial %+v; want news and secret, from news=2-0", got)
		}
		if got := calls[2].req; len(got.Channels) != 1 || got.Channels[0] != "news" {
			t.Errorf("third dial %+v; want news alone", got)
		}
		f3.give(t, subscribedAt("news", 2), msg("news", 3))
		wantIDs(t, c, 3)
		if _, err := c.Publish(t.Context(), "news", "", nil); !errors.Is(err, ErrOneWay) {
			t.Errorf("Publish on SSE: %v", err)
		}
	})
}

// A channel refused on an accepted connection with a permanent code is
// dropped and reported through Next; unavailable reconnects.
func TestChannelErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		c := startFake(t, d, Config{Channels: []string{"a", "b"}})
		f := <-d.conns
		f.give(t, &notify.Envelope{Type: notify.TypeError, Channel: "a", Code: "unknown_position", Message: "after the last message"})
		if e := next(t, c); e.Type != notify.TypeError || e.Channel != "a" {
			t.Fatalf("got %s; want a's error", e.JSON())
		}
		f.give(t, &notify.Envelope{Type: notify.TypeError, Channel: "b", Code: "unavailable"})
		<-d.conns
		synctest.Wait() // let the loop mark the new connection connected
		if req := d.callList()[1].req; len(req.Channels) != 1 || req.Channels[0] != "b" {
			t.Errorf("reconnected with %+v; want b alone", req)
		}
		if s := c.State(); s.Phase != Connected || s.Attempt != 1 {
			t.Errorf("state %+v", s)
		}
	})
}

// Close stops Run; Next returns what is buffered, then ErrClosed.
func TestCloseDrainsBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDialer()
		c, _ := newFakeClient(t, d, Config{Channels: []string{"news"}})
		done := make(chan error, 1)
		go func() { done <- c.Run(context.Background()) }()
		f := <-d.conns
		f.give(t, subscribedAt("news", 0), msg("news", 1))
		synctest.Wait()
		_ = c.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("Run: %v", err)
		}
		wantIDs(t, c, 1)
		if _, err := c.Next(t.Context()); !errors.Is(err, ErrClosed) {
			t.Errorf("Next: %v", err)
		}
		if err := c.Subscribe(t.Context(), "x", ""); !errors.Is(err, ErrClosed) {
			t.Errorf("Subscribe: %v", err)
		}
		if p := c.Positions(); p != "news=1-0" {
			t.Errorf("Positions = %q", p)
		}
	})
}
