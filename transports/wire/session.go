package wire

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/notify"
)

// Authenticator turns a request into the grants of its client. It returns
// a *notify.Error with code unauthorized for missing, invalid or expired
// credentials. One Authenticator serves the REST API and every transport.
type Authenticator interface {
	Authenticate(r *http.Request) (*notify.Grants, error)
}

// AuthFunc adapts a function to Authenticator.
type AuthFunc func(r *http.Request) (*notify.Grants, error)

// Authenticate implements Authenticator.
func (f AuthFunc) Authenticate(r *http.Request) (*notify.Grants, error) { return f(r) }

// TokenProtocolPrefix starts the WebSocket subprotocol that carries a token
// ("herald.token.<token>"), for browsers that keep tokens out of URLs (and
// so out of access logs). The server answers with the subprotocol
// "herald.v1", which the client must offer too.
const TokenProtocolPrefix = "herald.token."

// Token returns the credentials of r: the token query parameter (browsers
// cannot set headers on WebSocket and EventSource requests), an
// Authorization: Bearer header, or a WebSocket subprotocol
// herald.token.<token>.
func Token(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	for _, list := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(list, ",") {
			if t, ok := strings.CutPrefix(strings.TrimSpace(p), TokenProtocolPrefix); ok {
				return t
			}
		}
	}
	return ""
}

// Config is what every transport handler needs. Zero values are the
// defaults.
type Config struct {
	Hub  *notify.Hub   // required
	Auth Authenticator // required
	// Heartbeat is how often an idle connection is checked: WebSocket ping,
	// SSE comment line, HTTP/3 keep-alive. Default 25s.
	Heartbeat time.Duration
	// WriteTimeout bounds one write to a client; a client that does not
	// take a write in that time is disconnected. Default 10s.
	WriteTimeout time.Duration
	// MaxCommandSize bounds one client command (a WebSocket frame, an
	// HTTP/3 request line). Default notify.DefaultMaxPayload + 1 KiB.
	MaxCommandSize int
	// AllowedOrigins are the browser origins (scheme://host[:port], or
	// patterns with * as in "https://*.example.com") allowed to connect from
	// other sites. Same-site requests and non-browser clients (no Origin
	// header) are always allowed.
	AllowedOrigins []string
	// MaxBatch is the most envelopes one write carries. Zero (the
	// default) writes everything queued at once — coalescing, the main
	// lever of fan-out throughput; 1 writes each envelope on its own, for
	// comparison.
	MaxBatch int
	// WriterLinger is how long a connection's writer goroutine waits for
	// more to write once its queue is empty, before it exits (WebSocket,
	// SSE over HTTP/1.1): a busy connection keeps its writer instead of
	// starting one per message. Default 20ms; negative: none.
	WriterLinger time.Duration
	// WriteDelay, if positive, makes a woken writer wait this long before
	// it drains its queue, so that a busy connection's messages go out in
	// fewer, larger writes: fewer syscalls per message at the price of up
	// to WriteDelay more latency. Default 0 (off).
	WriteDelay time.Duration
	// Transport names the transport in metrics ("ws", "sse", "stream");
	// each handler sets it.
	Transport string
	// Observer, if set, is told of connections and writes, for metrics.
	Observer Observer
	// PublishLimiter, if set, is asked before each publish command with
	// the key "user:<id>"; a refusal answers rate_limited.
	PublishLimiter interface{ Allow(key string, n int) bool }
	// TokenRefreshGrace is how long a connection whose token expires is
	// warned before the expiry (an expiring notice) and kept after it,
	// waiting for a refresh command, before it is closed with
	// token_expired. Default DefaultTokenRefreshGrace.
	TokenRefreshGrace time.Duration
	// Logger; nil means silent.
	Logger *slog.Logger
}

