package wire

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/notify"
)

// fakeOutput is an Output that records what the writer does. A test can
// hold the next WriteFrame (hold), make writes fail (fail), and reads what
// was written.
type fakeOutput struct {
	mu        sync.Mutex
	frames    []string    // written frames, without their header room
	deadlines []time.Time // every SetWriteDeadline call
	ended     chan error  // End's reason; capacity 1
	endCalls  int
	fail      error         // returned by WriteFrame when set
	hold      chan struct{} // when set, WriteFrame waits for it to close
	writing   atomic.Int32  // WriteFrame calls in progress
	maxConc   atomic.Int32
	noDeadln  bool // SetWriteDeadline is not supported
	room      int
}

func newFakeOutput() *fakeOutput { return &fakeOutput{ended: make(chan error, 1)} }

func (o *fakeOutput) Append(frame []byte, e *notify.Envelope, n int) []byte {
	if n > 0 {
		frame = append(frame, '|')
	}
	return e.AppendJSON(frame)
}

func (o *fakeOutput) WriteFrame(frame []byte) error {
	if n := o.writing.Add(1); n > o.maxConc.Load() {
		o.maxConc.Store(n)
	}
	defer o.writing.Add(-1)
	o.mu.Lock()
	hold, fail := o.hold, o.fail
	o.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if fail != nil {
		return fail
	}
	o.mu.Lock()
	o.frames = append(o.frames, string(frame[o.room:]))
	o.mu.Unlock()
	return nil
}

func (o *fakeOutput) SetWriteDeadline(t time.Time) error {
	if o.noDeadln {
		return errors.New("no deadlines")
	}
	o.mu.Lock()
	o.deadlines = append(o.deadlines, t)
	o.mu.Unlock()
	return nil
}

func (o *fakeOutput) End(reason error) {
	o.mu.Lock()
	o.endCalls++
	o.mu.Unlock()
	o.ended <- reason
}

func (o *fakeOutput) written() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.frames...)
}

func (o *fakeOutput) setHold(ch chan struct{}) {
	o.mu.Lock()
	o.hold = ch
	o.mu.Unlock()
}

func (o *fakeOutput) setFail(err error) {
	o.mu.Lock()
	o.fail = err
	o.mu.Unlock()
}

// fakeProber is a fakeOutput whose heartbeat is a probe.
type fakeProber struct {
	*fakeOutput
	probes atomic.Int32
	answer atomic.Bool // probes succeed while set
}

func (p *fakeProber) Probe(time.Duration) error {
	p.probes.Add(1)
	if p.answer.Load() {
		return nil
	}
	return errors.New("no pong")
}

// writerEnv is a hub on a memory broker and a session of user u.
type writerEnv struct {
	broker *notify.MemoryBroker
	hub    *notify.Hub
	cfg    Config
	next   int // the next message's data
}

// newWriterEnv makes the environment of a test in a synctest bubble: when
// the test ends the hub closes, and the bubble's clock runs on until every
// writer has seen it.
func newWriterEnv(t *testing.T, cfg Config) *writerEnv {
	t.Cleanup(func() { time.Sleep(time.Minute) }) // runs last
	return newWriterEnvNoBubble(t, cfg)
}

func newWriterEnvNoBubble(t *testing.T, cfg Config) *writerEnv {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	h := notify.NewHub(b, notify.HubConfig{QueueLength: 64})
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	cfg.Hub = h
	cfg.Auth = AuthFunc(func(*http.Request) (*notify.Grants, error) { return &notify.Grants{User: "u"}, nil })
	return &writerEnv{broker: b, hub: h, cfg: cfg.WithDefaults()}
}

// open opens a session whose writer is w, subscribed to user:u.
func (e *writerEnv) open(t *testing.T, w *Writer) *Session {
	sess, err := Open(httptest.NewRequest("GET", "/", nil), &e.cfg, "", w.Wake)
	if err != nil {
		t.Fatal(err)
	}
	return sess
}

func (e *writerEnv) publish(t *testing.T, n int) {
	for i := 0; i < n; i++ {
		if _, err := e.broker.Publish(context.Background(), notify.Publication{Channel: "user:u", Data: []byte(fmt.Sprint(e.next))}); err != nil {
			t.Fatal(err)
		}
		e.next++
	}
}

// messages returns the data of the message envelopes in frames, in order.
func messages(frames []string) []string {
	var out []string
	for _, f := range frames {
		for _, e := range strings.Split(f, "|") {
			if i := strings.Index(e, `"data":`); i >= 0 && strings.Contains(e, `"type":"message"`) {
				out = append(out, strings.SplitN(e[i+len(`"data":`):], ",", 2)[0])
			}
		}
	}
	return out
}

