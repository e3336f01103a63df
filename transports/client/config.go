package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/quic-go/quic-go"
)

// Transport names one of Herald's transports.
type Transport string

// The transports a Client can use.
const (
	// WebSocket: GET /v1/ws, both directions.
	WebSocket Transport = "ws"
	// SSE: Server-Sent Events, GET /v1/sse, server to client only: Publish
	// is refused and a change of channels reconnects.
	SSE Transport = "sse"
	// HTTP3: an NDJSON stream over HTTP/3, POST /v1/stream, both
	// directions. Needs an https URL.
	HTTP3 Transport = "h3"
	// WebTransport: a WebTransport session over HTTP/3, CONNECT /v1/wt,
	// with one bidirectional NDJSON stream, both directions; the same
	// QUIC settings (QUICConfig, DialQUIC) as HTTP3. Needs an https URL.
	WebTransport Transport = "wt"
)

// Config configures a Client. Zero values are the defaults.
type Config struct {
	// URL is the server's base URL: http://host:8080 or
	// https://host:8443, optionally with a path prefix for a reverse
	// proxy. The client derives the endpoint of its transport from it
	// (/v1/ws with a ws:// or wss:// scheme, /v1/sse, /v1/stream).
	URL string
	// Transport is WebSocket, SSE, HTTP3 or WebTransport. Default WebSocket.
	Transport Transport
	// Token returns a connect token. It is called before every connection
	// attempt (tokens are short-lived and may be single-use), and on a
	// WebSocket or HTTP/3 connection when the server says the token is
	// expiring, for the refresh command that keeps the connection (SSE
	// reconnects with a new token instead), never concurrently. An error is retried with backoff like a failed
	// connection, unless it is a *notify.Error with a code that retrying
	// cannot fix (see Run), which stops the client. nil means no token.
	// Every token must be for the same user: the user's channel position
	// is resumed with it.
	Token func(ctx context.Context) (string, error)
	// Channels are subscribed at every connection, besides the user's own
	// channel, which the server always subscribes.
	Channels []string
	// Since is a cursor to resume from, as returned by Client.Positions:
	// "news=1700000000000-0;user:42=1699999999999-3". A bare ID is
	// accepted when Channels has exactly one channel. Channels without a
	// position start with live messages.
	Since string
	// Backoff shapes the delays between reconnection attempts.
	Backoff Backoff
	// HealthyAfter is how long a connection must stay up to count as
	// healthy: the backoff then starts over. A connection that ends
	// sooner counts as a failed attempt, so that a server that accepts
	// and drops at once is not hammered. Default 5s.
	HealthyAfter time.Duration
	// DialTimeout bounds one connection attempt (the token excluded).
	// Default 15s.
	DialTimeout time.Duration
	// WriteTimeout bounds sending one command. A command is sent under the
	// connection's own context, never the caller's: on WebSocket and
	// HTTP/3 an interrupted write breaks the whole connection. Default 10s.
	WriteTimeout time.Duration
	// BufferSize is how many envelopes wait for Next. When it is full the
	// client stops reading the connection (see Next). Default 256.
	BufferSize int
	// ReadLimit bounds one envelope (an SSE event, a WebSocket frame, an
	// NDJSON line). Zero means each dialer's default (1 MiB for SSE, 16 MiB
	// otherwise).
	ReadLimit int
	// TLSConfig for https URLs. For HTTP3 it is the QUIC handshake's, and
	// unless it has a ClientSessionCache the Client uses a copy with a
	// cache of its own, so that a reconnection resumes the TLS session
	// (see herald serve --tls-ticket-key); for WebSocket and SSE it is
	// used when HTTPClient is nil. For SSE over HTTP/3, give the
	// http3.Transport's TLSClientConfig a tls.NewLRUClientSessionCache
	// of its own for the same.
	TLSConfig *tls.Config
	// HTTPClient makes WebSocket handshakes and SSE requests. nil means
	// http.DefaultClient, or a client with TLSConfig when that is set. Its
	// Timeout must be zero: it would cut the SSE stream.
	//
	// For SSE over HTTP/3, make its Transport an *http3.Transport, one per
	// Client (one QUIC connection each), and configure it as QUICConfig
	// and DialQUIC below configure HTTP3: its QUICConfig field set to
	// DefaultQUICConfig() (quic-go's own defaults take up to 40 s to notice
	// a dead server), and its Dial field to the same kind of hook. The
	// client never builds an HTTP/3 transport for SSE itself.
	HTTPClient *http.Client
	// QUICConfig is the QUIC configuration of the HTTP3 and WebTransport
	// transports' connections; nil means DefaultQUICConfig(). It is
	// copied for every connection. Its KeepAlivePeriod and MaxIdleTimeout decide how soon a
	// server that vanished without closing is noticed (see
	// DefaultQUICConfig). WebSocket and SSE ignore it.
	QUICConfig *quic.Config
	// DialQUIC, if set, opens the QUIC connection of every HTTP3 and
	// WebTransport connection attempt, as http3.Transport.Dial does (see
	// h3.DialOptions.Dial): to count or wrap the UDP socket, choose its
	// source address, or route addr (the URL's host:port) elsewhere. It is
	// given the TLS configuration (TLSConfig with ServerName and ALPN set)
	// and the QUIC one (a copy of QUICConfig) to dial with, and must pass
	// both on. It is called at least once per attempt (HTTP/3 may dial
	// again after a failed request), never concurrently by one Client.
	// What it creates besides the connection (a socket, a quic.Transport)
	// is its to close once the connection's Context is done: the client
	// closes every connection it returned. nil means a zero QUICDialer's
	// Dial: a connected UDP socket per connection, which hears ICMP port
	// unreachable from a dead server (see ConnectedUDP), and liveness
	// probes every second on it while the connection is silent; a hook
	// should keep that (a QUICDialer with Wrap or LocalAddr set) unless it
	// has a reason not to. WebSocket and SSE ignore it.
	DialQUIC func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error)
	// Header adds request headers (e.g. Origin) to every connection.
	Header http.Header
	// OnState, if set, is called with every state change, in order, from
	// the goroutine running Run. It must return quickly and must not call
	// Close (which waits for Run); cancel Run's context instead.
	OnState func(State)
	// OnPresence, if set, is called with a channel's members each time
	// they change: a subscribed notice's snapshot, then each presence
	// envelope (see Presence), in order, from the connection's reader. It
	// must return quickly: the reader waits for it.
	OnPresence func(Presence)
	// Logger; nil means silent.
	Logger *slog.Logger
	// Rand draws the backoff jitter; nil means math/rand/v2's generator.
	// Tests set a deterministic one. *rand.Rand implements it.
	Rand interface{ Int64N(n int64) int64 }
}

