package wire

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/notify"
)

// Output is a transport's side of a Writer: how to frame envelopes and how
// to put a frame on the wire. The writer calls its methods one at a time,
// from whichever goroutine holds the writer's role.
type Output interface {
	// Append appends e to frame, which holds n envelopes already (n == 0:
	// frame holds only WriterOptions.HeaderRoom bytes).
	Append(frame []byte, e *notify.Envelope, n int) []byte
	// WriteFrame writes a whole frame and flushes it.
	WriteFrame(frame []byte) error
	// SetWriteDeadline bounds the writes that follow; the zero time
	// removes the bound. An Output without deadlines returns an error for
	// the zero time (its slow clients then lag on their queue instead).
	SetWriteDeadline(t time.Time) error
	// End ends the connection; it is called once. reason is why it ends:
	// the Conn's closing error (notify.ErrClosed when the client left),
	// notify.Dropped(notify.DropReconnectAdvice) once a drain's advice is
	// written, or nil after a failed write (nothing more can be said).
	End(reason error)
}

// Prober is the heartbeat of an Output that can ask its peer for an answer
// (a WebSocket ping). Probe sends the question and waits for the answer
// within the write timeout. It is called outside the writer's role, so it
// must be safe to call while frames are written.
type Prober interface {
	Probe(timeout time.Duration) error
}

// WriterOptions describe a transport's framing to its Writer. Transports
// keep theirs in package variables: a Writer holds a pointer.
type WriterOptions struct {
	// HeaderRoom is how many bytes each frame starts with, for the
	// transport to fill in WriteFrame (a WebSocket frame header).
	HeaderRoom int
	// MaxFrame bounds a frame's envelope bytes; an envelope larger than
	// that goes in a frame of its own. Default 128 KiB.
	MaxFrame int
	// Heartbeat is written as a frame when nothing was written for
	// Config.Heartbeat (an SSE comment line). With neither Heartbeat nor a
	// Prober Output the writer sends no heartbeat (QUIC keeps its own).
	Heartbeat []byte
	// FinalNotice: when the server ends the connection for a reason, the
	// last frame is the error notice saying why (SSE, NDJSON streams; a
	// WebSocket says it with its close code instead).
	FinalNotice bool
	// StickyDeadline lets the write deadline stay set between writes (a
	// net.Conn, where a deadline is only checked by I/O), refreshed when
	// less than three quarters of the write timeout remain: a busy
	// connection then pays no deadline update per write, nor per wake-up.
	// The deadline stays set when the writer goes idle, so anything else
	// that writes to the Output (a WebSocket library's control frames)
	// must set a deadline of its own first; it may only move the
	// deadline later, never earlier, than the writer's. Without it the
	// deadline is set before each write and removed after (HTTP/2 resets
	// a stream whose deadline passes even while nothing is written).
	StickyDeadline bool
}

func (o *WriterOptions) maxFrame() int {
	if o.MaxFrame <= 0 {
		return 128 << 10
	}
	return o.MaxFrame
}

// Writer is one connection's writer. It drains the connection's queue,
// frames what it drained into as few frames as the size bounds allow,
// writes them within the write timeout, ends the connection once a drain's
// reconnect advice is out, tells a client why the server ends its
// connection, and keeps an idle connection alive with heartbeats. The
// transport supplies only an Output.
//
// It runs in one of two modes:
//
//   - On demand (NewWriter, then Start): a goroutine runs only while there
//     is something to write. Wake starts it; once the queue is empty it
//     lingers for Config.WriterLinger, so that the next wake-up of a busy
//     connection costs a channel send instead of a new goroutine, then
//     exits. The heartbeat is a timer. An idle connection holds no
//     goroutine of its writer. For transports whose handler returns
//     (WebSocket, SSE on a hijacked HTTP/1.1 connection).
//   - Loop (NewLoopWriter, then Run): the calling goroutine is the writer
//     until the connection ends, one select over the request's context, the
//     Conn's end, wake-ups and the heartbeat timer. For transports whose
//     handler must stay in ServeHTTP (SSE over HTTP/2 and HTTP/3, NDJSON
//     streams).
//
// Wake is safe for concurrent use and may be called before Start or Run:
// the wake-up is kept. Everything else belongs to the writer's role.
type Writer struct {
	loop bool
	// kick wakes the loop, or a lingering on-demand writer; capacity 1.
	// A loop writer's is made with it; an on-demand writer's is made
	// under mu before it lingers and dropped when it goes idle, with
	// linger, so that an idle connection keeps neither.
	kick chan struct{}

	// Set by Start or Run before the writer's role is first taken; read
	// only by the role's holder and the heartbeat.
	sess      *Session
	cfg       *Config
	out       Output
	opts      *WriterOptions
	deadlines bool        // out supports write deadlines
	beat      *time.Timer // the heartbeat timer

	lastWrite atomic.Int64 // when the last write started, Unix nanoseconds

	mu      sync.Mutex
	state   writerState // guarded by mu
	again   bool        // woken while writing: drain once more; guarded by mu
	started bool        // Start was called; guarded by mu

	// Owned by the writer's role:
	deadline int64       // the sticky deadline set, Unix nanoseconds; 0 if none
	linger   *time.Timer // on demand: how long an idle writer waits; see kick
}

