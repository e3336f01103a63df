package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/client"
	"github.com/quic-go/quic-go"
)

// subscriber is one simulated client.
type subscriber struct {
	idx      int
	user     string
	channel  int    // index of the channel it checks (publisher's numbering)
	chanName string // its name
	inst     int    // instance it connects to
	c        *client.Client

	ready       atomic.Bool  // a probe arrived: subscribed end to end
	paused      atomic.Bool  // slow consumer: stop reading
	slow        bool         // a slow consumer: its latencies are kept apart
	connects    atomic.Int64 // connections made
	down        atomic.Int64 // unix ns since when it is disconnected; 0 when connected
	lastDown    atomic.Int64 // ns the last reconnection took
	reconnMax   atomic.Int64 // longest disconnection the client knew of, ns
	connectedAt atomic.Int64 // unix ns of the last connection

	// Owned by the reader goroutine until it has ended.
	st     stream
	gaps   int64
	errors int64
}

// fleet is the subscribers of one transport run.
type fleet struct {
	env       *dialEnv
	subs      []*subscriber
	lat       *latencies   // fast clients
	slowLat   *latencies   // slow consumers
	measure   atomic.Value // [2]time.Time: scheduled-time window whose latencies count
	delivered atomic.Int64 // sequence-numbered deliveries, all of them
	wg        sync.WaitGroup
	cancel    context.CancelFunc
	ctx       context.Context
	faultAt   atomic.Int64 // unix ns of the fault, 0 if none
	// bufferSize is each client's Next buffer; set before add.
	bufferSize int
	// dialing bounds the first connections in flight: thousands of
	// handshakes at once (QUIC above all) overflow the UDP buffers and
	// stall in retransmission timeouts.
	dialing chan struct{}

	causesMu sync.Mutex
	causes   map[string]int // guarded by causesMu: why connections ended, by kind
}

func newFleet(ctx context.Context, env *dialEnv) *fleet {
	f := &fleet{env: env, lat: newLatencies(), slowLat: newLatencies()}
	f.ctx, f.cancel = context.WithCancel(ctx)
	f.measure.Store([2]time.Time{})
	f.bufferSize = 256
	f.dialing = make(chan struct{}, 200)
	return f
}

// add starts a subscriber: user, the channel it checks besides its own
// (empty: its own user channel), connected to an instance's URLs.
func (f *fleet) add(tk *tokens, user string, channel int, chanName string, inst int, plainURL, tlsURL string, extra []string) error {
	s := &subscriber{idx: len(f.subs), user: user, channel: channel, chanName: chanName, inst: inst}
	cfg := f.env.clientConfig(s.idx, plainURL, tlsURL)
	cfg.Channels = extra
	cfg.BufferSize = f.bufferSize
	cfg.Backoff = client.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	cfg.HealthyAfter = time.Second
	tokenBase := plainURL
	cfg.Token = func(ctx context.Context) (string, error) { return tk.get(ctx, tokenBase, user, extra) }
	// The dialing slot is released once, and only if it was taken: a
	// client closed before its turn (the run ended early) holds none.
	var release sync.Once
	var holds atomic.Bool
	done := func() {
		if holds.Load() {
			release.Do(func() { <-f.dialing })
		}
	}
	cfg.OnState = func(st client.State) {
		switch st.Phase {
		case client.Connected, client.Closed:
			done()
		}
		switch st.Phase {
		case client.Connected:
			s.connects.Add(1)
			s.connectedAt.Store(time.Now().UnixNano())
			if d := s.down.Swap(0); d != 0 {
				took := time.Now().UnixNano() - d
				s.lastDown.Store(took)
				if took > s.reconnMax.Load() {
					s.reconnMax.Store(took)
				}
			}
		case client.Reconnecting, client.Connecting:
			s.down.CompareAndSwap(0, time.Now().UnixNano())
			if st.Phase == client.Reconnecting && st.Err != nil {
				f.cause(st.Err)
			}
		}
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	s.c = c
	f.subs = append(f.subs, s)
	f.wg.Go(func() {
		select {
		case f.dialing <- struct{}{}:
			holds.Store(true)
		case <-f.ctx.Done():
			return
		}
		t := time.AfterFunc(15*time.Second, done) // a slow first connection frees its slot
		defer t.Stop()
		_ = c.Run(f.ctx)
	})
	f.wg.Go(func() { f.read(s) })
	return nil
}

// cause counts why a connection ended (or an attempt failed), by kind.
func (f *fleet) cause(err error) {
	f.causesMu.Lock()
	defer f.causesMu.Unlock()
	if f.causes == nil {
		f.causes = map[string]int{}
	}
	f.causes[causeKind(err)]++
}

// causeKind names the kind of err: what noticed a dead server, or the
// error's own text without its addresses.
func causeKind(err error) string {
	var idle *quic.IdleTimeoutError
	var reset *quic.StatelessResetError
	var hs *quic.HandshakeTimeoutError
	var server *notify.Error
	switch {
	case errors.As(err, &idle):
		return "QUIC idle timeout"
	case errors.As(err, &hs):
		return "QUIC handshake timeout"
	case errors.As(err, &reset):
		return "QUIC stateless reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (ICMP port unreachable, TCP RST)"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "end of stream"
	case errors.As(err, &server):
		// One per channel otherwise: the channel is in the text.
		return "server error " + server.Code
	}
	msg := err.Error()
	if len(msg) > 60 {
		msg = msg[:60]
	}
	return msg
}

// causesNote is the note that counts why connections ended.
func (f *fleet) causesNote() string {
	f.causesMu.Lock()
	defer f.causesMu.Unlock()
	if len(f.causes) == 0 {
		return ""
	}
	kinds := slices.Sorted(maps.Keys(f.causes))
	slices.SortStableFunc(kinds, func(a, b string) int { return f.causes[b] - f.causes[a] })
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s %d", k, f.causes[k])
	}
	return "why connections ended (client side): " + strings.Join(parts, ", ")
}

