package h3

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// discardWriter is a ResponseWriter that counts what it is given, with the
// abilities the writer uses through http.ResponseController.
type discardWriter struct {
	header http.Header
	n      int64
}

func (w *discardWriter) Header() http.Header                { return w.header }
func (w *discardWriter) WriteHeader(int)                    {}
func (w *discardWriter) Write(b []byte) (int, error)        { w.n += int64(len(b)); return len(b), nil }
func (w *discardWriter) FlushError() error                  { return nil }
func (w *discardWriter) SetWriteDeadline(t time.Time) error { return nil }

func newBenchStream() (*stream, *discardWriter) {
	w := &discardWriter{header: http.Header{}}
	return &stream{h: NewHandler(wire.Config{}), Response: wire.NewResponse(w), r: &http.Request{ProtoMajor: 3}}, w
}

// messages returns n message envelopes as the hub shares them: encoded
// once by NewMessage.
func messages(n int) []*notify.Envelope {
	batch := make([]*notify.Envelope, n)
	for i := range batch {
		id := notify.ID{Ms: 1700000000000 + uint64(i)}
		batch[i] = notify.NewMessage("news", id, "order.shipped", []byte(`{"order":"A-`+strconv.Itoa(i)+`","items":3,"total":42.5}`))
	}
	return batch
}

// BenchmarkWriteBatch measures the writer's encoding of a batch into one
// NDJSON write: every message's shared bytes copied into the stream's
// buffer, a newline each, one write and one flush.
func BenchmarkWriteBatch(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			s, w := newBenchStream()
			batch := messages(n)
			var frame []byte
			size := 0
			for _, e := range batch {
				size += len(e.JSON()) + 1
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if frame, err = wire.WriteBatch(s, s.writerOptions(), 0, batch, frame); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
			if w.n != int64(b.N*size) {
				b.Fatalf("wrote %d bytes; want %d", w.n, b.N*size)
			}
		})
	}
}

// TestWriteBatchAllocs guards the hot path: writing a batch of shared
// message envelopes allocates nothing once the buffer has grown.
func TestWriteBatchAllocs(t *testing.T) {
	s, _ := newBenchStream()
	batch := messages(64)
	var frame []byte
	allocs := testing.AllocsPerRun(100, func() {
		frame, _ = wire.WriteBatch(s, s.writerOptions(), 0, batch, frame)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch; want 0", allocs)
	}
}

// TestWriteBatchSplits: a batch over maxWrite goes out in several writes of
// whole lines.
func TestWriteBatchSplits(t *testing.T) {
	w := &lineCounter{header: http.Header{}}
	s := &stream{h: NewHandler(wire.Config{}), Response: wire.NewResponse(w), r: &http.Request{ProtoMajor: 3}}
	batch := messages(4000)
	frame, err := wire.WriteBatch(s, s.writerOptions(), 0, batch, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.writes < 2 || w.lines != len(batch) {
		t.Fatalf("%d writes, %d lines; want several writes of %d whole lines", w.writes, w.lines, len(batch))
	}
	if cap(frame) > 2*maxWrite {
		t.Fatalf("grew a %d-byte buffer for writes of at most %d", cap(frame), maxWrite)
	}
}

type lineCounter struct {
	header        http.Header
	writes, lines int
}

func (w *lineCounter) Header() http.Header { return w.header }
func (w *lineCounter) WriteHeader(int)     {}
func (w *lineCounter) Write(b []byte) (int, error) {
	if len(b) > maxWrite || b[len(b)-1] != '\n' {
		panic("write of " + strconv.Itoa(len(b)) + " bytes not ending a line")
	}
	w.writes++
	for _, c := range b {
		if c == '\n' {
			w.lines++
		}
	}
	return len(b), nil
}
func (w *lineCounter) FlushError() error                  { return nil }
func (w *lineCounter) SetWriteDeadline(t time.Time) error { return nil }
