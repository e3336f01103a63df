package h3

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// DialOptions configures Dial.
type DialOptions struct {
	Token    string   // sent as Authorization: Bearer
	Channels []string // subscribed at connect, besides the user's own
	Since    string   // cursor: positions to resume the channels from
	// Duplex makes the stream a POST whose body carries commands (Send,
	// Subscribe…); else it is a GET that only listens.
	Duplex bool
	// TLSConfig for the QUIC handshake; nil means the system roots.
	TLSConfig *tls.Config
	// QUICConfig for the connection; nil means quic-go's client defaults
	// (keep-alive every 10s, idle timeout 30s). It is copied.
	//
	// A killed server cannot close its connections, and QUIC does not act
	// on ICMP: the client learns of it only when the idle timeout passes
	// without a packet from the server, counted from the first packet the
	// client sent after the last it received (a keep-alive PING while the
	// client has nothing to send) — up to KeepAlivePeriod + MaxIdleTimeout
	// after the server died. The smaller of the client's and the server's
	// MaxIdleTimeout applies, and a non-zero KeepAlivePeriod is capped at
	// half of it.
	QUICConfig *quic.Config
	// Dial, if set, opens the QUIC connection (it becomes the
	// http3.Transport's Dial): to choose or wrap the UDP socket (count its
	// bytes, pick a source address), to route addr elsewhere, or to reuse
	// a quic.Transport. addr is the URL's host:port, unresolved; tlsCfg is
	// TLSConfig (cloned) with ServerName and the h3 ALPN set; cfg is the
	// QUICConfig to use (QUICConfig, or http3's default when nil) and must
	// be passed on, as tlsCfg must. Typically it calls
	// (*quic.Transport).DialEarly or quic.DialAddrEarly.
	//
	// nil means a UDP socket of the Client's own, closed by Close. With
	// Dial, Close closes every connection Dial returned (http3 may dial
	// again after a failed request and drop the first connection without
	// closing it): a socket or quic.Transport that Dial created is its to
	// close, e.g. once the connection's Context is done.
	Dial func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error)
	// Header adds request headers (e.g. Origin).
	Header http.Header
	// ReadLimit bounds one envelope line. Default 16 MiB.
	ReadLimit int
}

// Client is an HTTP/3 stream to Herald. Read must be called from one
// goroutine; the command methods may be called concurrently with Read and
// with each other.
//
// Each Client has its own QUIC connection (its own http3.Transport): one
// connection carries at most 100 streams, and a lost connection then costs
// one client, not many. DialOptions.Dial decides its socket.
type Client struct {
	tr     *http3.Transport
	dialed dialedConns        // the connections DialOptions.Dial returned
	cancel context.CancelFunc // ends the request stream
	body   io.ReadCloser      // the response: envelopes
	send   *io.PipeWriter     // the request body: commands; nil if one-way
	sendMu chan struct{}      // capacity 1: one command line at a time

	lines   wire.LineReader // owned by Read
	lastErr error           // the last envelope's error, if it was one without ref; owned by Read

	closeOnce sync.Once
	closeErr  error
}

// Dial opens a stream on a Herald HTTP/3 endpoint (https:// URL of
// /v1/stream). ctx bounds the dial only. A refused request returns the
// server's *notify.Error.
func Dial(ctx context.Context, rawURL string, opts DialOptions) (*Client, error) {
	u, err := wire.ConnectURL(rawURL, opts.Channels, opts.Since)
	if err != nil {
		return nil, fmt.Errorf("h3: %w", err)
	}

	c := &Client{tr: &http3.Transport{TLSClientConfig: opts.TLSConfig}, sendMu: make(chan struct{}, 1)}
	if opts.Dial != nil {
		c.tr.Dial = c.dialed.wrap(opts.Dial)
	}
	if opts.QUICConfig != nil {
		c.tr.QUICConfig = opts.QUICConfig.Clone() // the transport writes to it
	}
	// The request's context is the stream's life, not the dial's.
	reqCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	method, body := http.MethodGet, io.Reader(nil)
	if opts.Duplex {
		var pr *io.PipeReader
		pr, c.send = io.Pipe()
		method, body = http.MethodPost, pr
	}
	req, err := http.NewRequestWithContext(reqCtx, method, u.String(), body)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("h3: %w", err)
	}
	for k, v := range opts.Header {
		req.Header[k] = append([]string(nil), v...)
	}
	req.Header.Set("Accept", ContentType)
	if opts.Duplex {
		req.Header.Set("Content-Type", ContentType)
	}
	if opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+opts.Token)
	}

	stop := context.AfterFunc(ctx, cancel)
	resp, err := c.tr.RoundTrip(req)
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close()
		}
		_ = c.Close()
		return nil, fmt.Errorf("h3: dial: %w", err)
	}
	c.body = resp.Body
	if resp.StatusCode != http.StatusOK {
		err := wire.ResponseError(resp)
		_ = c.Close()
		return nil, err
	}
	limit := opts.ReadLimit
	if limit <= 0 {
		limit = 16 << 20
	}
	c.lines = wire.NewLineReader(resp.Body, limit)
	return c, nil
}

