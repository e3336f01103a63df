package sse_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// A server streams events over HTTP/1.1, HTTP/2 and HTTP/3 with the
// settings that let each protocol notice a peer that vanished.
func ExampleNewHandler() {
	broker := notify.NewMemoryBroker(notify.MemoryConfig{})
	cfg := wire.Config{
		Hub:  notify.NewHub(broker, notify.HubConfig{}),
		Auth: wire.AuthFunc(func(*http.Request) (*notify.Grants, error) { return &notify.Grants{User: "42"}, nil }),
	}.WithDefaults()
	mux := http.NewServeMux()
	h := sse.NewHandler(cfg)
	mux.Handle("GET /v1/sse", h)
	mux.Handle("OPTIONS /v1/sse", h) // CORS preflight

	tcp := &http.Server{
		Handler:     mux,
		ConnContext: sse.ConnContext(cfg), // HTTP/1.1: TCP keep-alive and user timeout
		HTTP2:       &http.HTTP2Config{SendPingTimeout: cfg.Heartbeat, PingTimeout: cfg.WriteTimeout},
	}
	udp := &http3.Server{
		Handler: mux,
		QUICConfig: &quic.Config{
			KeepAlivePeriod: cfg.Heartbeat,
			MaxIdleTimeout:  2*cfg.Heartbeat + cfg.WriteTimeout,
			Allow0RTT:       false,
		},
	}
	_, _ = tcp, udp // ListenAndServeTLS…
}

// A client reads envelopes until the stream ends, then resumes from its
// cursor.
func ExampleDial() {
	ctx := context.Background()
	since := ""
	for {
		c, err := sse.Dial(ctx, "https://herald.example/v1/sse", sse.DialOptions{
			Token: "…", Channels: []string{"news"}, Since: since,
		})
		if err != nil {
			fmt.Println(err) // a *notify.Error if the server refused
			return
		}
		for {
			e, err := c.Read(ctx)
			if err != nil {
				// io.EOF, the server's reason (errors.Is(err,
				// notify.ErrLagged)…) or a broken stream: resume.
				break
			}
			fmt.Println(e.Type, e.Channel, e.ID)
		}
		since = c.Cursor()
		_ = c.Close()
		time.Sleep(2 * time.Second) // a real client backs off with jitter
	}
}