func want(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(i)
	}
	return out
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

// Messages published while a write is in progress are written after it, in
// order, by the same writer (never two writers at once), coalesced.
func TestWriterWakeWhileWriting(t *testing.T) {
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("loop=%v", loop), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newWriterEnv(t, Config{})
				out := newFakeOutput()
				w := newWriter(loop)
				sess := e.open(t, w)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				start(ctx, w, sess, out, &WriterOptions{})
				if !sess.SubscribeInitial(ctx) {
					t.Fatal("subscribe failed")
				}
				synctest.Wait()
				hold := make(chan struct{})
				out.setHold(hold)
				e.publish(t, 1)
				synctest.Wait() // the writer is in WriteFrame, holding message 0
				e.publish(t, 9) // wake-ups while writing
				synctest.Wait()
				out.setHold(nil)
				close(hold)
				synctest.Wait()
				frames := out.written()
				if got := messages(frames); !equal(got, want(10)) {
					t.Fatalf("messages written %v; want 0..9 in order", got)
				}
				// subscribed notice, message 0, then 1..9 in one frame.
				if len(frames) != 3 {
					t.Fatalf("%d frames %q; want 3 (the 9 messages queued during a write coalesced)", len(frames), frames)
				}
				if n := out.maxConc.Load(); n != 1 {
					t.Fatalf("%d writes at once", n)
				}
			})
		})
	}
}

func newWriter(loop bool) *Writer {
	if loop {
		return NewLoopWriter()
	}
	return NewWriter()
}

// start starts w in its mode; a loop writer runs on its own goroutine,
// as a handler's would.
func start(ctx context.Context, w *Writer, sess *Session, out Output, opts *WriterOptions) {
	if w.loop {
		go w.Run(ctx, sess, out, opts)
		return
	}
	w.Start(sess, out, opts)
}

// The hub closing a connection during a write: the write completes, the
// reason's notice follows (FinalNotice), End gets the reason once, and
// nothing is written after.
func TestWriterEndWhileWriting(t *testing.T) {
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("loop=%v", loop), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newWriterEnv(t, Config{})
				out := newFakeOutput()
				w := newWriter(loop)
				sess := e.open(t, w)
				start(context.Background(), w, sess, out, &WriterOptions{FinalNotice: true})
				sess.SubscribeInitial(context.Background())
				synctest.Wait()
				hold := make(chan struct{})
				out.setHold(hold)
				e.publish(t, 1)
				synctest.Wait()
				sess.Close(notify.Dropped(notify.DropShutdown))
				e.publish(t, 3) // not delivered: the connection is closed
				out.setHold(nil)
				close(hold)
				synctest.Wait()
				reason := <-out.ended
				if !errors.Is(reason, notify.ErrShutdown) {
					t.Fatalf("End(%v); want the shutdown reason", reason)
				}
				frames := out.written()
				last := frames[len(frames)-1]
				if !strings.Contains(last, `"type":"error"`) || !strings.Contains(last, `"code":"shutdown"`) {
					t.Fatalf("last frame %q; want the shutdown notice", last)
				}
				if got := messages(frames); !equal(got, want(1)) {
					t.Fatalf("messages %v; want only 0", got)
				}
				w.Wake()
				w.Close()
				synctest.Wait()
				if n := len(out.written()); n != len(frames) || out.endCalls != 1 {
					t.Fatalf("after the end: %d frames (was %d), End called %d times", n, len(frames), out.endCalls)
				}
			})
		})
	}
}

// An idle connection gets a heartbeat frame every Heartbeat; a busy one
// none.
func TestWriterHeartbeatWhileIdle(t *testing.T) {
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("loop=%v", loop), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newWriterEnv(t, Config{Heartbeat: time.Second})
				out := newFakeOutput()
				w := newWriter(loop)
				sess := e.open(t, w)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				start(ctx, w, sess, out, &WriterOptions{Heartbeat: []byte(":")})
				sess.SubscribeInitial(ctx)
				time.Sleep(3500 * time.Millisecond)
				synctest.Wait()
				beats := count(out.written(), ":")
				if beats != 3 {
					t.Fatalf("%d heartbeats in 3.5 idle heartbeat periods; want 3", beats)
				}
				for i := 0; i < 30; i++ { // busy: a message every 200ms
					e.publish(t, 1)
					time.Sleep(200 * time.Millisecond)
				}
				synctest.Wait()
				if n := count(out.written(), ":"); n != beats {
					t.Fatalf("%d heartbeats while busy; want none", n-beats)
				}
				time.Sleep(1500 * time.Millisecond)
				synctest.Wait()
				if n := count(out.written(), ":"); n != beats+1 {
					t.Fatalf("%d heartbeats once idle again; want 1", n-beats)
				}
			})
		})
	}
}

