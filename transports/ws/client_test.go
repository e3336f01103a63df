package ws

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestReadContextSemantics: a context that ends after Read returned (one
// per call, cancelled after it) leaves the connection open; one that ends
// during a Read ends it with the context's error.
func TestReadContextSemantics(t *testing.T) {
	send := make(chan string)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"herald.v1"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for line := range send {
			if err := c.Write(r.Context(), websocket.MessageText, []byte(line)); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	defer close(send)
	c, err := Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()

	for i := range 500 {
		send <- `{"type":"pong","ref":"r"}`
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e, err := c.Read(ctx)
		cancel() // after the call: must not close the connection
		if err != nil {
			t.Fatalf("read %d: %v (a context cancelled after an earlier Read closed the connection?)", i, err)
		}
		if e.Type != "pong" {
			t.Fatalf("read %d: %s", i, e.JSON())
		}
		// No pause: the cancelled context's callback runs on its own
		// goroutine, often during the next Read.
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if _, err := c.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read with a context cancelled during it: %v; want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Read took %v to notice its context ended", d)
	}
}