// Read returns the next envelope. At the end of the stream it returns
// io.EOF, or, if the server's last envelope was an error notice without
// ref (the reason it ended the stream: lagged, shutdown…), that error,
// which errors.Is matches against notify.ErrLagged and the like. A stream
// the server reset (it dropped a client that did not read) returns an
// *http3.Error.
//
// If ctx ends while Read waits, the stream is cancelled, as a WebSocket
// is closed: the client is then unusable.
func (c *Client) Read(ctx context.Context) (*notify.Envelope, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, c.cancel)
	defer stop()
	for {
		line, err := c.lines.Next()
		if err != nil {
			return nil, c.readError(ctx, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue // a heartbeat on HTTP/1.1 and HTTP/2
		}
		e, err := notify.ParseEnvelope(line)
		if err != nil {
			return nil, err
		}
		c.lastErr = nil
		if e.Type == notify.TypeError && e.Ref == "" && e.Channel == "" {
			c.lastErr = e.Err()
		}
		return e, nil
	}
}

func (c *Client) readError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == io.EOF && c.lastErr != nil:
		return c.lastErr
	case err == io.EOF:
		return io.EOF
	case errors.Is(err, wire.ErrLineTooLong):
		c.cancel()
		return fmt.Errorf("h3: an envelope is longer than %d bytes", c.lines.Max())
	}
	return fmt.Errorf("h3: read: %w", err)
}

// Send sends a command.
func (c *Client) Send(ctx context.Context, cmd wire.Command) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	return c.writeLine(ctx, append(b, '\n'))
}

// SendRaw sends line, followed by a newline, as it is (tests use it to
// send malformed input).
func (c *Client) SendRaw(ctx context.Context, line []byte) error {
	b := make([]byte, 0, len(line)+1)
	return c.writeLine(ctx, append(append(b, line...), '\n'))
}

// writeLine hands one line to QUIC. If ctx ends first, the command side of
// the stream is closed — the line may be half sent, and the next one would
// be garbled — while the stream goes on delivering.
func (c *Client) writeLine(ctx context.Context, line []byte) error {
	if c.send == nil {
		return ErrOneWay
	}
	select {
	case c.sendMu <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sendMu }()
	stop := context.AfterFunc(ctx, func() { _ = c.send.CloseWithError(ctx.Err()) })
	_, err := c.send.Write(line)
	if !stop() {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("h3: send: %w", err)
	}
	return nil
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

// Ping asks for a pong echoing ref.
func (c *Client) Ping(ctx context.Context, ref string) error {
	return c.Send(ctx, wire.Command{Type: wire.CmdPing, Ref: ref})
}

// CloseSend ends the command side: the server reads the end of the body
// and goes on streaming. One-way clients have nothing to close.
func (c *Client) CloseSend() error {
	if c.send == nil {
		return nil
	}
	return c.send.Close()
}

// Close cancels the stream and closes the QUIC connection. The server
// sees the client leave at once. It is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		if c.send != nil {
			_ = c.send.CloseWithError(net.ErrClosed)
		}
		if c.body != nil {
			_ = c.body.Close()
		}
		c.closeErr = c.tr.Close()
		c.dialed.closeAll()
	})
	return c.closeErr
}

// dialedConns records the connections a Dial hook returned, so that Close
// closes them all: http3.Transport forgets a connection after a failed
// request without closing it, and with a hook's socket nothing else would
// (its keep-alives would hold it open until the server closes it).
type dialedConns struct {
	mu     sync.Mutex
	conns  []*quic.Conn
	closed bool
}

func (d *dialedConns) wrap(dial func(context.Context, string, *tls.Config, *quic.Config) (*quic.Conn, error)) func(context.Context, string, *tls.Config, *quic.Config) (*quic.Conn, error) {
	return func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
		conn, err := dial(ctx, addr, tlsCfg, cfg)
		if err != nil || conn == nil {
			return conn, err
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.closed {
			_ = conn.CloseWithError(0, "")
			return nil, net.ErrClosed
		}
		d.conns = append(d.conns, conn)
		return conn, nil
	}
}

func (d *dialedConns) closeAll() {
	d.mu.Lock()
	conns := d.conns
	d.conns, d.closed = nil, true
	d.mu.Unlock()
	for _, conn := range conns {
		_ = conn.CloseWithError(0, "")
	}
}
