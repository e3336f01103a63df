// Package conformance is the suite every Herald transport passes: the same
// scenarios — receive, order, resume, gap, access control, bad input, a
// stalled client, drain, dead peers — run against WebSocket, SSE on each HTTP
// version, and HTTP/3 streams, so that the transports differ in direction
// and overhead, never in meaning (promise 5).
package conformance

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// Transport is the adapter a transport's tests give the suite.
type Transport interface {
	// Start serves cfg on a new test server (closed when t ends) and
	// returns how to dial it.
	Start(t testing.TB, cfg wire.Config) Dialer
}

// Dialer connects clients to a started server.
type Dialer interface {
	Dial(ctx context.Context, opts DialOptions) (Client, error)
	// Duplex reports whether clients can send commands.
	Duplex() bool
	// OversizeCloses reports whether an oversized command closes the
	// connection (else it is answered with an error and the connection
	// stays usable).
	OversizeCloses() bool
}

// DialOptions are what a scenario asks of a connection.
type DialOptions struct {
	Token    string
	Channels []string
	Since    string // a cursor
	Origin   string // sent as the Origin header if set
}

// Client is one connection.
type Client interface {
	// Read returns the next envelope. When the server ends the connection
	// it returns an error: io.EOF, or one that errors.Is the reason
	// (notify.ErrLagged, notify.ErrShutdown) where the transport carries
	// one.
	Read(ctx context.Context) (*notify.Envelope, error)
	// Send sends a command line as it is (duplex transports only).
	Send(ctx context.Context, line []byte) error
	// Cursor is the transport's own resume cursor if it has one (SSE:
	// the last event id), else "".
	Cursor() string
	// Drop ends the connection abruptly, as a lost network would.
	Drop()
	// Freeze makes the client stop answering heartbeats while keeping the
	// connection open: a dead peer. A transport that cannot emulate one in
	// this process returns why (the scenario is then skipped with that
	// reason, which must name the test that covers it instead).
	Freeze() error
}

// Tokens the suite's authenticator knows.
const (
	TokenAlice = "alice-token" // user alice: subscribe news, room.*; publish room.*
	TokenBob   = "bob-token"   // user bob: subscribe news only
)

// PresenceToken returns a token the suite's authenticator knows for user (a
// valid user ID): subscribe room.*, with presence on room.*.
func PresenceToken(user string) string { return "presence:" + user }

// ExpiringToken returns a token the suite's authenticator knows for user
// (alice or bob, with the grants of TokenAlice or TokenBob) that expires at
// exp.
func ExpiringToken(user string, exp time.Time) string {
	return "exp:" + user + ":" + strconv.FormatInt(exp.UnixMilli(), 10)
}

// suiteAuth is the suite's authenticator: the fixed tokens, and the
// expiring ones of ExpiringToken. It verifies refresh tokens too.
type suiteAuth struct{}

var _ wire.TokenVerifier = suiteAuth{}

func auth() wire.Authenticator { return suiteAuth{} }

func (suiteAuth) Authenticate(r *http.Request) (*notify.Grants, error) {
	return suiteAuth{}.VerifyToken(r.Context(), wire.Token(r))
}

func (suiteAuth) VerifyToken(_ context.Context, token string) (*notify.Grants, error) {
	switch token {
	case TokenAlice:
		return aliceGrants(), nil
	case TokenBob:
		return bobGrants(), nil
	case "":
		return nil, notify.Errorf(notify.ErrUnauthorized, "no token")
	}
	if user, ok := strings.CutPrefix(token, "presence:"); ok && notify.ValidateUser(user) == nil {
		return &notify.Grants{User: user, Subscribe: []string{"room."}, Presence: []string{"room."}}, nil
	}
	rest, ok := strings.CutPrefix(token, "exp:")
	user, ms, ok2 := strings.Cut(rest, ":")
	exp, err := strconv.ParseInt(ms, 10, 64)
	if !ok || !ok2 || err != nil || (user != "alice" && user != "bob") {
		return nil, notify.Errorf(notify.ErrUnauthorized, "unknown token")
	}
	if time.Now().UnixMilli() >= exp {
		return nil, notify.Errorf(notify.ErrUnauthorized, "invalid token: expired")
	}
	g := bobGrants()
	if user == "alice" {
		g = aliceGrants()
	}
	g.Expires = time.UnixMilli(exp)
	return g, nil
}

func aliceGrants() *notify.Grants {
	return &notify.Grants{User: "alice", Subscribe: []string{"news", "room."}, Publish: []string{"room."}}
}

func bobGrants() *notify.Grants { return &notify.Grants{User: "bob", Subscribe: []string{"news"}} }