// Backoff is exponential backoff with full jitter: before reconnection
// attempt n (0 first) the client waits a uniformly random delay in
// [0, min(Max, Min·Factorⁿ)]. Full jitter spreads out the clients a server
// restart disconnected at once. Zero values are the defaults.
type Backoff struct {
	Min    time.Duration // ceiling of the first delay; default 250ms
	Max    time.Duration // cap of every delay; default 30s
	Factor float64       // growth per attempt, at least 1; default 2
}

// DefaultQUICConfig returns the QUIC configuration an HTTP3 client uses
// when Config.QUICConfig is nil: a keep-alive PING every 5 s, a 15 s idle
// timeout and a 10 s handshake idle timeout.
//
// A server that dies without closing its connections cannot tell its QUIC
// clients; a client learns of it from what answers its next packet. The
// default dialer (QUICDialer) sends a liveness probe every second on a
// silent connection, so that the answer comes within about a second
// whatever the keep-alive:
//
//   - the server's host, its port now closed (the process was killed or
//     crashed): ICMP port unreachable, which the client's connected UDP
//     socket hears (ConnectedUDP);
//   - a process that took over the server's address and shares the reset
//     key (a restarted instance, another behind the same UDP address of a
//     load balancer: docs/deployment.md): a stateless reset;
//   - nothing (the host or the path is gone, or ICMP is filtered): the
//     idle timeout, counted from the client's first packet after the last
//     it received (quic-go's rule): at most KeepAlivePeriod +
//     MaxIdleTimeout = 20 s. quic-go's client defaults (10 s, 30 s) take up
//     to 40 s. The idle timeout in force is the smaller of the client's and
//     the server's (Herald's is 2×heartbeat + write timeout, 60 s by
//     default).
//
// Why not a shorter keep-alive, as before the probes (1 s / 3 s): a PING
// draws an acknowledgement, and both cost each side a packet's full
// processing; at 15,000 connections those rounds alone took about 60 % of
// a core on each side of a two-core machine, and the fleet collapsed into
// idle timeouts under a failover (docs/benchmarks.md). A probe draws
// nothing from a live server. The keep-alive is left to what only it can
// do: keep NAT bindings and find a vanished host.
//
// The handshake idle timeout is longer than quic-go's 5 s: a handshake
// with a dead port fails at once (ICMP), so the timeout only ends
// handshakes with a server that is slow or a host that is gone, and when a
// whole fleet reconnects to the surviving instances, a handshake that
// gives up after 3 s throws away the server's half-done work and comes
// back for more. herald bench failover, h3, 15,000 clients, one run each
// (docs/benchmarks.md): at 3 s the run counted 1,352 handshake timeouts
// and 15,319 QUIC idle timeouts of connections starved by the backlog, and
// the last client was back 45.7 s after the kill; at 10 s, 0 and 467, and
// 25.1 s.
//
// The costs on an idle connection: a probe (44 bytes) every second and a
// PING round (about 55 bytes) every 5 s, some 200 KB an hour, and a radio
// that rarely sleeps on a phone. A mobile app should give its own
// QUICDialer a longer Probe (or none) and a longer keep-alive, trading
// failover time for battery and traffic.
func DefaultQUICConfig() *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:      5 * time.Second,
		MaxIdleTimeout:       15 * time.Second,
		HandshakeIdleTimeout: 10 * time.Second,
	}
}

