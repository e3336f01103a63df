package h3_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net/http"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
)

// A server: the HTTP/3 side of the TLS listener, and Alt-Svc on its TCP
// side so that browsers find it.
func ExampleNewServer() {
	var (
		cfg  wire.Config // Hub, Auth, Heartbeat…
		cert tls.Certificate
	)
	mux := http.NewServeMux()
	mux.Handle("/v1/stream", h3.NewHandler(cfg))
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}}

	h3srv := h3.NewServer(mux, tlsCfg, cfg)
	h3srv.Addr = ":8443"
	go func() { log.Fatal(h3srv.ListenAndServe()) }()

	tcp := &http.Server{Addr: ":8443", TLSConfig: tlsCfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h3srv.SetQUICHeaders(w.Header())
		mux.ServeHTTP(w, r)
	})}
	log.Fatal(tcp.ListenAndServeTLS("", ""))
}

// A duplex client: it listens to its channels and sends commands on the
// same stream.
func ExampleDial() {
	ctx := context.Background()
	c, err := h3.Dial(ctx, "https://herald.example:8443/v1/stream", h3.DialOptions{
		Token:    "connect-token",
		Channels: []string{"news"},
		Duplex:   true,
	})
	if err != nil {
		log.Fatal(err) // a refusal is a *notify.Error: errors.Is(err, notify.ErrUnauthorized)…
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "room.1", "", "s1"); err != nil {
		log.Fatal(err)
	}
	for {
		e, err := c.Read(ctx)
		if errors.Is(err, io.EOF) || errors.Is(err, notify.ErrShutdown) {
			return // reconnect, resuming from the last IDs seen
		}
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("%s %s %s", e.Type, e.Channel, e.Data)
	}
}