func count(frames []string, s string) int {
	n := 0
	for _, f := range frames {
		if f == s {
			n++
		}
	}
	return n
}

// A probing Output's heartbeat asks the peer while idle; no answer drops
// the connection as a heartbeat timeout.
func TestWriterProbeTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newWriterEnv(t, Config{Heartbeat: time.Second})
		out := &fakeProber{fakeOutput: newFakeOutput()}
		out.answer.Store(true)
		w := NewWriter()
		sess := e.open(t, w)
		w.Start(sess, out, &WriterOptions{})
		sess.SubscribeInitial(context.Background())
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		if n := out.probes.Load(); n != 2 {
			t.Fatalf("%d probes in 2.5 heartbeat periods; want 2", n)
		}
		out.answer.Store(false)
		time.Sleep(time.Second)
		synctest.Wait()
		reason := <-out.ended
		if notify.ReasonOf(reason) != notify.DropHeartbeatTimeout {
			t.Fatalf("End(%v); want a heartbeat timeout", reason)
		}
		if n := e.hub.Stats().Dropped[notify.DropHeartbeatTimeout]; n != 1 {
			t.Fatalf("hub counted %d heartbeat timeouts; want 1", n)
		}
	})
}

// A write that times out drops the connection as lagging (a write timeout,
// not a queue overflow); any other failed write is the client gone.
func TestWriterTimeoutIsLagged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		sticky bool
		lagged bool
	}{
		{"deadline", os.ErrDeadlineExceeded, true, true},
		{"deadline per write", os.ErrDeadlineExceeded, false, true},
		{"net timeout", timeoutError{}, false, true},
		{"gone", errors.New("broken pipe"), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newWriterEnv(t, Config{})
				out := newFakeOutput()
				w := NewWriter()
				sess := e.open(t, w)
				w.Start(sess, out, &WriterOptions{StickyDeadline: tc.sticky})
				sess.SubscribeInitial(context.Background())
				synctest.Wait()
				out.setFail(tc.err)
				e.publish(t, 1)
				synctest.Wait()
				if reason := <-out.ended; reason != nil {
					t.Fatalf("End(%v) after a failed write; want nil", reason)
				}
				err := sess.Conn.Err()
				st := e.hub.Stats()
				if tc.lagged != errors.Is(err, notify.ErrLagged) || tc.lagged != (st.Dropped[notify.DropWriteTimeout] == 1) || st.Dropped[notify.DropQueueOverflow] != 0 {
					t.Fatalf("closed with %v, counted %v; want lagged=%v as a write timeout", err, st.Dropped, tc.lagged)
				}
			})
		})
	}
}

type timeoutError struct{}

func (timeoutError) Error() string { return "i/o timeout" }
func (timeoutError) Timeout() bool { return true }

// HTTP/2 reports a write that timed out as a closed stream: a write that
// lasted until its deadline is a write timeout whatever its error.
func TestWriterSlowFailedWriteIsLagged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newWriterEnv(t, Config{WriteTimeout: time.Second})
		out := newFakeOutput()
		w := NewLoopWriter()
		sess := e.open(t, w)
		go w.Run(context.Background(), sess, out, &WriterOptions{})
		sess.SubscribeInitial(context.Background())
		synctest.Wait()
		hold := make(chan struct{})
		out.setHold(hold)
		out.setFail(errors.New("stream closed"))
		e.publish(t, 1)
		time.Sleep(time.Second)
		close(hold)
		<-out.ended
		if err := sess.Conn.Err(); notify.ReasonOf(err) != notify.DropWriteTimeout {
			t.Fatalf("closed with %v; want a write timeout", err)
		}
	})
}

// A drain's advice ends the connection once it is written, counted as a
// reconnect advice.
func TestWriterReconnectAdvice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newWriterEnv(t, Config{})
		out := newFakeOutput()
		w := NewWriter()
		sess := e.open(t, w)
		w.Start(sess, out, &WriterOptions{FinalNotice: true})
		sess.SubscribeInitial(context.Background())
		synctest.Wait()
		Drain(e.hub, time.Second)
		synctest.Wait()
		reason := <-out.ended
		if notify.ReasonOf(reason) != notify.DropReconnectAdvice || !errors.Is(sess.Conn.Err(), notify.ErrShutdown) {
			t.Fatalf("End(%v), conn closed with %v; want the reconnect advice", reason, sess.Conn.Err())
		}
		frames := out.written()
		if last := frames[len(frames)-1]; !strings.Contains(last, `"type":"reconnect"`) {
			t.Fatalf("last frame %q; want the advice (and no error notice after it)", last)
		}
		if n := e.hub.Stats().Dropped[notify.DropReconnectAdvice]; n != 1 {
			t.Fatalf("counted %d reconnect advices; want 1", n)
		}
	})
}

