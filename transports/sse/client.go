package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
	r3 "github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"
)

// DefaultMaxEventSize bounds one event a Client reads: a message of
// notify.DefaultMaxPayload, escaped, with its envelope and cursor. (The
// r3labs client's own default, 64 KiB, fails the stream on a message at
// the payload limit.)
const DefaultMaxEventSize = 1 << 20

// DialOptions configures Dial.
type DialOptions struct {
	Token    string   // sent as Authorization: Bearer
	Channels []string // subscribed at connect, besides the user's own
	Since    string   // cursor to resume from, sent as Last-Event-ID
	// HTTPClient makes the request; nil means http.DefaultClient. Its
	// Timeout must be zero: it would cut the stream.
	HTTPClient *http.Client
	// Header adds request headers (e.g. Origin).
	Header http.Header
	// MaxEventSize bounds one event. Default DefaultMaxEventSize.
	MaxEventSize int
}

// Client is one event stream from Herald. It does not reconnect: when the
// stream ends, Read says so and the caller decides (resuming from Cursor).
// Read must be called from one goroutine; Cursor and Close from any.
type Client struct {
	events chan *r3.Event // from the r3labs client's goroutine to Read
	done   chan struct{}  // closed when the stream has ended
	err    error          // why it ended; written before done is closed
	cancel context.CancelFunc
	closed atomic.Bool

	mu     sync.Mutex
	cursor string // guarded by mu

	// Owned by Read:
	pending *r3.Event // taken from events but not yet returned
	reason  error     // why the server said it ends the stream
}

// Dial opens an event stream (http:// or https:// URL of /v1/sse) and
// returns once the server has accepted it. A refused request returns the
// server's *notify.Error.
func Dial(ctx context.Context, rawURL string, opts DialOptions) (*Client, error) {
	// The cursor goes in Last-Event-ID, not in the URL.
	u, err := wire.ConnectURL(rawURL, opts.Channels, "")
	if err != nil {
		return nil, fmt.Errorf("sse: %w", err)
	}
	maxEvent := opts.MaxEventSize
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEventSize
	}

	sc := r3.NewClient(u.String(), r3.ClientMaxBufferSize(maxEvent))
	if opts.HTTPClient != nil {
		sc.Connection = opts.HTTPClient
	} else {
		sc.Connection = http.DefaultClient
	}
	// Its own retries would hide the end of the stream from the caller,
	// and a clean end is not retried anyway: the caller reconnects.
	sc.ReconnectStrategy = &backoff.StopBackOff{}
	for k, vv := range opts.Header {
		sc.Headers[k] = strings.Join(vv, ", ")
	}
	if opts.Token != "" {
		sc.Headers["Authorization"] = "Bearer " + opts.Token
	}
	if opts.Since != "" {
		sc.LastEventID.Store([]byte(opts.Since))
	}
	// r3labs hands the response to the validator before it reads the
	// stream: a refusal's status and JSON body are read there, so the
	// whole exchange, refusal included, goes through r3labs.
	accepted := make(chan struct{})
	sc.ResponseValidator = func(_ *r3.Client, resp *http.Response) error {
		if err := checkResponse(resp); err != nil {
			_ = resp.Body.Close() // r3labs leaves it to the validator
			return err
		}
		close(accepted) // once: StopBackOff makes a single attempt
		return nil
	}

	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &Client{events: make(chan *r3.Event), done: make(chan struct{}), cancel: cancel, cursor: opts.Since}
	go c.run(streamCtx, sc)
	select {
	case <-accepted:
		return c, nil
	case <-c.done:
		select {
		case <-accepted: // accepted, then ended at once: Read reports it
			return c, nil
		default:
		}
		var refused *notify.Error
		if errors.As(c.err, &refused) {
			return nil, refused
		}
		return nil, fmt.Errorf("sse: dial: %w", c.err)
	case <-ctx.Done():
		_ = c.Close()
		return nil, ctx.Err()
	}
}

// checkResponse accepts an event stream, and turns a refusal into the
// server's error.
func checkResponse(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return wire.ResponseError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return fmt.Errorf("sse: response is %q, not an event stream", resp.Header.Get("Content-Type"))
	}
	return nil
}

// run reads the stream until it ends. SubscribeWithContext returns nil
// for a clean end and for a cancelled read alike.
func (c *Client) run(ctx context.Context, sc *r3.Client) {
	c.err = sc.SubscribeWithContext(ctx, "", func(ev *r3.Event) {
		select {
		case c.events <- ev:
		case <-ctx.Done():
		}
	})
	close(c.done)
}

// Read returns the next envelope. When the stream ends it returns io.EOF,
// or, if the server said why (its last envelope was an error notice or a
// drain's reconnect advice), an error that matches both io.EOF and that
// reason with errors.Is (notify.ErrLagged, notify.ErrShutdown…).
func (c *Client) Read(ctx context.Context) (*notify.Envelope, error) {
	for {
		ev, err := c.next(ctx)
		if err != nil {
			return nil, err
		}
		if len(ev.Data) == 0 {
			continue // the retry field, or what remains of a torn event
		}
		e, err := notify.ParseEnvelope(ev.Data)
		if err != nil {
			return nil, c.malformed(ctx, ev, err)
		}
		// r3labs gives an event without an id the last one seen: the
		// cursor is ev.ID either way.
		if len(ev.ID) > 0 {
			c.setCursor(ev.ID)
		}
		c.reason = endReason(e)
		return e, nil
	}
}

func (c *Client) next(ctx context.Context) (*r3.Event, error) {
	if ev := c.pending; ev != nil {
		c.pending = nil
		return ev, nil
	}
	select {
	case ev := <-c.events:
		return ev, nil
	case <-c.done:
		return nil, c.endError()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// malformed tells a torn last event from a malformed one. When a stream
// breaks, r3labs dispatches the part of an event it holds, which the SSE
// spec discards (an envelope cut short never parses: its closing brace
// comes last). If the stream ends right after, it was torn: the answer is
// the end of the stream, and the cursor stays before it.
func (c *Client) malformed(ctx context.Context, ev *r3.Event, err error) error {
	select {
	case next := <-c.events:
		c.pending = next
		return fmt.Errorf("sse: %w", err)
	case <-c.done:
		return c.endError()
	case <-ctx.Done():
		c.pending = ev // to be told apart by the next Read
		return ctx.Err()
	}
}

// endReason is the reason e gives for the end of the stream, if it is a
// connection's last word (errors about one channel name it).
func endReason(e *notify.Envelope) error {
	switch {
	case e.Type == notify.TypeError && e.Channel == "":
		return e.Err()
	case e.Type == notify.TypeReconnect:
		return &notify.Error{Code: e.Code, Message: fmt.Sprintf("server asks to reconnect in %d ms", e.Delay)}
	}
	return nil
}

func (c *Client) endError() error {
	switch {
	case c.closed.Load():
		return fmt.Errorf("sse: %w", net.ErrClosed)
	case c.err != nil:
		return fmt.Errorf("sse: stream: %w", c.err)
	case c.reason != nil:
		return fmt.Errorf("sse: stream ended: %w: %w", c.reason, io.EOF)
	}
	return io.EOF
}

func (c *Client) setCursor(id []byte) {
	c.mu.Lock()
	if c.cursor != string(id) {
		c.cursor = string(id)
	}
	c.mu.Unlock()
}

// Cursor returns the position to resume from: the id of the last event
// Read has returned, else DialOptions.Since.
func (c *Client) Cursor() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursor
}

// Close ends the stream and waits for its goroutine. Read then returns
// net.ErrClosed.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.cancel()
	<-c.done
	return nil
}
