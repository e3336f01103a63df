package brokertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
)

// testRandomizedResume is the property test of promises 2 and 3: publishers
// on two instances, subscribers that connect to a random instance, read for a
// random while, drop the connection and resume from their positions — often
// mid-replay, sometimes lagging out of a small queue. Every subscriber must
// end with exactly the published sequence of every channel.
func testRandomizedResume(t *testing.T, backend Backend) {
	newInstance := backend(t, Options{HistorySize: 10000})
	ctx := ctxT(t)
	brokers := []notify.Broker{newInstance(), newInstance()}
	var hubs []*notify.Hub
	for _, b := range brokers {
		hubs = append(hubs, newHub(t, b, notify.HubConfig{QueueLength: 32, HistoryPage: 7, Linger: 20 * time.Millisecond}))
	}
	channels := []string{"prop.a", "prop.b", "prop.c"}
	const publishers, perPublisher, subscribers = 3, 300, 8

	var (
		pubMu     sync.Mutex
		published = map[string][]notify.ID{}
		pubWG     sync.WaitGroup
		pubDone   = make(chan struct{})
	)
	for p := 0; p < publishers; p++ {
		pubWG.Add(1)
		go func(seed uint64) {
			defer pubWG.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < perPublisher; i++ {
				ch := channels[rng.IntN(len(channels))]
				id, err := brokers[rng.IntN(len(brokers))].Publish(ctx, notify.Publication{Channel: ch, Data: []byte(fmt.Sprint(i))})
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				pubMu.Lock()
				published[ch] = append(published[ch], id)
				pubMu.Unlock()
				time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond)
			}
		}(uint64(p))
	}
	go func() { pubWG.Wait(); close(pubDone) }()

	final := func() map[string]notify.ID {
		<-pubDone
		pubMu.Lock()
		defer pubMu.Unlock()
		f := map[string]notify.ID{}
		for ch, ids := range published {
			f[ch] = slices.MaxFunc(ids, notify.ID.Compare)
		}
		return f
	}

	results := make([]map[string][]notify.ID, subscribers)
	rounds := make([]int, subscribers)
	var subWG sync.WaitGroup
	for s := 0; s < subscribers; s++ {
		subWG.Add(1)
		go func(s int) {
			defer subWG.Done()
			results[s], rounds[s] = resumingSubscriber(t, ctx, uint64(100+s), hubs, channels, pubDone, final)
		}(s)
	}
	subWG.Wait()
	if t.Failed() {
		return
	}
	want := map[string][]notify.ID{}
	for ch, ids := range published {
		sorted := slices.Clone(ids)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].Compare(sorted[j]) < 0 })
		want[ch] = sorted
	}
	for s, got := range results {
		for _, ch := range channels {
			if !slices.Equal(got[ch], want[ch]) {
				t.Errorf("subscriber %d on %s: received %d messages, want exactly the %d published in order", s, ch, len(got[ch]), len(want[ch]))
			}
		}
	}
	lagged := uint64(0)
	for _, h := range hubs {
		lagged += h.Stats().Lagged()
	}
	t.Logf("%d subscribers × %d channels, %d messages; reconnects per subscriber %v; lagged disconnects %d",
		subscribers, len(channels), publishers*perPublisher, rounds, lagged)
}

// resumingSubscriber connects, subscribes every channel from its positions,
// reads for a random while and disconnects, until it has everything up to the
// final IDs. It returns what it received per channel and its round count.
func resumingSubscriber(t *testing.T, ctx context.Context, seed uint64, hubs []*notify.Hub, channels []string,
	pubDone <-chan struct{}, final func() map[string]notify.ID) (map[string][]notify.ID, int) {
	rng := rand.New(rand.NewPCG(seed, 2))
	pos := map[string]notify.ID{}
	got := map[string][]notify.ID{}
	deadline := time.Now().Add(60 * time.Second)
	var finalIDs map[string]notify.ID
	for round := 1; ; round++ {
		select {
		case <-pubDone:
			if finalIDs == nil {
				finalIDs = final()
			}
			if caughtUpTo(pos, finalIDs) {
				return got, round - 1
			}
		default:
		}
		if time.Now().After(deadline) {
			t.Errorf("subscriber %d not caught up after 60s: at %v", seed, pos)
			return got, round
		}
		wake, ready := Wakeup()
		c, err := hubs[rng.IntN(len(hubs))].Connect("", notify.ConnOptions{Wake: wake})
		if err != nil {
			t.Errorf("connect: %v", err)
			return got, round
		}
		since := make(map[string]string, len(channels))
		for _, ch := range channels {
			since[ch] = pos[ch].String()
		}
		stop, drained := make(chan struct{}), make(chan struct{})
		var fail error
		// One round in four reads slowly, so that some connections lag
		// out of their queue and must resume.
		slow := rng.IntN(4) == 0
		go func() {
			defer close(drained)
			var batch []*notify.Envelope
			for {
				if slow {
					time.Sleep(3 * time.Millisecond)
				}
				select {
				case <-ready:
				case <-c.Done():
				case <-stop:
					return
				}
				batch = c.Drain(batch[:0])
				for _, e := range batch {
					switch e.Type {
					case notify.TypeMessage:
						if !e.ID.After(pos[e.Channel]) {
							fail = fmt.Errorf("round %d: %s message %v after %v: duplicate or out of order", round, e.Channel, e.ID, pos[e.Channel])
							return
						}
						pos[e.Channel] = e.ID
						got[e.Channel] = append(got[e.Channel], e.ID)
					case notify.TypeGap:
						fail = fmt.Errorf("round %d: unexpected gap %s", round, e.JSON())
						return
					}
				}
			}
		}()
		for _, ch := range channels {
			err := c.Subscribe(ctx, notify.SubscribeRequest{Channel: ch, Since: since[ch]})
			if err != nil && !errors.Is(err, notify.ErrLagged) && !errors.Is(err, notify.ErrClosed) {
				t.Errorf("subscribe %s since %s: %v", ch, since[ch], err)
			}
		}
		select {
		case <-time.After(time.Duration(rng.IntN(40)) * time.Millisecond):
		case <-c.Done():
		}
		close(stop)
		<-drained
		c.Close(nil)
		if fail != nil {
			t.Errorf("subscriber %d: %v", seed, fail)
			return got, round
		}
	}
}

