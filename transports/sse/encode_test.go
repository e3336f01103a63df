package sse

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
	r3 "github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"
)

// event is one dispatched event, as an EventSource sees it.
type event struct {
	id    string // the last event ID once the event is dispatched
	hasID bool   // the event had an id field
	data  string
}

// parseEvents parses an event stream as the WHATWG spec does: lines end
// with CRLF, LF or CR; comments and unknown fields are ignored; an event
// not ended by a blank line is discarded.
func parseEvents(stream string) (events []event, retry string) {
	var data strings.Builder
	dataSet, hasID, lastID := false, false, ""
	for {
		i := strings.IndexAny(stream, "\r\n")
		if i < 0 {
			return events, retry
		}
		line := stream[:i]
		if stream[i] == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
			i++
		}
		stream = stream[i+1:]
		if line == "" {
			if dataSet {
				events = append(events, event{id: lastID, hasID: hasID, data: strings.TrimSuffix(data.String(), "\n")})
			}
			data.Reset()
			dataSet, hasID = false, false
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
			dataSet = true
		case "id":
			if !strings.Contains(value, "\x00") {
				lastID, hasID = value, true
			}
		case "retry":
			retry = value
		}
	}
}

// r3labsEvents reads stream with the r3labs client, as Dial does.
func r3labsEvents(t testing.TB, stream []byte) []*r3.Event {
	t.Helper()
	sc := r3.NewClient("http://herald.test/v1/sse", r3.ClientMaxBufferSize(DefaultMaxEventSize))
	sc.Connection = &http.Client{Transport: cannedResponse(stream)}
	sc.ReconnectStrategy = &backoff.StopBackOff{}
	var events []*r3.Event
	if err := sc.SubscribeWithContext(context.Background(), "", func(ev *r3.Event) { events = append(events, ev) }); err != nil {
		t.Fatalf("r3labs: %v", err)
	}
	return events
}

// cannedResponse answers every request with an event stream of its bytes.
type cannedResponse []byte

func (c cannedResponse) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Request: r,
		Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body:   io.NopCloser(bytes.NewReader(c)),
	}, nil
}

func id(ms, seq uint64) notify.ID { return notify.ID{Ms: ms, Seq: seq} }

func TestEncodeEventPerEnvelope(t *testing.T) {
	channels := []string{"user:42", "news"}
	batch := []*notify.Envelope{
		{Type: notify.TypeSubscribed, Channel: "user:42"},
		{Type: notify.TypeSubscribed, Channel: "news", ID: id(5, 0)},
		{Type: notify.TypeSubscribed, Channel: "news", ID: id(5, 0)}, // no move: no id
		notify.NewMessage("news", id(7, 1), "e", []byte(`{"text":"a\nb"}`)),
		{Type: notify.TypeGap, Channel: "news", Since: id(7, 1)},
		{Type: notify.TypeError, Channel: "news", Code: "unknown_position", Message: "line1\nline2"},
		notify.NewMessage("user:42", id(9, 0), "", []byte(`null`)),
		{Type: notify.TypeReconnect, Code: "shutdown", Delay: 120},
	}
	wantIDs := []string{"user:42=0-0", "user:42=0-0;news=5-0", "", "user:42=0-0;news=7-1", "", "", "user:42=9-0;news=7-1", ""}
	pos := wire.NewPositions(channels)
	var b []byte
	for _, e := range batch {
		b = appendEvent(b, e, pos)
	}
	if bytes.Contains(b, []byte("event:")) {
		t.Fatalf("an event field in %q: every envelope goes to onmessage", b)
	}
	events, _ := parseEvents(string(b))
	if len(events) != len(batch) {
		t.Fatalf("%d events for %d envelopes:\n%s", len(events), len(batch), b)
	}
	last := ""
	for i, ev := range events {
		if ev.data != string(batch[i].JSON()) {
			t.Errorf("event %d: data %q; want %q", i, ev.data, batch[i].JSON())
		}
		if ev.hasID != (wantIDs[i] != "") || wantIDs[i] != "" && ev.id != wantIDs[i] {
			t.Errorf("event %d: id %q (set: %v); want %q", i, ev.id, ev.hasID, wantIDs[i])
		}
		if wantIDs[i] != "" {
			last = wantIDs[i]
		}
		if ev.id != last {
			t.Errorf("event %d: last event ID %q; want %q kept", i, ev.id, last)
		}
	}
}

