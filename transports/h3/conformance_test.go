package h3_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/conformance"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
)

// transport is the duplex stream (POST); with get set, the one-way GET
// stream.
type transport struct{ get bool }

func (tr transport) Start(t testing.TB, cfg wire.Config) conformance.Dialer {
	return &dialer{t: t, srv: startServer(t, h3.NewHandler(cfg), cfg), get: tr.get}
}

// dialer connects each client through a UDP proxy of its own, which Freeze
// turns into a dead network path.
type dialer struct {
	t   testing.TB
	srv *testServer
	get bool
}

func (d *dialer) Duplex() bool       { return !d.get }
func (*dialer) OversizeCloses() bool { return false } // too_large, then the next line

func (d *dialer) Dial(ctx context.Context, o conformance.DialOptions) (conformance.Client, error) {
	p := newProxy(d.t, d.srv.addr)
	h := http.Header{}
	if o.Origin != "" {
		h.Set("Origin", o.Origin)
	}
	c, err := h3.Dial(ctx, "https://"+p.addr()+"/v1/stream", h3.DialOptions{
		Token: o.Token, Channels: o.Channels, Since: o.Since, Header: h,
		Duplex: !d.get, TLSConfig: d.srv.tlsConfig(),
	})
	if err != nil {
		return nil, err
	}
	return &client{Client: c, proxy: p}, nil
}

type client struct {
	*h3.Client
	proxy *udpProxy
}

func (c *client) Read(ctx context.Context) (*notify.Envelope, error) { return c.Client.Read(ctx) }
func (c *client) Send(ctx context.Context, line []byte) error        { return c.SendRaw(ctx, line) }
func (c *client) Cursor() string                                     { return "" }
func (c *client) Drop()                                              { _ = c.Close() }

// Freeze drops every datagram both ways: the server hears nothing more, not
// even the acknowledgements of its keep-alive PINGs, and must close the
// connection on its QUIC idle timeout.
func (c *client) Freeze() error { c.proxy.freeze(); return nil }

func TestConformance(t *testing.T) {
	conformance.Run(t, transport{})
}

// TestConformanceGET: the one-way GET stream proves the same semantics
// (its expiring notice and token_expired end among them).
func TestConformanceGET(t *testing.T) {
	conformance.Run(t, transport{get: true})
}

// BenchmarkBroadcast: one channel, 1,000 subscribers, with and without
// write coalescing. Run with -benchtime=2000x.
func BenchmarkBroadcast(b *testing.B) {
	b.Run("coalesce", func(b *testing.B) { conformance.BenchmarkBroadcast(b, transport{}, 1000, 0) })
	b.Run("one-per-write", func(b *testing.B) { conformance.BenchmarkBroadcast(b, transport{}, 1000, 1) })
}