// WithDefaults returns cfg with its defaults filled in.
func (cfg Config) WithDefaults() Config {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 25 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxCommandSize <= 0 {
		cfg.MaxCommandSize = notify.DefaultMaxPayload + 1024
	}
	if cfg.WriterLinger == 0 {
		cfg.WriterLinger = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Observer receives connection and delivery events, for metrics. Its
// methods are called on connection and write paths: they must be fast and
// must not block. transport is Config.Transport and the HTTP version, e.g.
// "ws", "sse/h2", "stream/h3".
type Observer interface {
	Opened(transport string)
	Closed(transport string, reason error)
	// Wrote reports a write of messages message envelopes, the oldest
	// published at oldest.
	Wrote(transport string, messages int, oldest time.Time)
	// Rejected reports a refused connection or command, by error code.
	Rejected(transport, code string)
}

// Session is the transport-independent side of one client connection.
type Session struct {
	Conn     *notify.Conn
	cfg      *Config
	Grants   *notify.Grants // the connect token's; a refresh replaces it (read it with grants while commands run)
	Channels []string       // the channels requested at connect, the user's own first
	cursor   Cursor
	presence *bool // the presence query parameter: nil, or false to opt the connect channels out
	hub      *notify.Hub
	limiter  interface{ Allow(key string, n int) bool }
	observer Observer
	label    string
	closed   atomic.Bool
	expiry   expiry
}

// Open authenticates r and registers its connection: the channels are the
// user's own plus each channel query parameter, the positions come from
// lastEventID (a cursor) or else the since query parameter; each takes part
// in its presence as the grants allow, unless the presence query parameter
// is false. Every channel is checked
// against the grants before anything is registered, so a refused request
// changes nothing. wake is the connection's writer wake-up (see
// notify.ConnOptions). The caller must start its writer, then call
// SubscribeInitial, and Close the session at the end.
func Open(r *http.Request, cfg *Config, lastEventID string, wake func()) (*Session, error) {
	label := cfg.Transport
	if label != "ws" && label != "" {
		label += "/h" + strconv.Itoa(r.ProtoMajor)
	}
	s, err := open(r, cfg, lastEventID, wake)
	if cfg.Observer != nil {
		if err != nil {
			cfg.Observer.Rejected(label, notify.ErrorEnvelope(err, "").Code)
		} else {
			cfg.Observer.Opened(label)
		}
	}
	if s != nil {
		s.cfg, s.observer, s.label = cfg, cfg.Observer, label
		s.setExpiry(s.Grants.Expires)
	}
	return s, err
}

func open(r *http.Request, cfg *Config, lastEventID string, wake func()) (*Session, error) {
	grants, err := cfg.Auth.Authenticate(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	var channels []string
	if grants.User != "" {
		channels = append(channels, notify.UserChannel(grants.User))
	}
	for _, ch := range q["channel"] {
		if err := notify.ValidateChannel(ch); err != nil {
			return nil, err
		}
		if err := grants.CheckSubscribe(ch); err != nil {
			return nil, err
		}
		if !slices.Contains(channels, ch) {
			// A copy: the query's strings share the request line's
			// memory (the token in it too), which would stay alive for
			// the connection's life.
			channels = append(channels, strings.Clone(ch))
		}
	}
	// A browser's automatic SSE reconnect resends its first URL (a stale
	// since) with a newer Last-Event-ID: the latter wins.
	since := lastEventID
	if since == "" {
		since = q.Get("since")
	}
	cursor, err := ParseCursor(since, channels)
	if err != nil {
		return nil, err
	}
	presence, err := presenceParam(q.Get("presence"))
	if err != nil {
		return nil, err
	}
	conn, err := cfg.Hub.Connect(grants.User, notify.ConnOptions{Wake: wake})
	if err != nil {
		return nil, err
	}
	return &Session{Conn: conn, Grants: grants, Channels: channels, cursor: cursor, presence: presence, hub: cfg.Hub, limiter: cfg.PublishLimiter}, nil
}

// presenceParam parses the presence query parameter: "false" opts every
// connect channel out of presence; empty or "true" leaves it to the grants
// (nil). Unlike a subscribe command's, true requires nothing: the user's
// own channel, always subscribed, may have no presence grant.
func presenceParam(v string) (*bool, error) {
	if v == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return nil, notify.Errorf(notify.ErrInvalidCommand, "presence must be true or false, not %q", truncate(v))
	}
	if b {
		return nil, nil
	}
	return &b, nil
}

// wantPresence decides whether a subscription to channel takes part in its
// presence: asked nil follows the grants (and is off on a server without
// presence), false opts out, true requires it.
func (s *Session) wantPresence(channel string, asked *bool) (bool, error) {
	on := s.hub.Presence() != nil
	if asked == nil {
		return on && s.grants().CanPresence(channel), nil
	}
	if !*asked {
		return false, nil
	}
	if err := s.grants().CheckPresence(channel); err != nil {
		return false, err
	}
	if !on {
		return false, notify.ErrPresenceDisabled
	}
	return true, nil
}

// subscribe subscribes channel with the presence the grants and asked
// allow (see wantPresence).
func (s *Session) subscribe(ctx context.Context, req notify.SubscribeRequest, asked *bool) error {
	var err error
	if req.Presence, err = s.wantPresence(req.Channel, asked); err != nil {
		return err
	}
	return s.Conn.Subscribe(ctx, req)
}

// Positions tracks the session's positions, starting from the cursor it
// resumes from, so that a cursor written before every channel's subscribed
// notice still carries the positions of the channels to come.
func (s *Session) Positions() *Positions {
	p := NewPositions(s.Channels)
	for i, ch := range p.channels {
		if id, err := notify.ParseID(s.cursor[ch]); err == nil {
			p.ids[i], p.known[i] = id, true
		}
	}
	return p
}

// SubscribeInitial subscribes the channels requested at connect, each from
// its cursor position. A channel that fails gets an error notice naming it;
// the others proceed. It returns false if the connection closed meanwhile.
func (s *Session) SubscribeInitial(ctx context.Context) bool {
	defer func() { s.cursor = nil }() // read once, here and by Positions before
	for _, ch := range s.Channels {
		err := s.subscribe(ctx, notify.SubscribeRequest{Channel: ch, Since: s.cursor[ch]}, s.presence)
		if err == nil {
			continue
		}
		if s.Conn.Err() != nil || ctx.Err() != nil {
			return false
		}
		e := notify.ErrorEnvelope(err, "")
		e.Channel = ch
		if s.Conn.Send(ctx, e) != nil {
			return false
		}
	}
	return true
}

// Handle runs one client command line. Every failure is answered with an
// error notice echoing the command's ref; the connection stays usable.
func (s *Session) Handle(ctx context.Context, line []byte) {
	cmd, err := DecodeCommand(line)
	if err == nil {
		err = s.run(ctx, cmd)
	}
	if err != nil && s.Conn.Err() == nil && ctx.Err() == nil {
		e := notify.ErrorEnvelope(err, cmd.Ref)
		e.Channel = cmd.Channel
		if s.observer != nil {
			s.observer.Rejected(s.label, e.Code)
		}
		_ = s.Conn.Send(ctx, e)
	}
}

func (s *Session) run(ctx context.Context, cmd Command) error {
	switch cmd.Type {
	case CmdSubscribe:
		if err := s.grants().CheckSubscribe(cmd.Channel); err != nil {
			return err
		}
		return s.subscribe(ctx, notify.SubscribeRequest{Channel: cmd.Channel, Since: cmd.Since, Ref: cmd.Ref}, cmd.Presence)
	case CmdUnsubscribe:
		return s.Conn.Unsubscribe(ctx, cmd.Channel, cmd.Ref)
	case CmdPublish:
		if err := s.grants().CheckPublish(cmd.Channel); err != nil {
			return err
		}
		if s.limiter != nil && !s.limiter.Allow("user:"+s.Conn.User(), 1) {
			return notify.Errorf(notify.ErrRateLimited, "publish rate limit exceeded")
		}
		// The broker validates the data and compacts it, once
		// (Publication.Normalize); the session does not know the
		// broker's size limit.
		id, err := s.hub.Broker().Publish(ctx, notify.Publication{Channel: cmd.Channel, Event: cmd.Event, Data: cmd.Data})
		if err != nil {
			return err
		}
		return s.Conn.Send(ctx, &notify.Envelope{Type: notify.TypeAck, Channel: cmd.Channel, ID: id, Ref: cmd.Ref})
	case CmdPing:
		return s.Conn.Send(ctx, &notify.Envelope{Type: notify.TypePong, Ref: cmd.Ref})
	case CmdRefresh:
		return s.refresh(ctx, cmd)
	}
	return nil
}

// Close closes the session's connection with reason (nil: the client left;
// a reason the hub gave first wins).
func (s *Session) Close(reason error) {
	s.stopExpiry()
	s.Conn.Close(reason)
	if s.closed.CompareAndSwap(false, true) && s.observer != nil {
		s.observer.Closed(s.label, s.Conn.Err())
	}
}

// Wrote tells the observer that batch was written.
func (s *Session) Wrote(batch []*notify.Envelope) {
	if s == nil || s.observer == nil {
		return
	}
	n, oldest := 0, int64(0)
	for _, e := range batch {
		if e.Type == notify.TypeMessage {
			if n == 0 || e.TS < oldest {
				oldest = e.TS
			}
			n++
		}
	}
	if n > 0 {
		s.observer.Wrote(s.label, n, time.UnixMilli(oldest))
	}
}

// EndsConnection reports whether writing e must end the connection: the
// reconnect advice of a drain.
func EndsConnection(e *notify.Envelope) bool { return e.Type == notify.TypeReconnect }

// Drain advises every connection of hub to reconnect — to any instance —
// after a random delay below spread, so that clients do not all come back at
// once. Each transport ends its connection once the advice is written. A
// connection whose queue is full is closed at once.
func Drain(hub *notify.Hub, spread time.Duration) {
	for _, c := range hub.Conns() {
		delay := int64(0)
		if spread > 0 {
			delay = rand.Int64N(spread.Milliseconds() + 1)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		err := c.Send(ctx, &notify.Envelope{Type: notify.TypeReconnect, Code: notify.ErrShutdown.Code, Delay: delay})
		cancel()
		if err != nil {
			c.Close(notify.ErrShutdown)
		}
	}
}

// Status is the HTTP status for err.
func Status(err error) int {
	var e *notify.Error
	if !errors.As(err, &e) {
		if errors.Is(err, notify.ErrUnavailable) {
			return http.StatusServiceUnavailable
		}
		return http.StatusInternalServerError
	}
	switch e.Code {
	case notify.ErrUnauthorized.Code:
		return http.StatusUnauthorized
	case notify.ErrForbidden.Code:
		return http.StatusForbidden
	case notify.ErrTooLarge.Code:
		return http.StatusRequestEntityTooLarge
	case notify.ErrTooManyConnections.Code, notify.ErrRateLimited.Code, notify.ErrTooManyChannels.Code:
		return http.StatusTooManyRequests
	case notify.ErrUnavailable.Code, notify.ErrShutdown.Code:
		return http.StatusServiceUnavailable
	case notify.ErrNotSubscribed.Code:
		return http.StatusNotFound
	case notify.ErrPresenceDisabled.Code:
		return http.StatusNotImplemented
	}
	return http.StatusBadRequest
}

// WriteError answers a request with err as {"error":{"code","message"}} and
// its status. Internal errors are not described to the client.
func WriteError(w http.ResponseWriter, err error) {
	status := Status(err)
	e := notify.ErrorEnvelope(err, "")
	code, message := e.Code, e.Message
	if status == http.StatusInternalServerError {
		code, message = "internal", "internal error"
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
	}
	WriteStatusError(w, status, code, message)
}

// WriteStatusError answers a request with status and the JSON body
// {"error":{"code","message"}}, for a status that no notify error kind
// maps to (a wrong method, a request that is not a WebTransport CONNECT).
func WriteStatusError(w http.ResponseWriter, status int, code, message string) {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = code, message
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func errForbiddenOrigin(origin string) error {
	return notify.Errorf(notify.ErrForbidden, "origin %q is not allowed", truncate(origin))
}

// ResponseError is the error a client reports for a refused request: the
// server's *notify.Error from the JSON body, or, for a body without one
// (a proxy's page, a wrong URL), a *notify.Error with code
// "http_<status>" so that callers can still tell the status.
func ResponseError(resp *http.Response) error {
	var body struct {
		Error struct{ Code, Message string }
	}
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = json.Unmarshal(b, &body)
	}
	if body.Error.Code == "" {
		return &notify.Error{Code: "http_" + strconv.Itoa(resp.StatusCode), Message: "request refused: " + resp.Status}
	}
	return &notify.Error{Code: body.Error.Code, Message: body.Error.Message}
}

// ConnectURL adds a connection's channels and resume cursor to an endpoint
// URL as the query parameters every transport reads (channel, since).
func ConnectURL(rawURL string, channels []string, since string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	for _, ch := range channels {
		q.Add("channel", ch)
	}
	if since != "" {
		q.Set("since", since)
	}
	u.RawQuery = q.Encode()
	return u, nil
}