func TestEncodeSingleChannelCursorIsTheMessageID(t *testing.T) {
	pos := wire.NewPositions([]string{"news"})
	b := appendEvent(nil, notify.NewMessage("news", id(1700000000000, 3), "e", []byte(`1`)), pos)
	want := "id: 1700000000000-3\ndata: " + `{"type":"message","channel":"news","id":"1700000000000-3","event":"e","data":1,"ts":1700000000000}` + "\n\n"
	if string(b) != want {
		t.Fatalf("encoded %q\nwant    %q", b, want)
	}
}

// TestEncodeLineBreaksInData: data that skipped validation cannot end an
// event early nor forge an id; JSON reads the lines joined back as the
// whitespace they were.
func TestEncodeLineBreaksInData(t *testing.T) {
	e := &notify.Envelope{Type: notify.TypeMessage, Channel: "news", ID: id(2, 0), Data: []byte("{\"a\":\r\n1,\r\"b\":\n\n2}\n\nid: 99-0\ndata: {}")}
	b := appendEvent(nil, e, wire.NewPositions([]string{"news"}))
	events, _ := parseEvents(string(b))
	want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(e.JSON()))
	if len(events) != 1 || events[0].data != want || events[0].id != "2-0" {
		t.Fatalf("got %+v from %q; want one event with id 2-0 and data %q", events, b, want)
	}
	if r := r3labsEvents(t, b); len(r) != 1 || string(r[0].Data) != want || string(r[0].ID) != "2-0" {
		t.Fatalf("r3labs read %d events from %q", len(r), b)
	}
}

func FuzzEncodeEvent(f *testing.F) {
	f.Add(uint8(0), "order.shipped", []byte(`{"n":[1,2.5,null],"s":"café \u2028"}`), uint64(1700000000000), uint64(0), false)
	f.Add(uint8(1), "", []byte("{\"a\":1}\n\nid: 1-0\ndata: {\"type\":\"forged\"}\r\r"), uint64(1), uint64(2), true)
	f.Add(uint8(2), "ref\x00\n", []byte(nil), uint64(0), uint64(0), true)
	f.Add(uint8(3), "bad\r\nmessage\u2029\xff", []byte(nil), uint64(3), uint64(4), false)
	f.Add(uint8(4), "", []byte(nil), uint64(5), uint64(6), true)
	f.Fuzz(func(t *testing.T, kind uint8, text string, data []byte, ms, seq uint64, multi bool) {
		channels := []string{"news"}
		if multi {
			channels = []string{"user:42", "news"}
		}
		pos := id(ms, seq)
		var e *notify.Envelope
		switch kind % 5 {
		case 0: // a published message, validated by the core
			p := notify.Publication{Channel: "news", Event: text, Data: data}
			n, err := p.Normalize(0)
			if err != nil {
				return
			}
			e = notify.NewMessage("news", pos, text, n.Data)
		case 1: // data as a Redis entry written by anyone
			e = &notify.Envelope{Type: notify.TypeMessage, Channel: "news", ID: pos, Data: data, TS: int64(ms >> 1)}
		case 2:
			e = &notify.Envelope{Type: notify.TypeSubscribed, Channel: "news", ID: pos, Ref: text}
		case 3:
			e = &notify.Envelope{Type: notify.TypeError, Channel: text, Code: "internal", Message: text}
		case 4:
			e = &notify.Envelope{Type: notify.TypeGap, Channel: "news", Since: pos}
		}
		want := wire.NewPositions(channels)
		moved := want.Update(e)
		wantID := string(want.AppendCursor(nil))
		wantData := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(e.JSON()))

		b := appendEvent(nil, e, wire.NewPositions(channels))
		events, _ := parseEvents(string(b))
		if len(events) != 1 || events[0].data != wantData || events[0].hasID != moved || moved && events[0].id != wantID {
			t.Fatalf("encoded %q, parsed %+v; want one event, id %q (%v), data %q", b, events, wantID, moved, wantData)
		}
		if !bytes.HasSuffix(b, []byte("\n\n")) || bytes.Count(b, []byte("\n\n")) != 1 || bytes.IndexByte(b, '\r') >= 0 {
			t.Fatalf("encoded %q: want one event, LF line ends, one blank line at its end", b)
		}
		r := r3labsEvents(t, b)
		if len(r) != 1 || string(r[0].Data) != wantData || moved && string(r[0].ID) != wantID || !moved && len(r[0].ID) != 0 {
			t.Fatalf("r3labs read %d events from %q", len(r), b)
		}
	})
}

