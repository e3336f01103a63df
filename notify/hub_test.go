package notify_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/brokertest"
)

func newMemHub(t *testing.T, cfg notify.HubConfig) (*notify.MemoryBroker, *notify.Hub) {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	h := notify.NewHub(b, cfg)
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	return b, h
}

func TestConnLimits(t *testing.T) {
	_, h := newMemHub(t, notify.HubConfig{MaxChannels: 2, MaxConnsPerUser: 2})
	ctx := context.Background()
	wake, ready := brokertest.Wakeup()
	c1, err := h.Connect("42", notify.ConnOptions{Wake: wake})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Connect("42", notify.ConnOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Connect("42", notify.ConnOptions{}); !errors.Is(err, notify.ErrTooManyConnections) {
		t.Fatalf("third connection of user 42: err = %v; want too_many_connections", err)
	}
	if _, err := h.Connect("43", notify.ConnOptions{}); err != nil {
		t.Fatalf("another user is not limited by user 42's connections: %v", err)
	}
	for _, bad := range []string{"a b", "x{y}", string(make([]byte, 65))} {
		if _, err := h.Connect(bad, notify.ConnOptions{}); !errors.Is(err, notify.ErrInvalidUser) {
			t.Errorf("Connect(%q): err = %v; want invalid_user", bad, err)
		}
	}
	cl := brokertest.Drain(t, c1, ready)
	cl.Subscribe(t, "a", "")
	if err := c1.Subscribe(ctx, notify.SubscribeRequest{Channel: "a"}); !errors.Is(err, notify.ErrAlreadySubscribed) {
		t.Fatalf("second subscribe to a: err = %v; want already_subscribed", err)
	}
	cl.Subscribe(t, "b", "")
	if err := c1.Subscribe(ctx, notify.SubscribeRequest{Channel: "c"}); !errors.Is(err, notify.ErrTooManyChannels) {
		t.Fatalf("third channel: err = %v; want too_many_channels", err)
	}
	if got := c1.Channels(); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("channels after rejected subscribes = %v; want [a b]", got)
	}
	// Closing frees the user's slot.
	cl.Close()
	if _, err := h.Connect("42", notify.ConnOptions{}); err != nil {
		t.Fatalf("connect after a close: %v", err)
	}
	if n := len(h.UserConns("42")); n != 2 {
		t.Fatalf("user 42 has %d connections; want 2", n)
	}
}

func TestClosedConnRefusesWork(t *testing.T) {
	_, h := newMemHub(t, notify.HubConfig{})
	c, _ := h.Connect("", notify.ConnOptions{})
	c.Close(nil)
	c.Close(notify.ErrLagged) // the first reason wins
	if err := c.Err(); !errors.Is(err, notify.ErrClosed) {
		t.Fatalf("Err() = %v; want closed", err)
	}
	ctx := context.Background()
	if err := c.Subscribe(ctx, notify.SubscribeRequest{Channel: "a"}); !errors.Is(err, notify.ErrClosed) {
		t.Fatalf("subscribe on a closed conn: %v", err)
	}
	if err := c.Send(ctx, &notify.Envelope{Type: notify.TypePong}); !errors.Is(err, notify.ErrClosed) {
		t.Fatalf("send on a closed conn: %v", err)
	}
	if st := h.Stats(); st.Connections != 0 {
		t.Fatalf("closed conn still counted: %+v", st)
	}
}

func TestHubCloseDisconnectsEveryone(t *testing.T) {
	_, h := newMemHub(t, notify.HubConfig{})
	cl := brokertest.Connect(t, h)
	cl.Subscribe(t, "a", "")
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cl.Conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed by Hub.Close")
	}
	if err := cl.Conn.Err(); !errors.Is(err, notify.ErrShutdown) {
		t.Fatalf("Err() = %v; want shutdown", err)
	}
	if _, err := h.Connect("", notify.ConnOptions{}); !errors.Is(err, notify.ErrShutdown) {
		t.Fatalf("Connect after Close: %v; want shutdown", err)
	}
	if st := h.Stats(); st.Channels != 0 || st.Connections != 0 {
		t.Fatalf("after Close: %+v", st)
	}
}

// A notice sent while the queue is full waits for the writer instead of
// dropping or overflowing.
func TestSendWaitsForRoom(t *testing.T) {
	_, h := newMemHub(t, notify.HubConfig{QueueLength: 2})
	c, _ := h.Connect("", notify.ConnOptions{})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := c.Send(ctx, &notify.Envelope{Type: notify.TypePong}); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := c.Send(short, &notify.Envelope{Type: notify.TypePong}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send into a full queue: %v; want the context's deadline", err)
	}
	done := make(chan error)
	go func() { done <- c.Send(ctx, &notify.Envelope{Type: notify.TypePong, Ref: "3"}) }()
	time.Sleep(10 * time.Millisecond)
	if got := c.Drain(nil); len(got) != 2 {
		t.Fatalf("drained %d; want 2", len(got))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := c.Drain(nil); len(got) != 1 || got[0].Ref != "3" {
		t.Fatalf("after room was made, drained %v", got)
	}
}

// A resume longer than the queue replays through it as the writer drains,
// without lagging.
func TestLongReplayFlowsThroughSmallQueue(t *testing.T) {
	b, h := newMemHub(t, notify.HubConfig{QueueLength: 8, HistoryPage: 5})
	ctx := context.Background()
	var ids []notify.ID
	for i := 0; i < 100; i++ {
		ids = append(ids, brokertest.Publish(t, ctx, b, "long", i))
	}
	cl := brokertest.Connect(t, h)
	cl.Subscribe(t, "long", "0-0")
	got := cl.WaitMessages(t, "long", 100, 10*time.Second)
	for i := range ids {
		if got[i].ID != ids[i] {
			t.Fatalf("message %d: %v; want %v", i, got[i].ID, ids[i])
		}
	}
	if err := cl.Conn.Err(); err != nil {
		t.Fatalf("connection closed: %v", err)
	}
}

func TestLingerKeepsBrokerSubscriptionBriefly(t *testing.T) {
	_, h := newMemHub(t, notify.HubConfig{Linger: 100 * time.Millisecond})
	cl := brokertest.Connect(t, h)
	cl.Subscribe(t, "a", "")
	if err := cl.Conn.Unsubscribe(context.Background(), "a", ""); err != nil {
		t.Fatal(err)
	}
	if n := h.Stats().Channels; n != 1 {
		t.Fatalf("channel dropped at once; want it kept for the linger")
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.Stats().Channels != 0 {
		if time.Now().After(deadline) {
			t.Fatal("channel subscription never dropped after the linger")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// User channels are ordinary channels named user:<id>.
func TestUserChannel(t *testing.T) {
	b, h := newMemHub(t, notify.HubConfig{})
	wake, ready := brokertest.Wakeup()
	c, _ := h.Connect("42", notify.ConnOptions{Wake: wake})
	cl := brokertest.Drain(t, c, ready)
	cl.Subscribe(t, notify.UserChannel("42"), "")
	brokertest.Publish(t, context.Background(), b, "user:42", 1)
	cl.WaitMessages(t, "user:42", 1, 5*time.Second)
}