// withDefaults returns cfg with its defaults filled in.
func (cfg Config) withDefaults() Config {
	if cfg.Transport == "" {
		cfg.Transport = WebSocket
	}
	if cfg.Backoff.Min <= 0 {
		cfg.Backoff.Min = 250 * time.Millisecond
	}
	if cfg.Backoff.Max <= 0 {
		cfg.Backoff.Max = 30 * time.Second
	}
	cfg.Backoff.Max = max(cfg.Backoff.Max, cfg.Backoff.Min)
	if cfg.Backoff.Factor == 0 {
		cfg.Backoff.Factor = 2
	}
	if cfg.HealthyAfter <= 0 {
		cfg.HealthyAfter = 5 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = 256
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
		if cfg.TLSConfig != nil {
			cfg.HTTPClient = &http.Client{Transport: &http.Transport{
				Proxy:           http.ProxyFromEnvironment,
				TLSClientConfig: cfg.TLSConfig,
			}}
		}
	}
	if cfg.QUICConfig == nil {
		cfg.QUICConfig = DefaultQUICConfig()
	}
	if cfg.DialQUIC == nil {
		cfg.DialQUIC = dialQUICDefault
	}
	if cfg.Transport == HTTP3 {
		cfg.TLSConfig = withSessionCache(cfg.TLSConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rand == nil {
		cfg.Rand = globalRand{}
	}
	return cfg
}

// sessionCacheSize is how many TLS sessions an HTTP3 client keeps: one
// per server name it dials, which is one.
const sessionCacheSize = 4

// withSessionCache returns a copy of tlsCfg (nil: a new one) with a TLS
// session cache of its own, unless it has one: a Client's reconnection
// resumes its last session — on any instance that shares the ticket key
// (herald serve --tls-ticket-key) — and skips the certificate signature
// and its verification, the costly part of a handshake when thousands of
// clients of a dead instance reconnect at once.
func withSessionCache(tlsCfg *tls.Config) *tls.Config {
	if tlsCfg != nil && tlsCfg.ClientSessionCache != nil {
		return tlsCfg
	}
	if tlsCfg == nil {
		tlsCfg = &tls.Config{}
	} else {
		tlsCfg = tlsCfg.Clone()
	}
	tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(sessionCacheSize)
	return tlsCfg
}

// validate reports the first thing wrong with cfg (defaults applied).
func (cfg *Config) validate() error {
	switch cfg.Transport {
	case WebSocket, SSE, HTTP3, WebTransport:
	default:
		return fmt.Errorf("client: unknown transport %q (want ws, sse, h3 or wt)", cfg.Transport)
	}
	if f := cfg.Backoff.Factor; f < 1 || math.IsInf(f, 0) || math.IsNaN(f) {
		return fmt.Errorf("client: backoff factor %v is not a finite number ≥ 1", f)
	}
	for _, ch := range cfg.Channels {
		if err := notify.ValidateChannel(ch); err != nil {
			return fmt.Errorf("client: %w", err)
		}
	}
	if cfg.HTTPClient.Timeout != 0 && cfg.Transport == SSE {
		return errors.New("client: HTTPClient.Timeout must be zero: it would cut the event stream")
	}
	return nil
}

// endpoint derives the URL of transport t's endpoint from base.
func endpoint(base string, t Transport) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("client: URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("client: URL %q: the scheme must be http or https", base)
	}
	if u.Host == "" {
		return "", fmt.Errorf("client: URL %q has no host", base)
	}
	u.RawQuery, u.Fragment = "", ""
	prefix := strings.TrimSuffix(u.Path, "/")
	switch t {
	case WebSocket:
		u.Path = prefix + "/v1/ws"
		u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	case SSE:
		u.Path = prefix + "/v1/sse"
	case HTTP3:
		if u.Scheme != "https" {
			return "", fmt.Errorf("client: URL %q: HTTP/3 needs https", base)
		}
		u.Path = prefix + "/v1/stream"
	case WebTransport:
		if u.Scheme != "https" {
			return "", fmt.Errorf("client: URL %q: WebTransport needs https", base)
		}
		u.Path = prefix + "/v1/wt"
	}
	u.RawPath = ""
	return u.String(), nil
}