type writerState uint8

const (
	idle      writerState = iota // no goroutine holds the role
	writing                      // a goroutine holds the role
	lingering                    // the role's goroutine waits on kick for a while
	ended                        // the connection has ended
)

// NewWriter returns an on-demand writer; pass its Wake to Open, then call
// Start.
func NewWriter() *Writer { return &Writer{} }

// NewLoopWriter returns a loop writer; pass its Wake to Open, then call Run.
func NewLoopWriter() *Writer { return &Writer{loop: true, kick: make(chan struct{}, 1)} }

// Wake tells the writer that the queue has something, or that the
// connection closed. It never blocks (it is the notify.Conn's wake-up).
func (w *Writer) Wake() {
	if w.loop {
		w.signal()
		return
	}
	w.mu.Lock()
	switch w.state {
	case idle:
		if !w.started {
			w.again = true
			break
		}
		w.state = writing
		w.mu.Unlock()
		go w.run()
		return
	case lingering:
		w.state = writing
		w.mu.Unlock()
		w.signal() // the lingering goroutine takes it
		return
	case writing:
		w.again = true
	}
	w.mu.Unlock()
}

func (w *Writer) signal() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Start starts an on-demand writer on sess, writing to out: it writes
// whatever was queued before (a drain's advice), then runs on demand until
// the connection ends. The caller has written whatever must precede the
// first frame (a response header). opts must not change afterwards.
func (w *Writer) Start(sess *Session, out Output, opts *WriterOptions) {
	w.setup(sess, out, opts)
	if _, probes := out.(Prober); probes || opts.Heartbeat != nil {
		w.beat = time.AfterFunc(w.cfg.Heartbeat, w.heartbeat)
	}
	w.mu.Lock()
	w.started = true
	if w.state != idle {
		w.mu.Unlock()
		return
	}
	w.state, w.again = writing, false
	w.mu.Unlock()
	go w.run()
}

// Run is a loop writer: it writes sess's queue to out until the connection
// ends or ctx is done (the client went), then returns. Call it from the
// goroutine that owns out (the handler's). opts must not change.
func (w *Writer) Run(ctx context.Context, sess *Session, out Output, opts *WriterOptions) {
	w.setup(sess, out, opts)
	var beat <-chan time.Time
	if opts.Heartbeat != nil {
		w.beat = time.NewTimer(w.cfg.Heartbeat)
		defer w.beat.Stop()
		beat = w.beat.C
	}
	conn := sess.Conn
	for {
		select {
		case <-ctx.Done():
			w.end(nil)
			return
		case <-conn.Done():
			w.finish(conn.Err())
			return
		case <-w.kick:
			if !w.flush() {
				return
			}
		case <-beat:
			// Re-armed from the last write rather than reset by every
			// write: a busy stream costs no timer updates.
			if idle := w.idleFor(); idle < w.cfg.Heartbeat {
				w.beat.Reset(w.cfg.Heartbeat - idle)
				continue
			}
			if !w.write(opts.Heartbeat) {
				return
			}
			w.beat.Reset(w.cfg.Heartbeat)
		}
	}
}

func (w *Writer) setup(sess *Session, out Output, opts *WriterOptions) {
	w.sess, w.cfg, w.out, w.opts = sess, sess.cfg, out, opts
	// Zero is no deadline: a harmless probe. An unsupported deadline
	// returns a fresh error each time; asking once keeps writes
	// allocation-free.
	w.deadlines = out.SetWriteDeadline(time.Time{}) == nil
	w.lastWrite.Store(time.Now().UnixNano())
}

