package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/auth"
	"github.com/heraldhq/herald/transports/client"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/ws"
)

// Receive a channel's messages over WebSocket. Run reconnects (fresh token,
// backoff with jitter, resume from the positions) until Close.
func Example() {
	srv := startServer()
	defer srv.Close()

	c, err := client.New(client.Config{
		URL:       srv.URL, // http://host:port: the client derives ws://host:port/v1/ws
		Transport: client.WebSocket,
		Token:     srv.Token("42"), // called before every connection
		Channels:  []string{"news"},
		Since:     "news=0-0", // from the oldest message the server holds
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	go func() { _ = c.Run(ctx) }()
	defer c.Close()

	srv.Publish("news", "breaking", `{"headline":"hello"}`)
	e, err := c.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(e.Channel, e.Event, string(e.Data))
	// Output: news breaking {"headline":"hello"}
}

// Subscribe to a channel at run time and publish to it; Publish returns
// once the server acknowledged the message, with its ID.
func ExampleClient_Publish() {
	srv := startServer()
	defer srv.Close()

	c, err := client.New(client.Config{URL: srv.URL, Transport: client.WebSocket, Token: srv.Token("7")})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	go func() { _ = c.Run(ctx) }()
	defer c.Close()

	if err := c.Subscribe(ctx, "room.1", ""); err != nil {
		log.Fatal(err)
	}
	id, err := c.Publish(ctx, "room.1", "chat", []byte(`{"text":"hi"}`))
	if err != nil {
		log.Fatal(err)
	}
	e, err := c.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(e.Channel, e.Event, string(e.Data), e.ID == id)

	// A channel the token does not allow: the error, and the client goes on.
	err = c.Subscribe(ctx, "secret", "")
	fmt.Println(errors.Is(err, notify.ErrForbidden))
	// Output:
	// room.1 chat {"text":"hi"} true
	// true
}

// On SSE, Subscribe reconnects with the new channel set, resuming every
// channel; publishing is for the duplex transports.
func ExampleClient_Subscribe_sse() {
	srv := startServer()
	defer srv.Close()

	c, err := client.New(client.Config{URL: srv.URL, Transport: client.SSE, Token: srv.Token("7")})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	go func() { _ = c.Run(ctx) }()
	defer c.Close()

	if err := c.Subscribe(ctx, "room.2", ""); err != nil {
		log.Fatal(err)
	}
	srv.Publish("room.2", "chat", `{"text":"over SSE"}`)
	e, err := c.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(e.Channel, string(e.Data))
	_, err = c.Publish(ctx, "room.2", "chat", nil)
	fmt.Println(err == client.ErrOneWay)
	// Output:
	// room.2 {"text":"over SSE"}
	// true
}

// Positions is a cursor to store with what was processed: a later client,
// in this process or another, resumes exactly after it.
func ExampleClient_Positions() {
	srv := startServer()
	defer srv.Close()
	for i := 1; i <= 3; i++ {
		srv.Publish("news", "n", fmt.Sprint(i))
	}

	read := func(since string, n int) string {
		c, err := client.New(client.Config{URL: srv.URL, Token: srv.Token("42"), Channels: []string{"news"}, Since: since})
		if err != nil {
			log.Fatal(err)
		}
		ctx := context.Background()
		go func() { _ = c.Run(ctx) }()
		for range n {
			e, err := c.Next(ctx)
			if err != nil {
				log.Fatal(err)
			}
			fmt.Println(string(e.Data))
		}
		_ = c.Close()
		return c.Positions()
	}
	cursor := read("news=0-0", 2)
	read(cursor, 1)
	// Output:
	// 1
	// 2
	// 3
}

// A token that grants presence on a channel makes the client's
// subscriptions to it members, and keeps a view of who else is there:
// Presence returns it, OnPresence reports every change.
func ExampleClient_Presence() {
	srv := startServer()
	defer srv.Close()
	ctx := context.Background()

	changes := make(chan client.Presence, 16)
	ann, err := client.New(client.Config{
		URL: srv.URL, Token: srv.Token("ann"), Channels: []string{"room.9"},
		OnPresence: func(p client.Presence) { changes <- p }, // from the reader: return quickly
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = ann.Run(ctx) }()
	defer ann.Close()
	users := func(p client.Presence) (us []string) {
		for _, m := range p.Members {
			us = append(us, m.User)
		}
		return us
	}
	until := func(want string) client.Presence {
		for p := range changes {
			if got := fmt.Sprint(users(p)); got == want {
				return p
			}
		}
		return client.Presence{}
	}
	// Ann's own join: in her snapshot, or in the first change after it.
	fmt.Println(users(until("[ann]")))

	ben, err := client.New(client.Config{URL: srv.URL, Token: srv.Token("ben"), Channels: []string{"room.9"}})
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = ben.Run(ctx) }()
	p := until("[ann ben]")
	fmt.Println(users(p), p.Count, "joined:", p.Joins[0].User)
	_ = ben.Close()
	p = until("[ann]")
	fmt.Println(users(p), p.Count, "left:", p.Leaves[0].User)

	p, ok := ann.Presence("room.9")
	fmt.Println(ok, users(p), p.Count)
	// Output:
	// [ann]
	// [ann ben] 2 joined: ben
	// [ann] 1 left: ben
	// true [ann] 1
}

// OnState reports every state change: connecting, connected, reconnecting
// with its delay and cause, closed.
func ExampleConfig_onState() {
	srv := startServer()
	defer srv.Close()

	var mu sync.Mutex
	var phases []string
	c, err := client.New(client.Config{
		URL:   srv.URL,
		Token: srv.Token("42"),
		OnState: func(s client.State) {
			mu.Lock()
			phases = append(phases, s.Phase.String())
			mu.Unlock()
			if s.Phase == client.Reconnecting {
				log.Printf("reconnecting in %v: %v", s.Delay, s.Err)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { _ = c.Run(ctx) }()
	for c.State().Phase != client.Connected {
		time.Sleep(time.Millisecond)
	}
	_ = c.Close()
	mu.Lock()
	fmt.Println(strings.Join(phases, " → "))
	mu.Unlock()
	// Output: connecting → connected → closed
}

// HTTP/3 needs an https URL; the client dials the QUIC endpoint
// /v1/stream with the given TLS configuration.
func ExampleNew_http3() {
	c, err := client.New(client.Config{
		URL:       "https://herald.example:8443",
		Transport: client.HTTP3,
		TLSConfig: &tls.Config{}, // system roots; add RootCAs for a development certificate
		Token:     func(ctx context.Context) (string, error) { return "a token from your backend", nil },
		Channels:  []string{"news"},
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = c // go c.Run(ctx); c.Next(ctx)…
}

// exampleServer is a Herald server in this process, assembled as
// `herald serve` assembles it: the memory broker, a hub, the WebSocket
// and SSE handlers, and token verification.
type exampleServer struct {
	*httptest.Server
	broker *notify.MemoryBroker
	hub    *notify.Hub
	authn  *auth.Authenticator
}

func startServer() *exampleServer {
	authn, err := auth.New(auth.Config{Secret: []byte(strings.Repeat("x", 32)), SingleUse: auth.NewMemoryReplay()})
	if err != nil {
		log.Fatal(err)
	}
	broker := notify.NewMemoryBroker(notify.MemoryConfig{Presence: notify.PresenceConfig{Interval: 20 * time.Millisecond}})
	hub := notify.NewHub(broker, notify.HubConfig{Presence: broker})
	cfg := wire.Config{Hub: hub, Auth: wire.AuthFunc(func(r *http.Request) (*notify.Grants, error) {
		return authn.Verify(r.Context(), wire.Token(r))
	})}
	mux := http.NewServeMux()
	mux.Handle("/v1/ws", ws.NewHandler(cfg))
	mux.Handle("/v1/sse", sse.NewHandler(cfg))
	return &exampleServer{Server: httptest.NewServer(mux), broker: broker, hub: hub, authn: authn}
}

// Token plays the team's backend minting short-lived single-use tokens
// (or POST /v1/token).
func (s *exampleServer) Token(user string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		tok, _, err := s.authn.Mint(auth.TokenRequest{User: user, Channels: []string{"news", "room."}, Publish: []string{"room."}, Presence: []string{"room."}, TTL: time.Minute})
		return tok, err
	}
}

// Publish plays POST /v1/publish.
func (s *exampleServer) Publish(channel, event, data string) {
	if _, err := s.broker.Publish(context.Background(), notify.Publication{Channel: channel, Event: event, Data: []byte(data)}); err != nil {
		log.Fatal(err)
	}
}

func (s *exampleServer) Close() {
	_ = s.hub.Close()
	s.Server.Close()
	_ = s.broker.Close()
}
