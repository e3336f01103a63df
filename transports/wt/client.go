package wt

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
)

// DialOptions configures Dial.
type DialOptions struct {
	Token    string   // sent as Authorization: Bearer
	Channels []string // subscribed at connect, besides the user's own
	Since    string   // cursor: positions to resume the channels from
	// TLSConfig for the QUIC handshake; nil means the system roots.
	TLSConfig *tls.Config
	// QUICConfig for the connection; nil means quic-go's client defaults
	// (keep-alive every 10s, idle timeout 30s; client.DefaultQUICConfig
	// notices a dead server within 2 s). It is copied, with datagrams and
	// partial-delivery resets turned on (WebTransport needs both).
	QUICConfig *quic.Config
	// Dial, if set, opens the QUIC connection, as h3.DialOptions.Dial
	// does: addr is the URL's host:port, tlsCfg and cfg must be passed
	// on. nil means quic.DialAddrEarly (a UDP socket of the connection's
	// own). Close closes the connection it returned.
	Dial func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error)
	// Header adds request headers (e.g. Origin) to the CONNECT.
	Header http.Header
	// ReadLimit bounds one envelope line. Default 16 MiB.
	ReadLimit int
	// First is written on the stream with its opening, before Dial
	// returns: commands that travel with the session's first packets.
	// Each must be one line ending in "\n". Default: an empty line, so
	// that the server sees the stream at once.
	First []byte
}

// Client is a WebTransport session to Herald with its one stream. Read
// must be called from one goroutine; the command methods may be called
// concurrently with Read and with each other.
//
// Each Client has its own QUIC connection, closed by Close.
type Client struct {
	conn   *quic.Conn
	sess   *webtransport.Session
	str    *webtransport.Stream
	sendMu chan struct{} // capacity 1: one command line at a time

	lines   wire.LineReader // owned by Read
	lastErr error           // the last envelope's error, if it was one without ref; owned by Read

	closeOnce sync.Once
}

// Dial opens a session on a Herald WebTransport endpoint (https:// URL of
// /v1/wt) and its stream. ctx bounds the dial only. A refused request
// returns the server's *notify.Error.
func Dial(ctx context.Context, rawURL string, opts DialOptions) (*Client, error) {
	u, err := wire.ConnectURL(rawURL, opts.Channels, opts.Since)
	if err != nil {
		return nil, fmt.Errorf("wt: %w", err)
	}
	conn, err := dialQUIC(ctx, u, &opts)
	if err != nil {
		return nil, fmt.Errorf("wt: dial: %w", err)
	}
	c, err := open(ctx, conn, u, &opts)
	if err != nil {
		_ = conn.CloseWithError(0, "")
		return nil, err
	}
	return c, nil
}

// dialQUIC opens the QUIC connection of a session.
func dialQUIC(ctx context.Context, u *url.URL, opts *DialOptions) (*quic.Conn, error) {
	tlsCfg := &tls.Config{}
	if opts.TLSConfig != nil {
		tlsCfg = opts.TLSConfig.Clone()
	}
	tlsCfg.NextProtos = []string{http3.NextProtoH3}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = u.Hostname()
	}
	qcfg := &quic.Config{}
	if opts.QUICConfig != nil {
		qcfg = opts.QUICConfig.Clone()
	}
	qcfg.EnableDatagrams, qcfg.EnableStreamResetPartialDelivery = true, true
	dial := opts.Dial
	if dial == nil {
		dial = quic.DialAddrEarly
	}
	addr := u.Host
	if u.Port() == "" {
		addr += ":443"
	}
	return dial(ctx, addr, tlsCfg, qcfg)
}