// Wake-ups before Start are kept: what was queued is written at Start.
func TestWriterWakeBeforeStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newWriterEnv(t, Config{})
		out := newFakeOutput()
		w := NewWriter()
		sess := e.open(t, w)
		go sess.SubscribeInitial(context.Background())
		synctest.Wait()
		e.publish(t, 3)
		w.Start(sess, out, &WriterOptions{})
		synctest.Wait()
		if got := messages(out.written()); !equal(got, want(3)) {
			t.Fatalf("messages %v; want 0..2", got)
		}
	})
}

// An on-demand writer lingers after its queue empties: a wake-up within the
// linger is served by the same goroutine; after it the writer is idle.
// Sticky deadlines are set once and stay set when the writer goes idle.
func TestWriterLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newWriterEnv(t, Config{WriterLinger: 100 * time.Millisecond})
		out := newFakeOutput()
		w := NewWriter()
		sess := e.open(t, w)
		w.Start(sess, out, &WriterOptions{StickyDeadline: true})
		sess.SubscribeInitial(context.Background())
		synctest.Wait()
		state := func() writerState {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.state
		}
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		if s := state(); s != idle {
			t.Fatalf("state %v after the linger; want idle", s)
		}
		out.mu.Lock()
		out.deadlines = nil
		out.mu.Unlock()
		for i := 0; i < 20; i++ { // every 50ms: within the linger
			e.publish(t, 1)
			synctest.Wait()
			if s := state(); s != lingering {
				t.Fatalf("message %d: state %v; want lingering", i, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if s := state(); s != idle {
			t.Fatalf("state %v after the linger; want idle", s)
		}
		out.mu.Lock()
		dl := out.deadlines
		out.mu.Unlock()
		// 20 writes over 1 s with a 10 s timeout: the deadline the
		// first write set (before the count) is still fresh, and was
		// not removed when the writer went idle.
		if len(dl) != 0 {
			t.Fatalf("deadline calls %v; want none", dl)
		}
		// Past a quarter of the timeout, the next write refreshes it.
		time.Sleep(2 * time.Second)
		e.publish(t, 1)
		synctest.Wait()
		out.mu.Lock()
		dl = out.deadlines
		out.mu.Unlock()
		if len(dl) != 1 || !dl[0].Equal(time.Now().Add(10*time.Second)) {
			t.Fatalf("deadline calls %v; want one, now+timeout", dl)
		}
		if got := messages(out.written()); len(got) != 21 {
			t.Fatalf("%d messages written; want 21", len(got))
		}
	})
}

// Without sticky deadlines every write is bounded and the bound removed
// after it.
func TestWriterPerWriteDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newWriterEnv(t, Config{})
		out := newFakeOutput()
		w := NewWriter()
		sess := e.open(t, w)
		w.Start(sess, out, &WriterOptions{})
		sess.SubscribeInitial(context.Background())
		synctest.Wait()
		out.mu.Lock()
		out.deadlines = nil
		out.mu.Unlock()
		e.publish(t, 1)
		synctest.Wait()
		out.mu.Lock()
		dl := out.deadlines
		out.mu.Unlock()
		if len(dl) != 2 || !dl[0].Equal(time.Now().Add(e.cfg.WriteTimeout)) || !dl[1].IsZero() {
			t.Fatalf("deadline calls %v; want now+timeout, then none", dl)
		}
	})
}

// WriteDelay holds a woken writer so that what comes meanwhile shares its
// write.
func TestWriterWriteDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newWriterEnv(t, Config{WriteDelay: 10 * time.Millisecond})
		out := newFakeOutput()
		w := NewWriter()
		sess := e.open(t, w)
		w.Start(sess, out, &WriterOptions{})
		sess.SubscribeInitial(context.Background())
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		before := len(out.written())
		for i := 0; i < 5; i++ {
			e.publish(t, 1)
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		if n := len(out.written()) - before; n != 1 {
			t.Fatalf("5 messages 1ms apart took %d writes; want 1", n)
		}
	})
}