// run holds the writer's role (on demand): it writes until the queue is
// empty, lingers, and returns once it has lingered with nothing to do or
// the connection has ended.
func (w *Writer) run() {
	for {
		if !w.flush() {
			return
		}
		w.mu.Lock()
		if w.again {
			w.again = false
			w.mu.Unlock()
			continue
		}
		if w.cfg.WriterLinger <= 0 {
			w.mu.Unlock()
			if w.release() {
				return
			}
			continue
		}
		if w.kick == nil {
			w.kick = make(chan struct{}, 1)
		}
		w.state = lingering
		w.mu.Unlock()
		if !w.wait() {
			return
		}
	}
}

// wait lingers for a wake-up. It reports false if none came: the writer
// has gone idle and the caller must return.
func (w *Writer) wait() bool {
	if w.linger == nil {
		w.linger = time.NewTimer(w.cfg.WriterLinger)
	} else {
		w.linger.Reset(w.cfg.WriterLinger)
	}
	select {
	case <-w.kick:
		w.linger.Stop()
		return true
	case <-w.linger.C:
	}
	w.mu.Lock()
	switch w.state {
	case writing:
		// A wake-up came with the timer: its kick is on its way.
		w.mu.Unlock()
		<-w.kick
		return true
	case ended:
		w.mu.Unlock()
		return false
	}
	w.idleLocked() // lingered with nothing to do
	w.mu.Unlock()
	return false
}

// release gives up the writer's role (on demand). It reports false if a
// wake-up came meanwhile: the caller keeps the role and writes again.
func (w *Writer) release() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == ended {
		return true
	}
	if w.again {
		w.again = false
		return false
	}
	w.idleLocked()
	return true
}

// idleLocked gives up the role; w.mu is held. The sticky deadline, if
// any, stays set: an idle connection's next write refreshes it when due.
func (w *Writer) idleLocked() {
	w.state = idle
	w.kick, w.linger = nil, nil // no Wake uses kick while idle
}

// writerYields is how many times a writer yields before it drains; see
// flush.
const writerYields = 3

// flush writes everything queued. It reports false once the connection
// has ended.
func (w *Writer) flush() bool {
	conn := w.sess.Conn
	if d := w.cfg.WriteDelay; d > 0 {
		time.Sleep(d) // let more of a busy connection's messages queue up
	} else {
		// Let whatever else is runnable go first: under load that is the
		// dispatch of more messages to this connection (and the other
		// writers), which this write then carries too; when the process
		// has nothing else to do each yield returns at once. Measured
		// (herald bench peer, flat-1000): one yield took 3.7 -> 9-13
		// envelopes per write with a lean client, and without it a fast
		// client's writers fell behind the dispatch until their queues
		// overflowed. At 5,000 subscribers one yield is one pass over the
		// other writers, too short for many publishes to land: 3 yields,
		// alternated with 1 and 2 (flat-5000, 3 rounds), gave 936k-1407k
		// deliveries/s per server core against 638k-837k (1) and
		// 813k-1188k (2), with rate-1000's p99 20-34 ms against 37-59 ms.
		for range writerYields {
			runtime.Gosched()
		}
	}
	buf := bufPool.Get().(*writeBuf)
	buf.batch = conn.Drain(buf.batch[:0])
	ok := len(buf.batch) == 0 || w.writeBatch(buf)
	clear(buf.batch) // the pool must not keep envelopes alive
	if cap(buf.frame) <= 2*w.opts.maxFrame() {
		bufPool.Put(buf)
	}
	if !ok {
		return false
	}
	select {
	case <-conn.Done():
		w.finish(conn.Err())
		return false
	default:
		return true
	}
}

// writeBatch writes buf.batch in as few frames as MaxFrame and
// Config.MaxBatch allow. It reports false once the connection has ended: a
// failed write, or a drain's advice written.
func (w *Writer) writeBatch(buf *writeBuf) bool {
	frame, ok, ends := writeFrames(w.out, w.opts, w.cfg.MaxBatch, buf.batch, buf.frame, w.write)
	buf.frame = frame[:0]
	if !ok {
		return false
	}
	w.sess.Wrote(buf.batch)
	if ends {
		// The advice is out: the client reconnects elsewhere.
		reason := notify.Dropped(notify.DropReconnectAdvice)
		w.sess.Close(reason)
		w.end(reason)
		return false
	}
	return true
}

