package ws

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// DialOptions configures Dial.
type DialOptions struct {
	Token    string   // sent as Authorization: Bearer
	Channels []string // subscribed at connect, besides the user's own
	Since    string   // cursor: positions to resume the channels from
	// HTTPClient for the handshake; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Header adds handshake headers (e.g. Origin).
	Header http.Header
	// Subprotocols offered; to send the token as a subprotocol (as
	// browsers may), offer "herald.v1" and wire.TokenProtocolPrefix+token.
	Subprotocols []string
	// ReadLimit bounds one server frame. Default 16 MiB.
	ReadLimit int64
	// OnPing, if set, is called for each server ping; returning false
	// withholds the pong (tests use it to play a dead peer).
	OnPing func() bool
}

// Client is a WebSocket connection to Herald. Read must be called from one
// goroutine; the command methods may be called concurrently with Read.
type Client struct {
	ws      *websocket.Conn
	buf     []byte   // the last frame, reused; owned by Read
	pending [][]byte // lines of buf not yet returned; owned by Read

	reading  atomic.Bool // a frame is being read (ctx's end closes the connection only then)
	mu       sync.Mutex
	readCtx  context.Context // the context Read watches; guarded by mu
	stopRead func() bool     // stops watching it; guarded by mu
}

// keepFrameBuffer is the largest frame buffer a Client keeps between reads.
const keepFrameBuffer = 64 << 10

// Dial connects to a Herald WebSocket endpoint (ws:// or wss:// URL of
// /v1/ws). A refused handshake returns the server's *notify.Error.
func Dial(ctx context.Context, rawURL string, opts DialOptions) (*Client, error) {
	u, err := wire.ConnectURL(rawURL, opts.Channels, opts.Since)
	if err != nil {
		return nil, fmt.Errorf("ws: %w", err)
	}
	header := opts.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if opts.Token != "" {
		header.Set("Authorization", "Bearer "+opts.Token)
	}
	dopts := &websocket.DialOptions{HTTPClient: opts.HTTPClient, HTTPHeader: header, Subprotocols: opts.Subprotocols}
	if opts.OnPing != nil {
		dopts.OnPingReceived = func(context.Context, []byte) bool { return opts.OnPing() }
	}
	ws, resp, err := websocket.Dial(ctx, u.String(), dopts)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, wire.ResponseError(resp)
		}
		return nil, fmt.Errorf("ws: dial: %w", err)
	}
	limit := opts.ReadLimit
	if limit <= 0 {
		limit = 16 << 20
	}
	ws.SetReadLimit(limit)
	return &Client{ws: ws}, nil
}

// Read returns the next envelope. When the server closes the connection it
// returns a *CloseError with the code and reason.
func (c *Client) Read(ctx context.Context) (*notify.Envelope, error) {
	for len(c.pending) == 0 {
		typ, data, err := c.readFrame(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return nil, &CloseError{Code: ce.Code, Reason: ce.Reason}
			}
			return nil, err
		}
		if typ != websocket.MessageText {
			return nil, errors.New("ws: server sent a binary frame")
		}
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			if len(line) > 0 {
				c.pending = append(c.pending, line)
			}
		}
	}
	line := c.pending[0]
	c.pending[0] = nil
	c.pending = c.pending[1:]
	e, err := notify.ParseEnvelope(line) // copies what it keeps: buf is reused
	if len(c.pending) == 0 && cap(c.buf) > keepFrameBuffer {
		c.buf = nil // do not hold a large frame's buffer while idle
	}
	return e, err
}

// readFrame reads the next message into c.buf (websocket.Conn.Read would
// allocate a new buffer for every frame).
//
// A reader given a cancellable context makes the library register and stop
// a context.AfterFunc for every frame (a sixth of a busy client's CPU).
// Instead, ctx is watched once, for as long as Read is given the same one:
// when it ends during a read, the connection is closed — what the library
// does too — and Read returns ctx's error. It ending between reads (a
// context per call, cancelled after it) closes nothing.
func (c *Client) readFrame(ctx context.Context) (websocket.MessageType, []byte, error) {
	c.watch(ctx)
	c.reading.Store(true)
	defer c.reading.Store(false)
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		return 0, nil, err
	}
	b := c.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, nil, ctx.Err()
			}
			return 0, nil, err
		}
	}
	c.buf = b
	return typ, b, nil
}

// watch closes the connection when ctx ends, registering once per context.
func (c *Client) watch(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readCtx == ctx {
		return
	}
	if c.stopRead != nil {
		c.stopRead()
	}
	c.readCtx, c.stopRead = ctx, nil
	if ctx.Done() != nil {
		c.stopRead = context.AfterFunc(ctx, func() {
			// It runs on a goroutine of its own, maybe late: act only
			// if ctx is still the one a read in progress was given.
			c.mu.Lock()
			current := c.readCtx == ctx && c.reading.Load()
			c.mu.Unlock()
			if current {
				_ = c.ws.CloseNow()
			}
		})
	}
}

// unwatch stops watching Read's context (the connection is closing).
func (c *Client) unwatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopRead != nil {
		c.stopRead()
	}
	c.readCtx, c.stopRead = nil, nil
}

// Send sends a command.
func (c *Client) Send(ctx context.Context, cmd wire.Command) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// WriteRaw sends a frame as it is (tests use it to send malformed input).
func (c *Client) WriteRaw(ctx context.Context, binary bool, b []byte) error {
	typ := websocket.MessageText
	if binary {
		typ = websocket.MessageBinary
	}
	return c.ws.Write(ctx, typ, b)
}

// Subscribe asks to subscribe to channel from since ("" for live).
func (c *Client) Subscribe(ctx context.Context, channel, since, ref string) error {
	return c.Send(ctx, wire.Command{Type: wire.CmdSubscribe, Channel: channel, Since: since, Ref: ref})
}

// Unsubscribe asks to unsubscribe from channel.
func (c *Client) Unsubscribe(ctx context.Context, channel, ref string) error {
	return c.Send(ctx, wire.Command{Type: wire.CmdUnsubscribe, Channel: channel, Ref: ref})
}

// Publish asks to publish; the server answers with an ack (or an error)
// echoing ref.
func (c *Client) Publish(ctx context.Context, channel, event string, data json.RawMessage, ref string) error {
	return c.Send(ctx, wire.Command{Type: wire.CmdPublish, Channel: channel, Event: event, Data: data, Ref: ref})
}

// Close closes the connection normally.
func (c *Client) Close() error {
	c.unwatch()
	return c.ws.Close(websocket.StatusNormalClosure, "")
}

// CloseNow drops the connection without a close handshake.
func (c *Client) CloseNow() error {
	c.unwatch()
	return c.ws.CloseNow()
}

// CloseError is how the server ended the connection.
type CloseError struct {
	Code   websocket.StatusCode
	Reason string
}

func (e *CloseError) Error() string { return fmt.Sprintf("ws: closed %d %s", int(e.Code), e.Reason) }

// Is lets errors.Is match the reasons Herald's close codes carry:
// notify.ErrLagged (4000), notify.ErrTokenExpired (4002),
// notify.ErrShutdown (1001), notify.ErrUnavailable (1013).
func (e *CloseError) Is(target error) bool {
	switch e.Code {
	case StatusLagged:
		return target == notify.ErrLagged
	case StatusTokenExpired:
		return target == notify.ErrTokenExpired
	case websocket.StatusGoingAway:
		return target == notify.ErrShutdown
	case websocket.StatusTryAgainLater:
		return target == notify.ErrUnavailable
	}
	return false
}
