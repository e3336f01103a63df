package wt_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/conformance"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/wt"
)

type transport struct{}

func (transport) Start(t testing.TB, cfg wire.Config) conformance.Dialer {
	return &dialer{srv: startServer(t, wtMux(wt.NewHandler(cfg)), cfg)}
}

// dialer connects each client on a UDP socket of its own, which Freeze
// turns into a dead network path.
type dialer struct{ srv *testServer }

func (*dialer) Duplex() bool         { return true }
func (*dialer) OversizeCloses() bool { return false } // too_large, then the next line

func (d *dialer) Dial(ctx context.Context, o conformance.DialOptions) (conformance.Client, error) {
	h := http.Header{}
	if o.Origin != "" {
		h.Set("Origin", o.Origin)
	}
	c := &client{}
	var err error
	c.Client, err = wt.Dial(ctx, d.srv.url(), wt.DialOptions{
		Token: o.Token, Channels: o.Channels, Since: o.Since, Header: h,
		TLSConfig: d.srv.tlsConfig(), Dial: dialFreezable(&c.sock),
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

type client struct {
	*wt.Client
	sock *freezable
}

func (c *client) Read(ctx context.Context) (*notify.Envelope, error) { return c.Client.Read(ctx) }
func (c *client) Send(ctx context.Context, line []byte) error        { return c.SendRaw(ctx, line) }
func (c *client) Cursor() string                                     { return "" }
func (c *client) Drop()                                              { _ = c.Close() }

// Freeze drops every datagram both ways: the server hears nothing more and
// must close the connection on its QUIC idle timeout.
func (c *client) Freeze() error { c.sock.frozen.Store(true); return nil }

func TestConformance(t *testing.T) {
	conformance.Run(t, transport{})
}