func caughtUpTo(pos, final map[string]notify.ID) bool {
	for ch, id := range final {
		if pos[ch] != id {
			return false
		}
	}
	return true
}

// testStalledSubscriber checks promise 4: a subscriber that stops reading is
// disconnected with ErrLagged once its bounded queue fills, the others keep
// receiving promptly, and the stalled one resumes without loss.
func testStalledSubscriber(t *testing.T, backend Backend) {
	b := backend(t, Options{})()
	ctx := ctxT(t)
	const queue, total = 64, 400
	h := newHub(t, b, notify.HubConfig{QueueLength: queue})
	stalled := Connect(t, h)
	stalled.Subscribe(t, "bcast", "")
	stalled.WaitFor(t, 5*time.Second, "subscribed", func(e []*notify.Envelope) bool { return len(e) == 1 })
	stalled.Pause()
	var fast []*Client
	for i := 0; i < 5; i++ {
		cl := Connect(t, h)
		cl.Subscribe(t, "bcast", "")
		fast = append(fast, cl)
	}
	sent := make(map[notify.ID]time.Time, total)
	var ids []notify.ID
	// Bursts well under the queue bound: the fast subscribers keep up, the
	// stalled one overflows after a few.
	const burst = 16
	for i := 0; i < total; i++ {
		start := time.Now()
		id := Publish(t, ctx, b, "bcast", i)
		sent[id] = start
		ids = append(ids, id)
		if (i+1)%burst == 0 {
			for _, cl := range fast {
				cl.WaitMessages(t, "bcast", i+1, 10*time.Second)
			}
		}
	}
	var worst time.Duration
	var lat []time.Duration
	for i, cl := range fast {
		checkExact(t, fmt.Sprintf("fast subscriber %d", i), cl.WaitMessages(t, "bcast", total, 10*time.Second), ids)
		envs, at := cl.Envelopes(), cl.ReceivedAt()
		for j, e := range envs {
			if e.Type == notify.TypeMessage {
				d := at[j].Sub(sent[e.ID])
				lat = append(lat, d)
				worst = max(worst, d)
			}
		}
	}
	select {
	case <-stalled.Conn.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("stalled subscriber was not disconnected")
	}
	if err := stalled.Conn.Err(); !errors.Is(err, notify.ErrLagged) {
		t.Fatalf("stalled subscriber closed with %v; want ErrLagged", err)
	}
	slices.Sort(lat)
	t.Logf("with one stalled subscriber (queue %d), fast subscribers' delivery latency: p50 %v, p99 %v, max %v",
		queue, lat[len(lat)/2], lat[len(lat)*99/100], worst)
	// Generous bound: a fan-out that waited on the stalled client would
	// never deliver at all.
	if worst > 5*time.Second {
		t.Fatalf("fast subscribers waited up to %v", worst)
	}
	if st := h.Stats(); st.Dropped[notify.DropQueueOverflow] != 1 || st.Lagged() != 1 {
		t.Fatalf("hub counted %d queue overflows, %d lagged connections; want 1 and 1", st.Dropped[notify.DropQueueOverflow], st.Lagged())
	}
	// The stalled client resumes from what it had (nothing) and gets
	// everything exactly once.
	again := Connect(t, h)
	again.Subscribe(t, "bcast", "0-0")
	checkExact(t, "resumed stalled subscriber", again.WaitMessages(t, "bcast", total, 10*time.Second), ids)
}
