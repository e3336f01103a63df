package client

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/heraldhq/herald/notify"
)

// Client is a reconnecting connection to Herald over one transport. Make
// it with New, run it with Run, read with Next. All methods are safe for
// concurrent use.
type Client struct {
	cfg  Config   // immutable after New
	dial dialFunc // immutable once Run starts; tests replace it before

	buf     chan *notify.Envelope // the connection's reader → Next; bounded
	kick    chan struct{}         // capacity 1: SSE's channel set changed
	done    chan struct{}         // closed once the client has stopped; err is set
	runDone chan struct{}         // closed when Run returns
	finish  sync.Once

	mu sync.Mutex
	// Guarded by mu:
	state     State
	err       error // why the client stopped; set before done closes
	stopped   bool  // done is closed
	closing   bool  // Close was called
	running   bool  // Run was called
	cancel    context.CancelFunc
	chans     map[string]*chanState    // the channel set: subscribed or to subscribe
	excluded  map[string]bool          // unsubscribed: ignore the server subscribing them
	version   uint64                   // bumped by Subscribe and Unsubscribe
	resume    positions                // what the reader has handed to buf: resumed from
	delivered positions                // what Next has returned: Positions
	gapAt     positions                // the position of each channel's last gap notice buffered
	conn      *connState               // the current connection, nil between connections
	connReady chan struct{}            // closed when a connection is installed
	gen       uint64                   // connections made so far
	waiters   map[string]*waiter       // commands awaiting a reply, by ref
	presence  map[string]*presenceView // channels whose subscription has presence
	nextRef   uint64
}

// chanState is one channel of the set.
type chanState struct {
	// auto: the server subscribed it unasked (the user's own channel); it
	// is resumed through the cursor, not requested.
	auto bool
	// tentative: added by Subscribe and not yet confirmed by a subscribed
	// notice. A connection refused while some are tentative is retried
	// without them instead of stopping the client.
	tentative bool
}

// New returns a client for cfg. It checks cfg and does no I/O; Run
// connects.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	cfg.Channels = slices.Clone(cfg.Channels)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ep, err := endpoint(cfg.URL, cfg.Transport)
	if err != nil {
		return nil, err
	}
	since, err := parseCursor(cfg.Since, cfg.Channels)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:       cfg,
		buf:       make(chan *notify.Envelope, cfg.BufferSize),
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		runDone:   make(chan struct{}),
		chans:     make(map[string]*chanState),
		excluded:  make(map[string]bool),
		resume:    since,
		delivered: maps.Clone(since),
		gapAt:     positions{},
		connReady: make(chan struct{}),
		waiters:   make(map[string]*waiter),
		presence:  make(map[string]*presenceView),
	}
	c.dial = dialer(&c.cfg, ep)
	for _, ch := range cfg.Channels {
		c.chans[ch] = &chanState{}
	}
	return c, nil
}

// Run connects and stays connected until ctx ends, Close is called, or the
// server refuses the connection in a way that retrying cannot fix. It
// returns ErrClosed after Close, ctx's error after ctx ended, else that
// refusal. Run may be called once.
//
// How each failure is handled:
//
//   - The connection ends (network, server restart, lagged, heartbeat,
//     broker unavailable…): reconnect with backoff, resuming every channel.
//   - The server's reconnect advice (a drain): reconnect after its delay.
//   - unauthorized (401) at connect: retry with backoff; every attempt
//     fetches a fresh token. It is reported in State.Err meanwhile.
//   - too_many_connections, rate_limited (429), unavailable, shutdown (503),
//     other HTTP or network failures: retry with backoff.
//   - forbidden (403), invalid_* (400), unknown_position, too_large,
//     too_many_channels: if channels added by Subscribe are still
//     unconfirmed, they are dropped (their Subscribe returns the error) and
//     the client reconnects without them; otherwise Run returns the error.
//   - One channel refused on an accepted connection (an error notice that
//     names it): with a permanent code above, the channel is dropped and
//     the error notice is returned by Next (or by the pending Subscribe);
//     unavailable and other codes reconnect with backoff.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("client: Run called twice")
	}
	c.running = true
	if c.closing {
		c.mu.Unlock()
		close(c.runDone)
		return ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	c.mu.Unlock()
	defer close(c.runDone)
	defer cancel()

	err := c.loop(ctx)
	c.mu.Lock()
	switch {
	case c.closing:
		err = ErrClosed
	case err == nil:
		err = ctx.Err()
	}
	c.mu.Unlock()
	c.stop(err)
	return err
}

// stop ends the client with err: pending commands fail with it, Next
// returns it once the buffer is empty.
func (c *Client) stop(err error) {
	c.finish.Do(func() {
		c.mu.Lock()
		c.err, c.stopped = err, true
		for ref, w := range c.waiters {
			c.resolveLocked(ref, w, result{err: err})
		}
		c.mu.Unlock()
		close(c.done)
		c.setState(State{Phase: Closed, Err: err})
	})
}

// Close stops the client and waits for Run to return. Pending commands
// fail with ErrClosed; Next returns what is buffered, then ErrClosed.
// Positions then resumes exactly after the last envelope Next returned.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	cancel, running := c.cancel, c.running
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if running {
		<-c.runDone
	} else {
		c.stop(ErrClosed)
	}
	return nil
}

// Next returns the next envelope: a message, a gap notice (messages after
// its Since were lost; refetch the channel's state), or an error notice
// naming a channel the server refused (the channel is dropped). Envelopes
// of one channel come in order, exactly once. Presence envelopes are not
// returned: they update the channel's Presence view (and call
// Config.OnPresence).
//
// Envelopes wait in a buffer of Config.BufferSize. When it is full the
// client stops reading the connection, so a slow reader never loses a
// message: the server holds them, and if it gives up on the connection
// (lagged), the client reconnects and resumes. Only if a command waits for
// its reply behind a full buffer does the client stop taking envelopes
// from that connection and, once the reply is in, reconnect and resume
// after the last envelope buffered.
//
// After the client stopped, Next returns what is buffered, then the
// reason (see Run).
func (c *Client) Next(ctx context.Context) (*notify.Envelope, error) {
	for {
		var e *notify.Envelope
		select {
		case e = <-c.buf:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			select {
			case e = <-c.buf:
			default:
				return nil, c.Err()
			}
		}
		if c.accept(e) {
			return e, nil
		}
	}
}

// accept records e as delivered. It refuses messages of a channel
// unsubscribed since e was buffered.
func (c *Client) accept(e *notify.Envelope) bool {
	if e.Type == notify.TypeError {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.chans[e.Channel] == nil {
		return false
	}
	if e.Type == notify.TypeMessage {
		c.delivered.advance(e.Channel, e.ID)
	}
	return true
}

// Positions returns the cursor that resumes every channel right after the
// last envelope Next returned: pass it as Config.Since to a later Client
// (in this process or another) to miss nothing and repeat nothing.
func (c *Client) Positions() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.delivered.cursor()
}

// State returns the current state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Err returns why the client stopped, or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Channels returns the channels the client subscribes, the user's own
// included once the server reported it, sorted.
func (c *Client) Channels() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	chans := make([]string, 0, len(c.chans))
	for ch := range c.chans {
		chans = append(chans, ch)
	}
	slices.Sort(chans)
	return chans
}
