package ws_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/conformance"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/ws"
)

type transport struct{}

func (transport) Start(t testing.TB, cfg wire.Config) conformance.Dialer {
	srv := httptest.NewServer(ws.NewHandler(cfg))
	t.Cleanup(srv.Close)
	return dialer{url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"}
}

type dialer struct{ url string }

func (dialer) Duplex() bool         { return true }
func (dialer) OversizeCloses() bool { return true } // close 1009

func (d dialer) Dial(ctx context.Context, o conformance.DialOptions) (conformance.Client, error) {
	c := &client{}
	h := http.Header{}
	if o.Origin != "" {
		h.Set("Origin", o.Origin)
	}
	var err error
	c.Client, err = ws.Dial(ctx, d.url, ws.DialOptions{
		Token: o.Token, Channels: o.Channels, Since: o.Since, Header: h,
		OnPing: func() bool { return !c.frozen.Load() },
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

type client struct {
	*ws.Client
	frozen atomic.Bool
}

func (c *client) Read(ctx context.Context) (*notify.Envelope, error) { return c.Client.Read(ctx) }
func (c *client) Send(ctx context.Context, line []byte) error {
	return c.WriteRaw(ctx, false, line)
}
func (c *client) Cursor() string { return "" }
func (c *client) Drop()          { _ = c.CloseNow() }
func (c *client) Freeze() error  { c.frozen.Store(true); return nil }

func TestConformance(t *testing.T) {
	conformance.Run(t, transport{})
}

// BenchmarkBroadcast: one channel, 1,000 subscribers, with and without
// write coalescing. Run with -benchtime=2000x.
func BenchmarkBroadcast(b *testing.B) {
	b.Run("coalesce", func(b *testing.B) { conformance.BenchmarkBroadcast(b, transport{}, 1000, 0) })
	b.Run("one-per-write", func(b *testing.B) { conformance.BenchmarkBroadcast(b, transport{}, 1000, 1) })
}