// write writes one frame within the write timeout. On failure it closes
// the session — as lagging if the client did not take the write in time —
// and ends the connection.
func (w *Writer) write(frame []byte) bool {
	now := time.Now()
	w.lastWrite.Store(now.UnixNano())
	timeout := w.cfg.WriteTimeout
	if w.deadlines {
		if !w.opts.StickyDeadline {
			_ = w.out.SetWriteDeadline(now.Add(timeout))
		} else if time.Duration(w.deadline-now.UnixNano()) < timeout*3/4 {
			d := now.Add(timeout)
			w.deadline = d.UnixNano()
			_ = w.out.SetWriteDeadline(d)
		}
	}
	err := w.out.WriteFrame(frame)
	if err != nil {
		var reason error
		// HTTP/2 reports a timed-out write as a closed stream, not as a
		// timeout: a write that lasted until its deadline timed out,
		// whatever the error says.
		if isTimeout(err) || (w.deadlines && !w.opts.StickyDeadline && time.Since(now) >= timeout) {
			reason = notify.Dropped(notify.DropWriteTimeout)
		}
		w.cfg.Logger.Debug("write failed", "transport", w.sess.label, "user", w.sess.Conn.User(), "error", err, "lagged", reason != nil)
		w.sess.Close(reason)
		w.end(nil)
		return false
	}
	if w.deadlines && !w.opts.StickyDeadline {
		_ = w.out.SetWriteDeadline(time.Time{})
	}
	return true
}

// isTimeout reports whether err is a missed write deadline.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// finish ends a connection the hub closed: with its reason's notice first
// when the transport says why in a frame and the server is the one ending
// it.
func (w *Writer) finish(reason error) {
	if w.opts.FinalNotice && reason != nil && !errors.Is(reason, notify.ErrClosed) {
		e := notify.ErrorEnvelope(reason, "")
		if e.Code == "internal" {
			e.Message = "internal error" // as WriteError: no internals to clients
		}
		frame := w.out.Append(make([]byte, w.opts.HeaderRoom, w.opts.HeaderRoom+256), e, 0)
		if !w.write(frame) {
			return // write ended the connection
		}
	}
	w.end(reason)
}

// Close ends the connection now, with nothing said (Output.End(nil)), unless
// it has ended already. It may be called from any goroutine: a transport's
// reader calls it once its client is gone, so that a writer blocked on that
// client does not wait for its deadline.
func (w *Writer) Close() { w.end(nil) }

// end ends the connection once. Safe from any goroutine.
func (w *Writer) end(reason error) {
	w.mu.Lock()
	if w.state == ended {
		w.mu.Unlock()
		return
	}
	w.state = ended
	w.mu.Unlock()
	if w.beat != nil && !w.loop {
		w.beat.Stop()
	}
	w.out.End(reason)
}

// idleFor is how long ago the last write started.
func (w *Writer) idleFor() time.Duration {
	return time.Duration(time.Now().UnixNano() - w.lastWrite.Load())
}

// heartbeat is the on-demand writer's heartbeat timer: after Heartbeat
// without a write it probes the peer, or writes the heartbeat frame taking
// the writer's role, and re-arms itself.
func (w *Writer) heartbeat() {
	if idle := w.idleFor(); idle < w.cfg.Heartbeat {
		w.rearm(w.cfg.Heartbeat - idle)
		return
	}
	if p, ok := w.out.(Prober); ok {
		if err := p.Probe(w.cfg.WriteTimeout); err != nil {
			w.sess.Close(notify.Dropped(notify.DropHeartbeatTimeout)) // the writer ends it
			return
		}
		w.rearm(w.cfg.Heartbeat)
		return
	}
	w.mu.Lock()
	if w.state != idle {
		// Writing or lingering: the connection is busy, or was just
		// now; ended: nothing to do.
		st := w.state
		w.mu.Unlock()
		if st != ended {
			w.rearm(w.cfg.Heartbeat)
		}
		return
	}
	w.state = writing
	w.mu.Unlock()
	if !w.write(w.opts.Heartbeat) {
		return
	}
	w.rearm(w.cfg.Heartbeat)
	w.run() // drain what came meanwhile, then linger or go idle
}

func (w *Writer) rearm(d time.Duration) {
	w.mu.Lock()
	if w.state != ended {
		w.beat.Reset(max(d, time.Millisecond))
	}
	w.mu.Unlock()
}
