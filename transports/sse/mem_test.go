package sse_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/connmem"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/wire"
)

var (
	memConns   = flag.Int("memconns", 10000, "connections for BenchmarkIdleMemory")
	memProfile = flag.String("memprofile-child", "", "write the server child's heap profile here")
)

func TestMain(m *testing.M) {
	connmem.ServeChild(func() http.Handler {
		b := notify.NewMemoryBroker(notify.MemoryConfig{})
		h := notify.NewHub(b, notify.HubConfig{MaxConnsPerUser: -1})
		auth := wire.AuthFunc(func(r *http.Request) (*notify.Grants, error) {
			return &notify.Grants{User: r.URL.Query().Get("user")}, nil
		})
		return sse.NewHandler(wire.Config{Hub: h, Auth: auth})
	})
	os.Exit(m.Run())
}

// BenchmarkIdleMemory opens -memconns idle SSE connections (HTTP/1.1, each
// user subscribed to its personal channel) to a server in a child process
// and reports the server's memory per connection. Run it with
// -benchtime=1x.
func BenchmarkIdleMemory(b *testing.B) {
	child := connmem.StartChild(b)
	before := child.Stats(b)
	ctx := context.Background()
	// One transport for all clients: each stream needs its own TCP
	// connection on HTTP/1.1 anyway.
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 1, DisableCompression: true}}
	clients := make([]*sse.Client, 0, *memConns)
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	for i := 0; i < *memConns; i++ {
		c, err := sse.Dial(ctx, fmt.Sprintf("http://%s/v1/sse?user=u%d", child.Addr, i), sse.DialOptions{HTTPClient: hc})
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		clients = append(clients, c)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		e, err := c.Read(rctx)
		cancel()
		if err != nil || e.Type != notify.TypeSubscribed {
			b.Fatalf("read %d: %v %v", i, e, err)
		}
	}
	time.Sleep(time.Second)
	after := child.Stats(b)
	if *memProfile != "" {
		child.HeapProfile(b, *memProfile)
	}
	connmem.Per(before, after, len(clients)).ReportTo(b)
}