// Frames respect MaxFrame and Config.MaxBatch; an envelope over MaxFrame
// gets a frame of its own.
func TestWriteBatchSplits(t *testing.T) {
	batch := make([]*notify.Envelope, 0, 100)
	for i := 0; i < 100; i++ {
		batch = append(batch, notify.NewMessage("c", notify.ID{Ms: 1, Seq: uint64(i)}, "", []byte(`"`+strings.Repeat("x", 90)+`"`)))
	}
	big := notify.NewMessage("c", notify.ID{Ms: 2}, "", []byte(`"`+strings.Repeat("y", 5000)+`"`))
	for _, tc := range []struct {
		name     string
		batch    []*notify.Envelope
		maxFrame int
		maxBatch int
		frames   int
	}{
		{"one frame", batch, 0, 0, 1},
		{"by size", batch, 1024, 0, -1}, // as many as fit: checked below
		{"by count", batch, 0, 7, 15},
		{"big alone", append(append(batch[:3:3], big), batch[3:6]...), 1024, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := newFakeOutput()
			out.room = 10
			opts := &WriterOptions{HeaderRoom: 10, MaxFrame: tc.maxFrame}
			frame, err := WriteBatch(out, opts, tc.maxBatch, tc.batch, nil)
			if err != nil {
				t.Fatal(err)
			}
			frames := out.written()
			if tc.frames >= 0 && len(frames) != tc.frames {
				t.Fatalf("%d frames; want %d", len(frames), tc.frames)
			}
			for i, f := range frames[:len(frames)-1] {
				if tc.frames < 0 && len(f)+1+len(frames[i+1])/(strings.Count(frames[i+1], "|")+1) <= tc.maxFrame {
					t.Fatalf("frame %d (%d bytes) had room for the next envelope", i, len(f))
				}
			}
			n := 0
			for _, f := range frames {
				k := strings.Count(f, "|") + 1
				n += k
				if tc.maxFrame > 0 && len(f) > tc.maxFrame && k > 1 {
					t.Fatalf("a frame of %d envelopes has %d bytes; the bound is %d", k, len(f), tc.maxFrame)
				}
				if tc.maxBatch > 0 && k > tc.maxBatch {
					t.Fatalf("a frame of %d envelopes; the bound is %d", k, tc.maxBatch)
				}
			}
			if n != len(tc.batch) {
				t.Fatalf("%d envelopes written; want %d", n, len(tc.batch))
			}
			if len(frame) < 10 {
				t.Fatal("returned buffer lost its header room")
			}
		})
	}
}

// nopOutput frames like a transport and writes nowhere.
type nopOutput struct{}

func (nopOutput) Append(frame []byte, e *notify.Envelope, n int) []byte {
	if n > 0 {
		frame = append(frame, '\n')
	}
	return append(frame, e.JSON()...)
}
func (nopOutput) WriteFrame([]byte) error          { return nil }
func (nopOutput) SetWriteDeadline(time.Time) error { return nil }
func (nopOutput) End(error)                        {}

// The framing allocates nothing, per message or per batch.
func TestWriteBatchAllocatesNothing(t *testing.T) {
	batch := make([]*notify.Envelope, 256)
	for i := range batch {
		batch[i] = notify.NewMessage("news", notify.ID{Ms: 1, Seq: uint64(i)}, "e", []byte(`{"n":1}`))
	}
	opts := &WriterOptions{HeaderRoom: 10}
	frame, _ := WriteBatch(nopOutput{}, opts, 0, batch, nil)
	if n := testing.AllocsPerRun(100, func() {
		frame, _ = WriteBatch(nopOutput{}, opts, 0, batch, frame)
	}); n != 0 {
		t.Fatalf("%v allocations per batch of 256; want 0", n)
	}
}

// A whole delivery through a running writer: the writer's own path
// allocates nothing per message (a batch of 64 costs what a batch of 1
// does).
func TestWriterAllocatesNothingPerMessage(t *testing.T) {
	e := newWriterEnvNoBubble(t, Config{WriterLinger: -1})
	w := NewWriter()
	sess := e.open(t, w)
	w.setup(sess, nopOutput{}, &WriterOptions{})
	for _, n := range []int{1, 64} {
		msgs := make([]*notify.Envelope, n)
		for i := range msgs {
			msgs[i] = notify.NewMessage("news", notify.ID{Ms: 1, Seq: uint64(i)}, "e", []byte(`{"n":1}`))
		}
		buf := &writeBuf{}
		allocs := testing.AllocsPerRun(100, func() {
			buf.batch = append(buf.batch[:0], msgs...)
			w.writeBatch(buf)
		})
		if allocs != 0 {
			t.Fatalf("batch of %d: %v allocations; want 0", n, allocs)
		}
	}
}

func (s writerState) String() string {
	return [...]string{"idle", "writing", "lingering", "ended"}[s]
}
