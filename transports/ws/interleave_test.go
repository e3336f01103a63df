package ws_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/ws"
)

// The writer puts data frames on the connection itself while the library
// answers pings with pongs on the same connection: a client that pings
// without pause while large, coalesced frames stream to it must get every
// pong and every message intact, in order.
func TestRawFramesInterleaveWithControlFrames(t *testing.T) {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	h := notify.NewHub(b, notify.HubConfig{QueueLength: 4096})
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	srv := httptest.NewServer(ws.NewHandler(wire.Config{Hub: h, Auth: wire.AuthFunc(func(*http.Request) (*notify.Grants, error) {
		return &notify.Grants{User: "u", Subscribe: []string{"news"}}, nil
	})}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/?channel=news", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)

	const total = 2000
	got := make(chan []int, 1)
	readErr := make(chan error, 1)
	go func() { // the reader: envelopes, and the pongs the library takes in
		var ns []int
		for {
			if len(ns) == total {
				got <- ns
				ns = nil // go on reading: pongs arrive through Read
			}
			_, data, err := c.Read(ctx)
			if err != nil {
				readErr <- err
				return
			}
			if len(data) > 1000 {
				// A slow client: the server's writes wait for room,
				// so the library's pongs queue up behind them.
				time.Sleep(200 * time.Microsecond)
			}
			for _, line := range bytes.Split(data, []byte("\n")) {
				var e struct {
					Type string
					Data struct{ N int }
				}
				if err := json.Unmarshal(line, &e); err != nil {
					readErr <- err
					return
				}
				if e.Type == notify.TypeMessage {
					ns = append(ns, e.Data.N)
				}
			}
		}
	}()
	waitSubscribed(t, h, "news")

	var pings sync.WaitGroup
	stop := make(chan struct{})
	pongs, pingErr := 0, error(nil)
	pings.Add(1)
	go func() { // pings back to back, each answered by a pong
		defer pings.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			pingErr = c.Ping(pctx)
			cancel()
			if pingErr != nil {
				return
			}
			pongs++
		}
	}()
	// Messages of several sizes: frames shorter and longer than every
	// buffer, coalesced in batches of varying length.
	for i := 0; i < total; i++ {
		pad := strings.Repeat("x", []int{10, 200, 3000, 60000}[i%4])
		if _, err := b.Publish(ctx, notify.Publication{Channel: "news", Data: []byte(`{"n":` + strconv.Itoa(i) + `,"pad":"` + pad + `"}`)}); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	var ns []int
	select {
	case ns = <-got:
	case err := <-readErr:
		t.Fatalf("client read failed: %v", err)
	}
	close(stop)
	pings.Wait()
	if pingErr != nil {
		t.Fatalf("ping %d failed: %v", pongs+1, pingErr)
	}
	for i, n := range ns {
		if n != i {
			t.Fatalf("message %d has n=%d; want in order", i, n)
		}
	}
	if pongs < 10 {
		t.Fatalf("only %d pongs while %d messages streamed; the test did not interleave", pongs, total)
	}
	t.Logf("%d messages and %d ping/pong round trips interleaved", len(ns), pongs)
}

// waitSubscribed waits until the hub has a subscriber on channel.
func waitSubscribed(t *testing.T, h *notify.Hub, channel string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, c := range h.Conns() {
			for _, ch := range c.Channels() {
				if ch == channel {
					return
				}
			}
		}
	}
	t.Fatalf("no subscriber on %s", channel)
}

// The writer leaves its write deadline set when it goes idle (sticky
// deadlines): long after it has passed, a client's ping must still get its
// pong (the library's control write sets a deadline of its own) and the
// next message must still arrive.
func TestControlFramesAfterTheStickyDeadlinePassed(t *testing.T) {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	h := notify.NewHub(b, notify.HubConfig{})
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	const timeout = 200 * time.Millisecond
	srv := httptest.NewServer(ws.NewHandler(wire.Config{Hub: h, WriteTimeout: timeout, Auth: wire.AuthFunc(func(*http.Request) (*notify.Grants, error) {
		return &notify.Grants{User: "u", Subscribe: []string{"news"}}, nil
	})}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/?channel=news", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	waitSubscribed(t, h, "news")
	frames := make(chan []byte, 16)
	go func() { // one reader for the test's life: it takes in the pongs too
		defer close(frames)
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			frames <- data
		}
	}()
	readMessage := func(i int) {
		t.Helper()
		if _, err := b.Publish(ctx, notify.Publication{Channel: "news", Data: []byte(`{"n":` + strconv.Itoa(i) + `}`)}); err != nil {
			t.Fatal(err)
		}
		for data := range frames {
			if bytes.Contains(data, []byte(`"n":`+strconv.Itoa(i))) {
				return
			}
		}
		t.Fatalf("message %d: the connection ended", i)
	}
	readMessage(1) // sets the sticky deadline
	time.Sleep(3 * timeout)
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	if err := c.Ping(pctx); err != nil {
		t.Fatalf("ping after the writer's deadline passed: %v", err)
	}
	readMessage(2) // the stale deadline is refreshed
	time.Sleep(3 * timeout)
	readMessage(3)
}
