package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/auth"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
)

type serveConfig struct {
	addr, tlsAddr     string
	certFile, keyFile string
	certDir           string
	redisURL          string
	secret            string
	quicResetKey      string
	tlsTicketKeys     string
	apiKeys           listFlag
	allowedOrigins    listFlag
	singleUseTokens   bool
	memoryTrim        bool
	tokenLeeway       time.Duration
	historySize       int
	historyTTL        time.Duration
	queueLength       int
	maxMessageSize    int
	maxChannels       int
	maxConnsPerUser   int
	publishRate       float64
	publishBurst      int
	handshakeTimeout  time.Duration
	heartbeat         time.Duration
	tokenRefreshGrace time.Duration
	writeTimeout      time.Duration
	drainTimeout      time.Duration
	canaryEvery       time.Duration
	presenceInterval  time.Duration
	presenceLease     time.Duration
	presenceSnapshot  int
	canaryTimeout     time.Duration
	logFormat         string
	logLevel          string
	debugAddr         string
}

// listFlag is a repeatable flag that also takes comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func serveFlags(args []string) (*serveConfig, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: herald serve [flags]

Runs a Herald server: WebSocket (/v1/ws) and SSE (/v1/sse) on the plain
listener; HTTP/1.1, HTTP/2 and HTTP/3 (/v1/stream, /v1/sse) and WebTransport
(/v1/wt) on the TLS listener (TCP and UDP on the same port). With no flags it runs for
development: embedded memory broker, a generated secret and API key printed
once, and a self-signed certificate generated and reused.

Every flag can also be set with HERALD_<FLAG> (upper case, dashes as
underscores), e.g. HERALD_REDIS, HERALD_SECRET, HERALD_API_KEY (comma-separated).

Examples:
  herald serve
  herald serve --redis redis://127.0.0.1:6379/0 --secret "$SECRET" --api-key "$KEY"
  herald serve --tls-addr "" --addr :9000          # plain HTTP only

