package client

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// fakeConn is a connection the test drives: what it is given to read, and
// what the client sent. It blocks on channels only, so that it works in a
// synctest bubble.
type fakeConn struct {
	envs   chan *notify.Envelope
	end    chan error
	sent   chan wire.Command
	closed chan struct{}
	once   sync.Once
}

func newFakeConn() *fakeConn {
	return &fakeConn{
		envs:   make(chan *notify.Envelope),
		end:    make(chan error, 1),
		sent:   make(chan wire.Command, 64),
		closed: make(chan struct{}),
	}
}

func (f *fakeConn) Read(ctx context.Context) (*notify.Envelope, error) {
	select {
	case e := <-f.envs:
		return e, nil
	case err := <-f.end:
		return nil, err
	case <-f.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeConn) Send(ctx context.Context, cmd wire.Command) error {
	select {
	case <-f.closed:
		return net.ErrClosed
	default:
	}
	f.sent <- cmd
	return nil
}

func (f *fakeConn) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

// give hands e to the client's reader, waiting until it is taken.
func (f *fakeConn) give(t testing.TB, es ...*notify.Envelope) {
	t.Helper()
	for _, e := range es {
		select {
		case f.envs <- e:
		case <-f.closed:
			t.Fatalf("connection closed before %s was read", e.JSON())
		}
	}
}

// fakeDialer answers each dial with the next scripted connection or error
// and records what was asked and when.
type fakeDialer struct {
	mu     sync.Mutex
	script []any // *fakeConn or error; when empty, a fresh fakeConn
	calls  []dialCall
	conns  chan *fakeConn // every connection handed out
}

type dialCall struct {
	at  time.Time
	req dialRequest
}

func newFakeDialer(script ...any) *fakeDialer {
	return &fakeDialer{script: script, conns: make(chan *fakeConn, 64)}
}

func (d *fakeDialer) dial(_ context.Context, req dialRequest) (conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, dialCall{at: time.Now(), req: req})
	var next any
	if len(d.script) > 0 {
		next, d.script = d.script[0], d.script[1:]
	}
	switch v := next.(type) {
	case error:
		return nil, v
	case *fakeConn:
		d.conns <- v
		return v, nil
	}
	f := newFakeConn()
	d.conns <- f
	return f, nil
}

func (d *fakeDialer) callList() []dialCall {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]dialCall(nil), d.calls...)
}

// maxRand always draws the largest value: each delay is its ceiling.
type maxRand struct{}

func (maxRand) Int64N(n int64) int64 { return n - 1 }

// zeroRand always draws 0.
type zeroRand struct{}

func (zeroRand) Int64N(int64) int64 { return 0 }

// newFakeClient returns a client on d with a counting token source.
func newFakeClient(t testing.TB, d *fakeDialer, cfg Config) (*Client, *int) {
	t.Helper()
	tokens := new(int)
	cfg.URL = "http://herald.test"
	cfg.Token = func(context.Context) (string, error) {
		*tokens++ // the loop calls Token from one goroutine
		return "token", nil
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.dial = d.dial
	return c, tokens
}

func msg(channel string, ms uint64) *notify.Envelope {
	return &notify.Envelope{Type: notify.TypeMessage, Channel: channel, ID: notify.ID{Ms: ms}, Data: []byte(`{}`)}
}

func subscribedAt(channel string, ms uint64) *notify.Envelope {
	return &notify.Envelope{Type: notify.TypeSubscribed, Channel: channel, ID: notify.ID{Ms: ms}}
}