// discardWriter is a ResponseWriter that flushes and takes deadlines, for
// measuring the handler's own work.
type discardWriter struct {
	h http.Header
	n int
}

func (d *discardWriter) Header() http.Header                { return d.h }
func (d *discardWriter) Write(p []byte) (int, error)        { d.n += len(p); return len(p), nil }
func (d *discardWriter) WriteHeader(int)                    {}
func (d *discardWriter) FlushError() error                  { return nil }
func (d *discardWriter) SetWriteDeadline(t time.Time) error { return nil }

func benchStream(channels []string) (*stream, *discardWriter) {
	w := &discardWriter{h: http.Header{}}
	return &stream{Response: wire.NewResponse(w), pos: wire.NewPositions(channels)}, w
}

// benchBatch is n messages of ~200 bytes of data, round-robin over
// channels, each moving its channel's position.
func benchBatch(channels []string, n int) []*notify.Envelope {
	data := []byte(`{"order":"A-1234567","status":"shipped","carrier":"ups","eta":"2025-01-01T10:00:00Z","items":[{"sku":"X-1","qty":1},{"sku":"Y-22","qty":3}],"note":"leave at the door, ring twice"}`)
	batch := make([]*notify.Envelope, n)
	for i := range batch {
		batch[i] = notify.NewMessage(channels[i%len(channels)], id(1700000000000+uint64(i), 0), "order.shipped", data)
	}
	return batch
}

// BenchmarkWriteBatch measures the writer's hot path: encoding a drained
// batch into the connection's buffer and writing it (one write, one flush,
// two deadline updates). An op is one batch; ns/msg is per message, and
// allocs/op must be 0.
func BenchmarkWriteBatch(b *testing.B) {
	for _, channels := range [][]string{{"news"}, {"user:42", "news", "room.1"}} {
		for _, n := range []int{1, 64} {
			b.Run(fmt.Sprintf("%dchannels/batch%d", len(channels), n), func(b *testing.B) {
				s, w := benchStream(channels)
				// Two batches in turn, so that every message moves its
				// channel's position and gets its id line.
				all := benchBatch(channels, 2*n)
				batches := [2][]*notify.Envelope{all[:n], all[n:]}
				frame, _ := wire.WriteBatch(s, &writerOptions, 0, batches[0], nil)
				b.SetBytes(int64(w.n))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i++
					var err error
					if frame, err = wire.WriteBatch(s, &writerOptions, 0, batches[i%2], frame); err != nil {
						b.Fatal(err)
					}
				}
				msgs := float64(b.N * n)
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/msgs, "ns/msg")
			})
		}
	}
}

// TestWriteBatchAllocs guards the zero-allocation hot path.
func TestWriteBatchAllocs(t *testing.T) {
	for _, channels := range [][]string{{"news"}, {"user:42", "news", "room.1"}} {
		s, _ := benchStream(channels)
		all := benchBatch(channels, 128)
		var frame []byte
		i := 0
		if n := testing.AllocsPerRun(100, func() {
			i++
			frame, _ = wire.WriteBatch(s, &writerOptions, 0, all[i%2*64:][:64], frame)
		}); n != 0 {
			t.Errorf("%d channels: %v allocations per batch of 64; want 0", len(channels), n)
		}
	}
}
