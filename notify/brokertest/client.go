package brokertest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
)

// Client drains a notify.Conn in the background, as a transport's writer
// would, and records what it receives.
type Client struct {
	Conn *notify.Conn

	ready <-chan struct{} // the Conn's wake-ups; nil: poll

	stop  chan struct{} // closed by Close
	nudge chan struct{} // capacity 1: re-read the draining flag
	done  chan struct{}

	mu       sync.Mutex
	envs     []*notify.Envelope // guarded by mu
	times    []time.Time        // when each of envs was drained; guarded by mu
	changed  chan struct{}      // closed and replaced on every receive; guarded by mu
	draining bool               // guarded by mu
}

// Connect registers an anonymous connection on h and starts draining it.
func Connect(t testing.TB, h *notify.Hub) *Client {
	t.Helper()
	wake, ready := Wakeup()
	c, err := h.Connect("", notify.ConnOptions{Wake: wake})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return Drain(t, c, ready)
}

// Wakeup returns a notify.ConnOptions.Wake function and the channel it
// signals (capacity 1: a wake-up is never lost, several coalesce).
func Wakeup() (wake func(), ready <-chan struct{}) {
	ch := make(chan struct{}, 1)
	return func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}, ch
}

// Drain starts draining c, woken by ready (see Wakeup; nil: it polls). The
// client is closed when t ends.
func Drain(t testing.TB, c *notify.Conn, ready <-chan struct{}) *Client {
	cl := &Client{Conn: c, ready: ready, stop: make(chan struct{}), nudge: make(chan struct{}, 1), done: make(chan struct{}), changed: make(chan struct{}), draining: true}
	go cl.run()
	t.Cleanup(cl.Close)
	return cl
}

// Pause stops draining (a stalled client); Resume continues.
func (cl *Client) Pause()  { cl.setDraining(false) }
func (cl *Client) Resume() { cl.setDraining(true) }

func (cl *Client) setDraining(on bool) {
	cl.mu.Lock()
	cl.draining = on
	cl.mu.Unlock()
	select {
	case cl.nudge <- struct{}{}:
	default:
	}
}

func (cl *Client) run() {
	defer close(cl.done)
	var batch []*notify.Envelope
	for {
		select {
		case <-cl.ready:
		case <-cl.Conn.Done():
		case <-cl.nudge:
		case <-cl.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		cl.mu.Lock()
		draining := cl.draining
		cl.mu.Unlock()
		if !draining {
			continue
		}
		batch = cl.Conn.Drain(batch[:0])
		if len(batch) == 0 {
			continue
		}
		now := time.Now()
		cl.mu.Lock()
		cl.envs = append(cl.envs, batch...)
		for range batch {
			cl.times = append(cl.times, now)
		}
		close(cl.changed)
		cl.changed = make(chan struct{})
		cl.mu.Unlock()
	}
}

// Close closes the connection and stops draining. Idempotent.
func (cl *Client) Close() {
	cl.Conn.Close(nil)
	select {
	case <-cl.done:
	default:
		close(cl.stop)
		<-cl.done
	}
}

// Envelopes returns a copy of everything received so far.
func (cl *Client) Envelopes() []*notify.Envelope {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]*notify.Envelope(nil), cl.envs...)
}

// ReceivedAt returns when each envelope of Envelopes was drained.
func (cl *Client) ReceivedAt() []time.Time {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]time.Time(nil), cl.times...)
}

// Messages returns the message envelopes received on channel.
func (cl *Client) Messages(channel string) []*notify.Envelope {
	var ms []*notify.Envelope
	for _, e := range cl.Envelopes() {
		if e.Type == notify.TypeMessage && e.Channel == channel {
			ms = append(ms, e)
		}
	}
	return ms
}

// WaitFor waits until cond holds for the envelopes received, or fails t
// after timeout.
func (cl *Client) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]*notify.Envelope) bool) []*notify.Envelope {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		cl.mu.Lock()
		envs := append([]*notify.Envelope(nil), cl.envs...)
		changed := cl.changed
		cl.mu.Unlock()
		if cond(envs) {
			return envs
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; received %d envelopes: %s", timeout, what, len(envs), summarize(envs))
			return nil
		}
	}
}

// WaitMessages waits until n messages of channel arrived and returns them.
func (cl *Client) WaitMessages(t testing.TB, channel string, n int, timeout time.Duration) []*notify.Envelope {
	t.Helper()
	cl.WaitFor(t, timeout, fmt.Sprintf("%d messages on %s", n, channel), func(envs []*notify.Envelope) bool {
		return count(envs, channel) >= n
	})
	return cl.Messages(channel)
}

func count(envs []*notify.Envelope, channel string) int {
	n := 0
	for _, e := range envs {
		if e.Type == notify.TypeMessage && e.Channel == channel {
			n++
		}
	}
	return n
}

func summarize(envs []*notify.Envelope) string {
	const show = 12
	s := ""
	for i, e := range envs {
		if i == show {
			s += fmt.Sprintf(" …(+%d)", len(envs)-show)
			break
		}
		s += " " + string(e.JSON())
	}
	return s
}

// Subscribe subscribes cl to channel from since ("" for live), failing t on
// error.
func (cl *Client) Subscribe(t testing.TB, channel, since string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Conn.Subscribe(ctx, notify.SubscribeRequest{Channel: channel, Since: since}); err != nil {
		t.Fatalf("subscribe %s since %q: %v", channel, since, err)
	}
}