Flags:
`)
		fs.PrintDefaults()
	}
	c := &serveConfig{}
	fs.StringVar(&c.addr, "addr", ":8080", "plain HTTP listen address (WebSocket, SSE, REST)")
	fs.StringVar(&c.tlsAddr, "tls-addr", ":8443", "TLS listen address, TCP (HTTP/1.1, HTTP/2) and UDP (HTTP/3); empty disables TLS")
	fs.StringVar(&c.certFile, "cert", "", "TLS certificate file (PEM); empty generates a development certificate")
	fs.StringVar(&c.keyFile, "key", "", "TLS private key file (PEM)")
	fs.StringVar(&c.certDir, "cert-dir", defaultCertDir(), "where the development certificate is kept and reused")
	fs.StringVar(&c.redisURL, "redis", "", "Redis URL (redis://host:port/db), or a Redis Cluster (redis-cluster://host1:7000,host2:7001,…); empty runs the embedded memory broker")
	fs.StringVar(&c.secret, "secret", "", "token signing secret (at least 32 bytes); empty generates one for this run")
	fs.StringVar(&c.quicResetKey, "quic-reset-key", "", "QUIC stateless-reset key, 64 hex digits, the same on every instance (openssl rand -hex 32); empty derives it from --secret")
	fs.StringVar(&c.tlsTicketKeys, "tls-ticket-key", "", "TLS session ticket keys, 64 hex digits each, comma-separated, the same on every instance: the first encrypts, all decrypt (rotate by putting a new one first); empty derives one from --secret")
	fs.Var(&c.apiKeys, "api-key", "server-to-server API key (repeatable or comma-separated); empty generates one for this run")
	fs.Var(&c.allowedOrigins, "allowed-origins", "browser origins allowed cross-site, e.g. https://app.example.com,https://*.example.com")
	fs.BoolVar(&c.singleUseTokens, "single-use-tokens", false, "accept each token once (IDs recorded in Redis, or memory) until it expires")
	fs.BoolVar(&c.memoryTrim, "memory-trim", true, "after a storm of connections settles (1,000 or more, a tenth of the count), return its garbage to the OS at once instead of within minutes")
	fs.DurationVar(&c.tokenLeeway, "token-leeway", auth.DefaultLeeway, "clock skew tolerated on token expiry: a token is accepted until its expiry plus this (0: none)")
	fs.IntVar(&c.historySize, "history-size", 1000, "messages retained per channel for resume")
	fs.DurationVar(&c.historyTTL, "history-ttl", 24*time.Hour, "a channel's history expires after this long without a publish")
	fs.IntVar(&c.queueLength, "queue-length", 1024, "per-connection queue bound; a client further behind is disconnected (lagged) and resumes")
	fs.IntVar(&c.maxMessageSize, "max-message-size", 64<<10, "maximum size of a message's data in bytes")
	fs.IntVar(&c.maxChannels, "max-channels", 256, "maximum channels per connection")
	fs.IntVar(&c.maxConnsPerUser, "max-conns-per-user", 64, "maximum connections per user (negative: unlimited)")
	fs.Float64Var(&c.publishRate, "publish-rate", 100, "publishes per second per token or API key (0: unlimited)")
	fs.IntVar(&c.publishBurst, "publish-burst", 200, "publish burst per token or API key")
	fs.DurationVar(&c.handshakeTimeout, "handshake-timeout", 10*time.Second, "time allowed to send a request's headers")
	fs.DurationVar(&c.heartbeat, "heartbeat", 25*time.Second, "idle-connection heartbeat interval")
	fs.DurationVar(&c.tokenRefreshGrace, "token-refresh-grace", wire.DefaultTokenRefreshGrace, "a connection is told its token is expiring this long before expiry and closed (token_expired) this long after it unless refreshed")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 10*time.Second, "a client that does not take a write in this time is disconnected")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "how long SIGTERM waits for connections to drain")
	fs.DurationVar(&c.canaryEvery, "pubsub-canary-interval", 2*time.Second, "Redis: how often a canary is published to each of this instance's Pub/Sub connections; 0 disables it")
	fs.DurationVar(&c.canaryTimeout, "pubsub-canary-timeout", 10*time.Second, "Redis: /readyz answers 503 when a Pub/Sub connection's canary has not come back for this long")
	fs.DurationVar(&c.presenceInterval, "presence-interval", 200*time.Millisecond, "presence: how long each channel's joins and leaves are batched before they are written and announced")
	fs.DurationVar(&c.presenceLease, "presence-lease", 15*time.Second, "presence on Redis: the members of an instance that died (kill -9) leave within this plus --presence-interval; renewed every third of it")
	fs.IntVar(&c.presenceSnapshot, "presence-snapshot", 100, "presence: members listed in a subscribed notice's snapshot (the count is always exact), at most 1000")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.debugAddr, "debug-addr", "", "private listen address for /metrics and /debug/pprof/ (e.g. 127.0.0.1:6060); when set, /metrics leaves the public listener")
	if err := applyEnv(fs, "HERALD_"); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	return c, c.validate()
}

func (c *serveConfig) validate() error {
	var errs []error
	positive := map[string]bool{
		"--history-size": c.historySize > 0, "--history-ttl": c.historyTTL > 0, "--queue-length": c.queueLength > 0,
		"--max-message-size": c.maxMessageSize > 0, "--max-channels": c.maxChannels > 0,
		"--handshake-timeout": c.handshakeTimeout > 0, "--heartbeat": c.heartbeat > 0,
		"--write-timeout": c.writeTimeout > 0, "--drain-timeout": c.drainTimeout > 0,
		"--token-refresh-grace": c.tokenRefreshGrace > 0,
		"--presence-interval":   c.presenceInterval > 0, "--presence-lease": c.presenceLease > 0,
		"--presence-snapshot": c.presenceSnapshot > 0,
	}
	for name, ok := range positive {
		if !ok {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.tokenLeeway < 0 {
		errs = append(errs, errors.New("--token-leeway must not be negative (0 means none)"))
	}
	if c.canaryEvery < 0 {
		errs = append(errs, errors.New("--pubsub-canary-interval must not be negative (0 disables the canary)"))
	} else if c.canaryEvery > 0 && c.canaryTimeout <= c.canaryEvery {
		errs = append(errs, fmt.Errorf("--pubsub-canary-timeout (%v) must be longer than --pubsub-canary-interval (%v)", c.canaryTimeout, c.canaryEvery))
	}
	if c.presenceInterval > 0 && c.presenceLease > 0 && c.presenceLease < 3*c.presenceInterval {
		errs = append(errs, fmt.Errorf("--presence-lease (%v) must be at least 3 × --presence-interval (%v): leases are renewed every third of it", c.presenceLease, c.presenceInterval))
	}
	if c.presenceSnapshot > notify.MaxPresencePage {
		errs = append(errs, fmt.Errorf("--presence-snapshot must be at most %d", notify.MaxPresencePage))
	}
	if c.publishRate < 0 {
		errs = append(errs, errors.New("--publish-rate must not be negative"))
	}
	if (c.certFile == "") != (c.keyFile == "") {
		errs = append(errs, errors.New("--cert and --key go together"))
	}
	if c.quicResetKey != "" {
		if _, err := h3.ParseResetKey(c.quicResetKey); err != nil {
			errs = append(errs, fmt.Errorf("--quic-reset-key: %w", err))
		}
	}
	if c.tlsTicketKeys != "" {
		if _, err := h3.ParseTicketKeys(c.tlsTicketKeys); err != nil {
			errs = append(errs, fmt.Errorf("--tls-ticket-key: %w", err))
		}
	}
	if c.secret != "" && len(c.secret) < 32 {
		errs = append(errs, errors.New("--secret must be at least 32 bytes"))
	}
	if c.maxConnsPerUser == 0 {
		errs = append(errs, errors.New("--max-conns-per-user must not be 0 (negative means unlimited)"))
	}
	return errors.Join(errs...)
}

// presence is the brokers' presence configuration.
func (c *serveConfig) presence() notify.PresenceConfig {
	return notify.PresenceConfig{Interval: c.presenceInterval, Lease: c.presenceLease}
}

// canaryInterval is the broker's CanaryInterval: negative disables.
func (c *serveConfig) canaryInterval() time.Duration {
	if c.canaryEvery == 0 {
		return -1
	}
	return c.canaryEvery
}

func defaultCertDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "herald", "devcert")
	}
	return filepath.Join(os.TempDir(), "herald-devcert")
}

// applyEnv sets each flag from its HERALD_* variable; command-line flags
// parsed afterwards override it.
func applyEnv(fs *flag.FlagSet, prefix string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", name, v, e)
			}
		}
	})
	return err
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	return newLoggerTo(os.Stderr, format, opts)
}

// newLoggerTo writes to w; tokens are redacted from every record.
func newLoggerTo(w io.Writer, format string, opts *slog.HandlerOptions) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(redactHandler{slog.NewTextHandler(w, opts)}), nil
	case "json":
		return slog.New(redactHandler{slog.NewJSONHandler(w, opts)}), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}

func runServe(args []string) error {
	cfg, err := serveFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.logFormat, cfg.logLevel)
	if err != nil {
		return err
	}
	s, err := newServer(cfg, log)
	if err != nil {
		return err
	}
	return s.run()
}