func (f *fleet) read(s *subscriber) {
	for {
		for s.paused.Load() {
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		e, err := s.c.Next(f.ctx)
		if err != nil {
			return
		}
		switch e.Type {
		case notify.TypeMessage:
			if e.Channel != s.chanName {
				continue
			}
			seq, sent, ok := parseData(e.Data)
			if !ok {
				s.ready.Store(true) // a probe
				continue
			}
			now := time.Now()
			s.st.observe(seq)
			f.delivered.Add(1)
			w := f.measure.Load().([2]time.Time)
			if at := time.Unix(0, sent); !w[0].IsZero() && !at.Before(w[0]) && at.Before(w[1]) {
				if s.slow {
					f.slowLat.record(s.idx, now.Sub(at))
				} else {
					f.lat.record(s.idx, now.Sub(at))
				}
			}
		case notify.TypeGap:
			s.gaps++
		case notify.TypeError:
			s.errors++
		}
	}
}

// waitReady publishes probes until every subscriber received one (it is
// then subscribed end to end) or the timeout passes.
func (f *fleet) waitReady(ctx context.Context, a *api, baseOf func(sub *subscriber) string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		byBase := map[string][]publication{}
		seen := map[string]bool{}
		notReady := 0
		for _, s := range f.subs {
			if s.ready.Load() {
				continue
			}
			notReady++
			if !seen[s.chanName] {
				seen[s.chanName] = true
				b := baseOf(s)
				byBase[b] = append(byBase[b], publication{Channel: s.chanName, Data: []byte(`{"probe":1}`)})
			}
		}
		if notReady == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d clients not subscribed after %v", notReady, len(f.subs), timeout)
		}
		for b, pubs := range byBase {
			for len(pubs) > 0 {
				n := min(len(pubs), 1000)
				if err := a.publish(ctx, b, pubs[:n]); err != nil && ctx.Err() != nil {
					return err
				}
				pubs = pubs[n:]
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitDelivered waits until every subscriber has received everything
// published on its channel, or deliveries made no progress for 5 s (or
// idle, if shorter) while every client was connected: a backlog still
// draining, or clients still reconnecting (a QUIC client notices a dead
// server only at its idle timeout), are waited for, up to ten times idle. What is missing after
// that counts as lost. (Publishes that failed are owed too: one refused
// after Redis stored it is delivered, so a count without them could end the
// wait while another subscriber still misses a message.)
func (f *fleet) waitDelivered(p *publisher, idle time.Duration) {
	var owed int64
	for _, s := range f.subs {
		owed += p.published(s.channel)
	}
	stall := min(idle, 5*time.Second)
	last, lastAt, deadline := f.delivered.Load(), time.Now(), time.Now().Add(10*idle)
	connected, checked := false, time.Time{}
	for time.Now().Before(deadline) {
		n := f.delivered.Load()
		if n >= owed {
			return
		}
		if time.Since(checked) > 250*time.Millisecond { // State() of every client is not free
			connected, checked = f.allConnected(), time.Now()
		}
		if n != last || !connected {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > stall {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fleet) allConnected() bool {
	for _, s := range f.subs {
		if s.c.State().Phase != client.Connected {
			return false
		}
	}
	return true
}

// close stops every client and waits for the readers.
func (f *fleet) close() {
	f.cancel()
	for _, s := range f.subs {
		_ = s.c.Close()
	}
	f.wg.Wait()
}

// correctness counts, after close, what each subscriber received against
// what was published on its channel.
func (f *fleet) correctness(p *publisher) Correctness {
	var c Correctness
	for _, s := range f.subs {
		pub := p.published(s.channel)
		failed := p.failedOf(s.channel)
		c.Expected += pub - int64(len(failed))
		c.Delivered += s.st.received
		c.Lost += s.st.lost(pub, failed)
		c.Duplicate += s.st.dups
		c.Reordered += s.st.reordered
		c.Gaps += s.gaps
		c.Errors += s.errors
	}
	c.PubFailed = p.failures.Load()
	return c
}
