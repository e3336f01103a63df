package ws

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// serverConn returns the server side of a real WebSocket connection whose
// client reads and discards everything.
func serverConn(tb testing.TB) *conn {
	accepted := make(chan *websocket.Conn, 1)
	var nc net.Conn
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(leanHijacker{ResponseWriter: w, conn: &nc}, r, nil)
		if err != nil {
			tb.Error(err)
			return
		}
		accepted <- c
	}))
	tb.Cleanup(srv.Close)
	client, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	client.SetReadLimit(-1)
	go func() {
		for { // without allocating, so the counts are the server's
			_, r, err := client.Reader(context.Background())
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
		}
	}()
	tb.Cleanup(func() { _ = client.CloseNow() })
	ws := <-accepted
	tb.Cleanup(func() { _ = ws.CloseNow() })
	return &conn{h: &Handler{cfg: wire.Config{WriteTimeout: 10 * time.Second}}, ws: ws, nc: nc}
}

func batchOf(n int) *writeBuf {
	buf := &writeBuf{}
	for i := 0; i < n; i++ {
		buf.batch = append(buf.batch, notify.NewMessage("news", notify.ID{Ms: 1700000000000, Seq: uint64(i)}, "e", []byte(`{"title":"a notification of about a hundred bytes, as most are","n":1}`)))
	}
	return buf
}

// BenchmarkWriteBatch measures the writer's hot path: a batch of shared
// message encodings coalesced into one frame and written. Allocations are per
// batch (the write's timeout context), none per message.
func BenchmarkWriteBatch(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			c := serverConn(b)
			buf := batchOf(n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if !c.writeBatch(buf) {
					b.Fatal("write failed")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
		})
	}
}

// TestWriteBatchAllocatesNothingPerMessage guards the hot path: a batch of
// 256 messages costs the same allocations as a batch of one.
func TestWriteBatchAllocatesNothingPerMessage(t *testing.T) {
	c := serverConn(t)
	one, many := batchOf(1), batchOf(256)
	c.writeBatch(one)
	c.writeBatch(many) // grow the frame buffer once
	a1 := testing.AllocsPerRun(50, func() { c.writeBatch(one) })
	a256 := testing.AllocsPerRun(50, func() { c.writeBatch(many) })
	if a256 > a1 {
		t.Fatalf("a batch of 256 allocates %.1f times, a batch of 1 %.1f: something allocates per message", a256, a1)
	}
	t.Logf("allocations per batch write: %.0f (batch of 1), %.0f (batch of 256)", a1, a256)
}
