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
	return &conn{ws: ws, nc: nc}
}

func batchOf(n int) []*notify.Envelope {
	var batch []*notify.Envelope
	for i := 0; i < n; i++ {
		batch = append(batch, notify.NewMessage("news", notify.ID{Ms: 1700000000000, Seq: uint64(i)}, "e", []byte(`{"title":"a notification of about a hundred bytes, as most are","n":1}`)))
	}
	return batch
}

// BenchmarkWriteBatch measures the writer's hot path: a batch of shared
// message encodings coalesced into one frame (the writer's framing,
// wire.WriteBatch) and written in one write. No allocation at all.
func BenchmarkWriteBatch(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			c := serverConn(b)
			batch := batchOf(n)
			var frame []byte
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var err error
				if frame, err = wire.WriteBatch(c, &writerOptions, 0, batch, frame); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
		})
	}
}

// TestWriteBatchAllocatesNothingPerMessage guards the hot path: writing a
// batch of shared message envelopes allocates nothing, whatever its size.
// The frames go to a connection that discards them: AllocsPerRun counts
// every goroutine's allocations, and a real peer's reader (or the
// scheduler waking it) would be counted as the server's (CI saw 1.0 per
// batch of 256 that way, never reproduced alone).
func TestWriteBatchAllocatesNothingPerMessage(t *testing.T) {
	c := &conn{nc: discardConn{}}
	one, many := batchOf(1), batchOf(256)
	frame, _ := wire.WriteBatch(c, &writerOptions, 0, many, nil) // grow the frame buffer once
	a1 := testing.AllocsPerRun(50, func() { frame, _ = wire.WriteBatch(c, &writerOptions, 0, one, frame) })
	a256 := testing.AllocsPerRun(50, func() { frame, _ = wire.WriteBatch(c, &writerOptions, 0, many, frame) })
	if a1 != 0 || a256 != 0 {
		t.Fatalf("a batch of 1 allocates %.1f times, a batch of 256 %.1f; want 0", a1, a256)
	}
}

// discardConn is a net.Conn whose writes succeed and go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// countingConn counts Write calls.
type countingConn struct {
	net.Conn
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes++
	return c.Conn.Write(p)
}

// Each data frame is one Write on the connection, whatever its size: what
// keeps the library's control frames, written concurrently, out of our
// frames (a net.Conn serializes whole Write calls).
func TestOneWritePerFrame(t *testing.T) {
	c := serverConn(t)
	cc := &countingConn{Conn: c.nc}
	c.nc = cc
	for _, n := range []int{1, 3, 50} {
		for _, size := range []int{10, 100, 200, 70000} {
			var batch []*notify.Envelope
			for i := 0; i < n; i++ {
				batch = append(batch, notify.NewMessage("news", notify.ID{Ms: 1, Seq: uint64(i)}, "e", []byte(`"`+strings.Repeat("x", size)+`"`)))
			}
			cc.writes = 0
			frames := 0
			out := &frameCounter{conn: c, frames: &frames}
			if _, err := wire.WriteBatch(out, &writerOptions, 0, batch, nil); err != nil {
				t.Fatal(err)
			}
			if cc.writes != frames {
				t.Fatalf("%d messages of %d bytes: %d frames took %d writes", n, size, frames, cc.writes)
			}
		}
	}
}

// frameCounter is the conn's Output, counting frames.
type frameCounter struct {
	*conn
	frames *int
}

func (f *frameCounter) WriteFrame(frame []byte) error {
	*f.frames++
	return f.conn.WriteFrame(frame)
}