// open sets up the session on conn and opens its stream.
func open(ctx context.Context, conn *quic.Conn, u *url.URL, opts *DialOptions) (*Client, error) {
	cc, err := (&webtransport.Transport{}).NewClientConn(conn)
	if err != nil {
		return nil, fmt.Errorf("wt: %w", err)
	}
	hdr := http.Header{}
	for k, v := range opts.Header {
		hdr[k] = append([]string(nil), v...)
	}
	if opts.Token != "" {
		hdr.Set("Authorization", "Bearer "+opts.Token)
	}
	rsp, sess, err := cc.Dial(ctx, u.String(), hdr)
	if err != nil {
		if rsp != nil && rsp.StatusCode != http.StatusOK {
			return nil, wire.ResponseError(rsp)
		}
		return nil, fmt.Errorf("wt: dial: %w", err)
	}
	str, err := sess.OpenStream()
	if err == nil {
		first := opts.First
		if len(first) == 0 {
			first = []byte("\n")
		}
		_, err = str.Write(first)
	}
	if err != nil {
		_ = sess.CloseWithError(0, "")
		return nil, fmt.Errorf("wt: open stream: %w", err)
	}
	limit := opts.ReadLimit
	if limit <= 0 {
		limit = 16 << 20
	}
	return &Client{conn: conn, sess: sess, str: str, sendMu: make(chan struct{}, 1), lines: wire.NewLineReader(str, limit)}, nil
}

// Read returns the next envelope. When the server ends the session it
// returns the reason: the last envelope's error notice if there was one
// without ref, else the error of the session's close code (errors.Is
// matches notify.ErrLagged, notify.ErrShutdown, notify.ErrTokenExpired),
// or io.EOF for a normal end.
//
// If ctx ends while Read waits, the session is closed, as a WebSocket is:
// the client is then unusable.
func (c *Client) Read(ctx context.Context) (*notify.Envelope, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.str.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		line, err := c.lines.Next()
		if err != nil {
			return nil, c.readError(ctx, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
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
	var se *webtransport.SessionError
	switch {
	case ctx.Err() != nil:
		_ = c.Close()
		return ctx.Err()
	case c.lastErr != nil && (err == io.EOF || errors.As(err, &se)):
		return c.lastErr
	case err == io.EOF:
		return io.EOF
	case errors.As(err, &se):
		if cerr := closeError(se.ErrorCode, se.Message); cerr != nil {
			return cerr
		}
		return io.EOF
	case errors.Is(err, wire.ErrLineTooLong):
		_ = c.Close()
		return fmt.Errorf("wt: an envelope is longer than %d bytes", c.lines.Max())
	}
	return fmt.Errorf("wt: read: %w", err)
}

// Send sends a command.
func (c *Client) Send(ctx context.Context, cmd wire.Command) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	return c.write(ctx, append(b, '\n'))
}

// SendRaw sends line, followed by a newline, as it is (tests use it to
// send malformed input).
func (c *Client) SendRaw(ctx context.Context, line []byte) error {
	b := make([]byte, 0, len(line)+1)
	return c.write(ctx, append(append(b, line...), '\n'))
}

// WriteRaw writes b to the stream as it is: part of a line, or several
// (tests split commands at odd places with it).
func (c *Client) WriteRaw(ctx context.Context, b []byte) error { return c.write(ctx, b) }

// write hands bytes to QUIC within ctx. If ctx ends first the write is
// abandoned and the stream's command side is unusable (a line may be half
// sent); the session goes on delivering.
func (c *Client) write(ctx context.Context, b []byte) error {
	select {
	case c.sendMu <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sendMu }()
	if d, ok := ctx.Deadline(); ok {
		_ = c.str.SetWriteDeadline(d)
		defer func() { _ = c.str.SetWriteDeadline(time.Time{}) }()
	}
	stop := context.AfterFunc(ctx, func() { _ = c.str.SetWriteDeadline(time.Now()) })
	_, err := c.str.Write(b)
	if !stop() {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("wt: send: %w", err)
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

// CloseSend ends the command side of the stream: the server goes on
// streaming.
func (c *Client) CloseSend() error { return c.str.Close() }

// Close closes the session and its QUIC connection. The server sees the
// client leave at once. It is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		_ = c.sess.CloseWithError(CodeNormal, "")
		_ = c.conn.CloseWithError(0, "")
	})
	return nil
}
