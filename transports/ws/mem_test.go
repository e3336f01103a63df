package ws_test

import (
	"context"
	"flag"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/connmem"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/ws"
)

var (
	memConns   = flag.Int("memconns", 10000, "connections for BenchmarkIdleMemory")
	memProfile = flag.String("memprofile-child", "", "write the server child's heap profile here")
)

func TestMain(m *testing.M) {
	connmem.ServeChild(func() http.Handler {
		b := notify.NewMemoryBroker(notify.MemoryConfig{})
		h := notify.NewHub(b, notify.HubConfig{MaxConnsPerUser: -1})
		return ws.NewHandler(wire.Config{Hub: h, Auth: userFromQuery})
	})
	os.Exit(m.Run())
}

// userFromQuery authenticates a request as the user its ?user= names, who
// may subscribe to room.*.
var userFromQuery = wire.AuthFunc(func(r *http.Request) (*notify.Grants, error) {
	return &notify.Grants{User: r.URL.Query().Get("user"), Subscribe: []string{"room."}}, nil
})

// BenchmarkIdleMemory opens -memconns idle WebSocket connections (each user
// subscribed to its personal channel) to a server in a child process and
// reports the server's memory per connection. Run it with -benchtime=1x.
func BenchmarkIdleMemory(b *testing.B) {
	child := connmem.StartChild(b)
	before := child.Stats(b)
	ctx := context.Background()
	clients := make([]*ws.Client, 0, *memConns)
	defer func() {
		for _, c := range clients {
			_ = c.CloseNow()
		}
	}()
	for i := 0; i < *memConns; i++ {
		c, err := ws.Dial(ctx, "ws://"+child.Addr+"/v1/ws?user=u"+itoa(i), ws.DialOptions{})
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		clients = append(clients, c)
	}
	// Each client reads its subscribed notice: the connection is fully set
	// up and idle.
	for _, c := range clients {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		e, err := c.Read(rctx)
		cancel()
		if err != nil || e.Type != notify.TypeSubscribed {
			b.Fatalf("read: %v %v", e, err)
		}
	}
	time.Sleep(time.Second)
	after := child.Stats(b)
	if *memProfile != "" {
		child.HeapProfile(b, *memProfile)
	}
	connmem.Per(before, after, len(clients)).ReportTo(b)
}

func itoa(i int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}
