package client

import (
	"context"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/ws"
	"github.com/heraldhq/herald/transports/wt"
)

// conn is one connection of any transport: what the reconnect loop needs
// of the single-connection dialers.
type conn interface {
	// Read returns the next envelope, or why the connection ended. One
	// goroutine reads.
	Read(ctx context.Context) (*notify.Envelope, error)
	// Send sends a command; safe concurrently with Read and itself.
	Send(ctx context.Context, cmd wire.Command) error
	// Close ends the connection at once and makes Read return.
	Close() error
}

// dialRequest is what one connection attempt asks for.
type dialRequest struct {
	Token    string
	Channels []string // besides the user's own
	Since    string   // cursor
}

// dialFunc opens one connection. Tests replace it with a fake.
type dialFunc func(ctx context.Context, req dialRequest) (conn, error)

// dialer returns the dialFunc of cfg's transport, for endpoint.
func dialer(cfg *Config, endpoint string) dialFunc {
	switch cfg.Transport {
	case SSE:
		return func(ctx context.Context, req dialRequest) (conn, error) {
			c, err := sse.Dial(ctx, endpoint, sse.DialOptions{
				Token: req.Token, Channels: req.Channels, Since: req.Since,
				HTTPClient: cfg.HTTPClient, Header: cfg.Header, MaxEventSize: cfg.ReadLimit,
			})
			if err != nil {
				return nil, err
			}
			return sseConn{c}, nil
		}
	case HTTP3:
		return func(ctx context.Context, req dialRequest) (conn, error) {
			c, err := h3.Dial(ctx, endpoint, h3.DialOptions{
				Token: req.Token, Channels: req.Channels, Since: req.Since,
				Duplex: true, TLSConfig: cfg.TLSConfig, Header: cfg.Header, ReadLimit: cfg.ReadLimit,
				QUICConfig: cfg.QUICConfig, Dial: cfg.DialQUIC,
			})
			if err != nil {
				return nil, err
			}
			return c, nil
		}
	case WebTransport:
		return func(ctx context.Context, req dialRequest) (conn, error) {
			c, err := wt.Dial(ctx, endpoint, wt.DialOptions{
				Token: req.Token, Channels: req.Channels, Since: req.Since,
				TLSConfig: cfg.TLSConfig, Header: cfg.Header, ReadLimit: cfg.ReadLimit,
				QUICConfig: cfg.QUICConfig, Dial: cfg.DialQUIC,
			})
			if err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	return func(ctx context.Context, req dialRequest) (conn, error) {
		c, err := ws.Dial(ctx, endpoint, ws.DialOptions{
			Token: req.Token, Channels: req.Channels, Since: req.Since,
			HTTPClient: cfg.HTTPClient, Header: cfg.Header, ReadLimit: int64(cfg.ReadLimit),
		})
		if err != nil {
			return nil, err
		}
		return wsConn{c}, nil
	}
}

// wsConn closes without the close handshake: the loop closes a connection
// it gave up on, whose peer may not answer, and Close must not wait for it.
type wsConn struct{ *ws.Client }

func (c wsConn) Close() error { return c.CloseNow() }

// sseConn is an event stream. sse.Dial wraps r3labs/sse/v2's client with
// its own retries off (a single attempt, ended streams reported to Read):
// its traps — a clean end that is never retried, a backoff that gives up
// after 15 minutes, a 64 KiB event limit — cannot stop delivery, because
// this package's loop does all the reconnecting.
type sseConn struct{ *sse.Client }

func (sseConn) Send(context.Context, wire.Command) error { return ErrOneWay }