// env is one scenario's server side.
type env struct {
	t      *testing.T
	broker *notify.MemoryBroker
	hub    *notify.Hub
	dialer Dialer
}

type setup struct {
	history  int
	hub      notify.HubConfig
	wire     wire.Config
	presence bool // the memory broker is the hub's Presence, flushing every presenceInterval
}

// presenceInterval is the presence batching interval of the scenarios that
// use presence: short, so that they wait little.
const presenceInterval = 20 * time.Millisecond

func start(t *testing.T, tr Transport, s setup) *env {
	mc := notify.MemoryConfig{HistorySize: s.history}
	if s.presence {
		mc.Presence.Interval = presenceInterval
	}
	b := notify.NewMemoryBroker(mc)
	if s.presence {
		s.hub.Presence = b
	}
	h := notify.NewHub(b, s.hub)
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	cfg := s.wire
	cfg.Hub, cfg.Auth = h, auth()
	return &env{t: t, broker: b, hub: h, dialer: tr.Start(t, cfg)}
}

func (e *env) dial(opts DialOptions) Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dialer.Dial(ctx, opts)
	if err != nil {
		e.t.Fatalf("dial %+v: %v", opts, err)
	}
	e.t.Cleanup(c.Drop)
	return c
}

func (e *env) publish(channel string, n int) notify.ID {
	e.t.Helper()
	id, err := e.broker.Publish(context.Background(), notify.Publication{Channel: channel, Event: "test", Data: []byte(`{"n":` + itoa(n) + `}`)})
	if err != nil {
		e.t.Fatalf("publish: %v", err)
	}
	return id
}

// waitConns waits until the hub has n connections.
func (e *env) waitConns(n int, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for e.hub.Stats().Connections != n {
		if time.Now().After(deadline) {
			e.t.Fatalf("hub has %d connections after %v; want %d", e.hub.Stats().Connections, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitUserConns waits until user has n connections.
func (e *env) waitUserConns(user string, n int, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for len(e.hub.UserConns(user)) != n {
		if time.Now().After(deadline) {
			e.t.Fatalf("user %s has %d connections after %v; want %d", user, len(e.hub.UserConns(user)), timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reader reads a client's envelopes and tracks its positions.
type reader struct {
	t   *testing.T
	c   Client
	pos *wire.Positions
	all []*notify.Envelope
}

func newReader(t *testing.T, c Client, channels []string) *reader {
	return &reader{t: t, c: c, pos: wire.NewPositions(channels)}
}

// next reads one envelope or fails.
func (r *reader) next() *notify.Envelope {
	r.t.Helper()
	e, err := r.read(10 * time.Second)
	if err != nil {
		r.t.Fatalf("read: %v (after %d envelopes)", err, len(r.all))
	}
	return e
}

func (r *reader) read(timeout time.Duration) (*notify.Envelope, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	e, err := r.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	r.pos.Update(e)
	r.all = append(r.all, e)
	return e, nil
}

// expect reads the next envelope and checks its type (and channel if set).
func (r *reader) expect(typ, channel string) *notify.Envelope {
	r.t.Helper()
	e := r.next()
	if e.Type != typ || (channel != "" && e.Channel != channel) {
		r.t.Fatalf("got %s; want a %s on %q", e.JSON(), typ, channel)
	}
	return e
}

// messages reads n message envelopes, skipping nothing: any other envelope
// fails.
func (r *reader) messages(n int) []*notify.Envelope {
	r.t.Helper()
	var ms []*notify.Envelope
	for len(ms) < n {
		e := r.next()
		if e.Type != notify.TypeMessage {
			r.t.Fatalf("got %s while waiting for message %d of %d", e.JSON(), len(ms)+1, n)
		}
		ms = append(ms, e)
	}
	return ms
}

// cursor is the client's resume cursor: its own if the transport has one
// (checked against the suite's), else the suite's.
func (r *reader) cursor() string {
	r.t.Helper()
	own := string(r.pos.AppendCursor(nil))
	if c := r.c.Cursor(); c != "" {
		if c != own {
			r.t.Fatalf("transport cursor %q; the envelopes received say %q", c, own)
		}
		return c
	}
	return own
}

// end reads until the connection ends and returns the envelopes read
// meanwhile and the final error.
func (r *reader) end(timeout time.Duration) ([]*notify.Envelope, error) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	var got []*notify.Envelope
	for {
		left := time.Until(deadline)
		if left <= 0 {
			r.t.Fatalf("connection did not end within %v", timeout)
		}
		e, err := r.read(left)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				r.t.Fatalf("connection did not end within %v (%d envelopes read)", timeout, len(got))
			}
			return got, err
		}
		got = append(got, e)
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
