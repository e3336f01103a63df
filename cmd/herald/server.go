package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/auth"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/heraldhq/herald/transports/browser"
	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/ws"
	"github.com/heraldhq/herald/transports/wt"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/quic-go/quic-go"
	"github.com/redis/go-redis/v9"
)

// server is one running Herald instance.
type server struct {
	cfg    *serveConfig
	log    *slog.Logger
	broker notify.Broker
	fanout fanoutChecker // nil for the memory broker
	// presence is the broker's own presence (both brokers have one), not
	// wrapped by the counting decorator.
	presence notify.Presence
	hub      *notify.Hub
	auth     *auth.Authenticator
	wire     wire.Config
	metrics  *metrics
	closer   []func() // run in reverse order when the server stops

	plain, secure *http.Server
	quic          *wt.Server // HTTP/3 and WebTransport on the UDP side of the TLS port
	quicLn        *h3.Listener
	// resetKey derives the stateless-reset tokens of the QUIC
	// connections: shared by every instance (--quic-reset-key, or derived
	// from --secret), so that a restarted instance, or another behind the
	// same UDP address, resets the old connections instead of letting
	// their clients wait for the idle timeout.
	resetKey *quic.StatelessResetKey
	// ticketKeys encrypt and decrypt TLS session tickets on the TLS
	// listeners, TCP and QUIC: shared by every instance (--tls-ticket-key,
	// or derived from --secret), so that a client reconnecting to any
	// instance resumes its session and skips the certificate signature.
	ticketKeys [][32]byte
	debug      *http.Server // --debug-addr: metrics and profiles
	ready      atomic.Bool
	// devMode: no --api-key was given, so the server generated one, and it
	// hands out demo tokens (POST /v1/demo/token) to the demo page.
	devMode bool

	// Addresses actually bound (for tests and logs).
	plainAddr, tlsAddr, debugAddr string
}

func newServer(cfg *serveConfig, log *slog.Logger) (*server, error) {
	s := &server{cfg: cfg, log: log}
	var rdb redis.UniversalClient
	if cfg.redisURL != "" {
		var err error
		if rdb, err = newRedisClient(cfg.redisURL); err != nil {
			return nil, fmt.Errorf("--redis: %v", err)
		}
		s.closer = append(s.closer, func() { _ = rdb.Close() })
		b, err := redisbroker.New(redisbroker.Config{
			Client: rdb, HistorySize: int64(cfg.historySize), HistoryTTL: cfg.historyTTL, MaxPayload: cfg.maxMessageSize, Logger: log,
			CanaryInterval: cfg.canaryInterval(), CanaryTimeout: cfg.canaryTimeout, Presence: cfg.presence(),
		})
		if err != nil {
			s.close()
			return nil, err
		}
		s.broker, s.fanout, s.presence = b, b, b
		s.closer = append(s.closer, func() { _ = b.Close() })
	} else {
		b := notify.NewMemoryBroker(notify.MemoryConfig{HistorySize: cfg.historySize, HistoryTTL: cfg.historyTTL, MaxPayload: cfg.maxMessageSize, Presence: cfg.presence()})
		s.broker, s.presence = b, b
		s.closer = append(s.closer, func() { _ = b.Close() })
	}
	// The hub and the API publish through the counting decorator; the
	// metrics read the broker's own counters.
	s.metrics = newMetrics(s.broker)
	s.broker = countingBroker{Broker: s.broker, m: s.metrics}
	s.hub = notify.NewHub(s.broker, notify.HubConfig{
		QueueLength: cfg.queueLength, MaxChannels: cfg.maxChannels, MaxConnsPerUser: cfg.maxConnsPerUser, Logger: log,
		Presence: s.presence, PresenceSnapshot: cfg.presenceSnapshot,
	})

	authCfg, err := s.authConfig(rdb)
	if err != nil {
		s.close()
		return nil, err
	}
	if s.auth, err = auth.New(authCfg); err != nil {
		s.close()
		return nil, err
	}
	if s.resetKey, err = quicResetKey(cfg.quicResetKey, authCfg.Secret); err != nil {
		s.close()
		return nil, err
	}
	if s.ticketKeys, err = tlsTicketKeys(cfg.tlsTicketKeys, authCfg.Secret); err != nil {
		s.close()
		return nil, err
	}
	limiter := newRateLimiter(cfg.publishRate, cfg.publishBurst)
	s.wire = wire.Config{
		Hub:               s.hub,
		Auth:              transportAuth{s.auth},
		TokenRefreshGrace: cfg.tokenRefreshGrace,
		Heartbeat:         cfg.heartbeat,
		WriteTimeout:      cfg.writeTimeout,
		MaxCommandSize:    cfg.maxMessageSize + 4096,
		AllowedOrigins:    cfg.allowedOrigins,
		PublishLimiter:    limiter,
		Observer:          s.metrics,
		Logger:            log,
	}
	s.metrics.watchHub(s.hub)
	api := &api{hub: s.hub, auth: s.auth, maxPayload: cfg.maxMessageSize, limiter: limiter, metrics: s.metrics}
	mux := s.routes(api)
	// ConnContext turns on TCP keep-alive and TCP_USER_TIMEOUT: the only
	// way to notice a vanished HTTP/1.1 SSE client.
	s.plain = &http.Server{Handler: mux, ReadHeaderTimeout: cfg.handshakeTimeout, ConnContext: sse.ConnContext(s.wire),
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return s, nil
}

// quicResetKey is the --quic-reset-key flag's key, or, without it, one
// derived from the token-signing secret (which every instance shares; in
// development mode the secret, and so the key, is this run's own).
func quicResetKey(flag string, secret []byte) (*quic.StatelessResetKey, error) {
	if flag != "" {
		k, err := h3.ParseResetKey(flag)
		if err != nil {
			return nil, fmt.Errorf("--quic-reset-key: %w", err)
		}
		return k, nil
	}
	return h3.DeriveResetKey(secret)
}

// tlsTicketKeys are the --tls-ticket-key flag's keys, or, without it, one
// derived from the token-signing secret, as quicResetKey.
func tlsTicketKeys(flag string, secret []byte) ([][32]byte, error) {
	if flag != "" {
		keys, err := h3.ParseTicketKeys(flag)
		if err != nil {
			return nil, fmt.Errorf("--tls-ticket-key: %w", err)
		}
		return keys, nil
	}
	k, err := h3.DeriveTicketKey(secret)
	if err != nil {
		return nil, err
	}
	return [][32]byte{k}, nil
}

// authConfig makes the authenticator's configuration, generating a secret
// and an API key for development when none is configured.
func (s *server) authConfig(rdb redis.UniversalClient) (auth.Config, error) {
	cfg := auth.Config{Secret: []byte(s.cfg.secret), APIKeys: s.cfg.apiKeys, Leeway: s.cfg.tokenLeeway}
	if cfg.Leeway == 0 {
		cfg.Leeway = -1 // --token-leeway 0 means none; auth's zero is its default
	}
	if s.cfg.secret == "" {
		cfg.Secret = []byte(randomHex(32))
		s.log.Warn("DEVELOPMENT MODE: no --secret given; tokens are signed with a secret generated for this run only (set HERALD_SECRET in production)")
	}
	if len(cfg.APIKeys) == 0 {
		key := randomHex(16)
		cfg.APIKeys = []string{key}
		s.devMode = true
		s.log.Warn("DEVELOPMENT MODE: no --api-key given; generated one for this run (set HERALD_API_KEY in production)", "api_key", key)
	}
	if s.cfg.singleUseTokens {
		if rdb != nil {
			cfg.SingleUse = &auth.RedisReplay{Client: rdb}
		} else {
			cfg.SingleUse = auth.NewMemoryReplay()
		}
	}
	return cfg, nil
}

// newRedisClient makes the client for --redis: redis://host:port/db (or
// rediss://) for one Redis, redis-cluster://host1:port1,host2:port2,… (or
// rediss-cluster://, with optional user:password@ and go-redis's cluster
// query options) for Redis Cluster, any node being a seed.
func newRedisClient(rawURL string) (redis.UniversalClient, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok || (scheme != "redis-cluster" && scheme != "rediss-cluster") {
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, err
		}
		// A publish must not be retried: if the first attempt reached
		// Redis, a retry would publish the message twice.
		opt.MaxRetries = -1
		return redis.NewClient(opt), nil
	}
	userinfo, hostsAndQuery, hasUser := strings.Cut(rest, "@")
	if !hasUser {
		userinfo, hostsAndQuery = "", rest
	}
	hosts, query, _ := strings.Cut(hostsAndQuery, "?")
	hosts = strings.TrimSuffix(hosts, "/")
	seeds := strings.Split(hosts, ",")
	if hosts == "" || slices.Contains(seeds, "") {
		return nil, fmt.Errorf("%s://: list the cluster's seed nodes, comma-separated: %s://host1:7000,host2:7001", scheme, scheme)
	}
	u := strings.TrimSuffix(scheme, "-cluster") + "://"
	if hasUser {
		u += userinfo + "@"
	}
	u += seeds[0] + "?" + query
	for _, seed := range seeds[1:] {
		u += "&addr=" + url.QueryEscape(seed)
	}
	opt, err := redis.ParseClusterURL(u)
	if err != nil {
		return nil, err
	}
	opt.MaxRetries = -1
	return redis.NewClusterClient(opt), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *server) routes(a *api) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/ws", ws.NewHandler(s.wire))
	sseHandler := sse.NewHandler(s.wire)
	mux.Handle("GET /v1/sse", sseHandler)
	mux.Handle("OPTIONS /v1/sse", sseHandler)
	stream := h3.NewHandler(s.wire)
	mux.Handle("/v1/stream", stream)
	mux.Handle("/v1/wt", wt.NewHandler(s.wire))
	mux.HandleFunc("POST /v1/token", a.token)
	mux.HandleFunc("POST /v1/publish", a.publish)
	mux.HandleFunc("GET /v1/history", a.history)
	mux.HandleFunc("GET /v1/presence", a.presence)
	if s.devMode {
		mux.HandleFunc("POST /v1/demo/token", a.demoToken)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.debugAddr == "" {
		mux.Handle("GET /metrics", s.metricsHandler())
	}
	files := browser.Handler()
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /herald.js", files)
	mux.Handle("GET /herald.d.ts", files)
	return mux
}

func (s *server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

// debugRoutes are served on --debug-addr only: the Prometheus metrics and
// Go's profiler, which must not be public. Not /debug/pprof/cmdline: the
// command line carries --secret, --api-key and the Redis password.
func (s *server) debugRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsHandler())
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		http.Error(w, "draining\n", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.broker.Ping(ctx); err != nil {
		http.Error(w, "broker unreachable: "+err.Error()+"\n", http.StatusServiceUnavailable)
		return
	}
	if err := s.fanoutHealthy(); err != nil {
		http.Error(w, "fan-out stalled: "+err.Error()+"\n", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// fanoutChecker is a broker that can tell whether its fan-out path
// delivers: the Redis broker's Pub/Sub canary. The memory broker delivers
// within the process and has none.
type fanoutChecker interface{ CanaryErr() error }

// fanoutHealthy is nil unless this instance's Pub/Sub connections stopped
// delivering (or it is too starved to read them): publishes may still
// succeed, but its clients would miss them.
func (s *server) fanoutHealthy() error {
	if s.fanout == nil {
		return nil
	}
	return s.fanout.CanaryErr()
}

// listen binds the plain listener and, unless disabled, the TLS listeners
// (TCP for HTTP/1.1 and HTTP/2, UDP for HTTP/3 on the same port).
func (s *server) listen() (plainLn, tlsLn net.Listener, udp net.PacketConn, err error) {
	if plainLn, err = net.Listen("tcp", s.cfg.addr); err != nil {
		return nil, nil, nil, err
	}
	s.plainAddr = plainLn.Addr().String()
	if s.cfg.tlsAddr == "" {
		return plainLn, nil, nil, nil
	}
	cert, err := s.certificate()
	if err != nil {
		plainLn.Close()
		return nil, nil, nil, err
	}
	tcp, udp, err := listenTCPAndUDP(s.cfg.tlsAddr)
	if err != nil {
		plainLn.Close()
		return nil, nil, nil, err
	}
	// http3.Server.Serve does not close a PacketConn it did not create:
	// without this the UDP port stays bound after drain (until the garbage
	// collector finalizes the socket).
	s.closer = append(s.closer, func() { _ = udp.Close() })
	s.tlsAddr = tcp.Addr().String()
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	quicTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	tlsCfg.SetSessionTicketKeys(s.ticketKeys)
	quicTLS.SetSessionTicketKeys(s.ticketKeys)
	s.quic = wt.NewServer(s.plain.Handler, quicTLS, s.wire)
	if s.quicLn, err = h3.ListenQUIC(udp, quicTLS, wt.QUICConfig(s.wire), s.resetKey); err != nil {
		plainLn.Close()
		tcp.Close()
		return nil, nil, nil, err
	}
	s.closer = append(s.closer, func() { _ = s.quicLn.Close() })
	s.secure = &http.Server{
		Handler:           s.altSvc(s.plain.Handler),
		ReadHeaderTimeout: s.cfg.handshakeTimeout,
		TLSConfig:         tlsCfg,
		HTTP2:             &http.HTTP2Config{SendPingTimeout: s.cfg.heartbeat, PingTimeout: s.cfg.writeTimeout},
		ConnContext:       sse.ConnContext(s.wire),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return plainLn, tls.NewListener(tcp, tlsCfg), udp, nil
}

// listenTCPAndUDP binds TCP and UDP on the same port (HTTP/3 is announced
// on the TCP port's number). With port 0 the kernel picks the TCP port, which
// may be taken on UDP: then it tries another.
func listenTCPAndUDP(addr string) (net.Listener, net.PacketConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 0; ; attempt++ {
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		bound := strconv.Itoa(tcp.Addr().(*net.TCPAddr).Port)
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, bound))
		if err == nil {
			return tcp, udp, nil
		}
		tcp.Close()
		if port != "0" || attempt == 9 {
			return nil, nil, fmt.Errorf("HTTP/3 listener: %w", err)
		}
	}
}

// altSvc advertises HTTP/3 on every TLS response.
func (s *server) altSvc(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = s.quic.SetQUICHeaders(w.Header())
		next.ServeHTTP(w, r)
	})
}

func (s *server) certificate() (tls.Certificate, error) {
	if s.cfg.certFile != "" {
		return tls.LoadX509KeyPair(s.cfg.certFile, s.cfg.keyFile)
	}
	cert, created, err := devcert.LoadOrCreate(s.cfg.certDir, devcert.DefaultHosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	verb := "reusing"
	if created {
		verb = "generated"
	}
	s.log.Warn("DEVELOPMENT MODE: "+verb+" a self-signed certificate (use --cert/--key in production)",
		"dir", s.cfg.certDir, "sha256_fingerprint", devcert.Fingerprint(cert),
		"trust_with", "curl --cacert "+s.cfg.certDir+"/cert.pem; Chromium: --ignore-certificate-errors-spki-list="+devcert.SPKIHash(cert))
	return cert, nil
}

// start binds the listeners and serves; the channel reports the first
// listener failure.
func (s *server) start() (<-chan error, error) {
	plainLn, tlsLn, udp, err := s.listen()
	if err != nil {
		s.close()
		return nil, err
	}
	var debugLn net.Listener
	if s.cfg.debugAddr != "" {
		if debugLn, err = net.Listen("tcp", s.cfg.debugAddr); err != nil {
			plainLn.Close()
			if tlsLn != nil {
				tlsLn.Close()
			}
			s.close()
			return nil, fmt.Errorf("--debug-addr: %w", err)
		}
		s.debugAddr = debugLn.Addr().String()
		s.debug = &http.Server{Handler: s.debugRoutes(), ReadHeaderTimeout: s.cfg.handshakeTimeout}
		s.closer = append(s.closer, func() { _ = s.debug.Close() })
	}
	errc := s.serve(plainLn, tlsLn, udp, debugLn)
	if s.cfg.memoryTrim {
		ctx, cancel := context.WithCancel(context.Background())
		s.closer = append(s.closer, cancel)
		go newMemoryTrimmer(func() int { return s.hub.Stats().Connections }, s.log).run(ctx)
	}
	if debugLn != nil {
		s.log.Info("debug listener (metrics, pprof)", "addr", s.debugAddr)
	}
	s.log.Info("herald listening", "http", s.plainAddr, "https_h1_h2_h3", s.tlsAddr, "broker", brokerName(s.cfg))
	return errc, nil
}

// run serves until SIGINT/SIGTERM, then drains.
func (s *server) run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc, err := s.start()
	if err != nil {
		return err
	}
	select {
	case err := <-errc:
		s.close()
		return err
	case <-ctx.Done():
	}
	stop()
	// A second signal exits at once.
	force := make(chan os.Signal, 1)
	signal.Notify(force, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-force
		s.log.Warn("second signal: exiting now")
		os.Exit(1)
	}()
	s.drain()
	return nil
}

// serve starts every listener; the channel reports the first failure.
func (s *server) serve(plainLn, tlsLn net.Listener, udp net.PacketConn, debugLn net.Listener) <-chan error {
	errc := make(chan error, 4)
	s.ready.Store(true)
	go func() { errc <- ignoreClosed(s.plain.Serve(plainLn)) }()
	if tlsLn != nil {
		go func() { errc <- ignoreClosed(s.secure.Serve(tlsLn)) }()
		go func() { errc <- ignoreClosed(s.quic.ServeListener(s.quicLn)) }()
	}
	if debugLn != nil {
		go func() { errc <- ignoreClosed(s.debug.Serve(debugLn)) }()
	}
	return errc
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// drain stops accepting, advises every client to reconnect elsewhere after a
// jittered delay, waits up to the drain timeout for them to go, then stops.
func (s *server) drain() {
	start := time.Now()
	s.ready.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.drainTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, shutdown := range s.shutdowns() {
		wg.Add(1)
		go func() { defer wg.Done(); _ = shutdown(ctx) }()
	}
	spread := min(s.cfg.drainTimeout/2, 5*time.Second)
	n := s.hub.Stats().Connections
	s.log.Info("draining", "connections", n, "reconnect_spread", spread, "timeout", s.cfg.drainTimeout)
	wire.Drain(s.hub, spread)
	for s.hub.Stats().Connections > 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	left := s.hub.Stats().Connections
	_ = s.hub.Close()
	cancel()
	wg.Wait()
	s.close()
	s.log.Info("drained", "connections_left", left, "took", time.Since(start).Round(time.Millisecond))
}

func (s *server) shutdowns() []func(context.Context) error {
	fns := []func(context.Context) error{s.plain.Shutdown}
	if s.secure != nil {
		fns = append(fns, s.secure.Shutdown, s.quic.Shutdown)
	}
	return fns
}

func (s *server) close() {
	for i := len(s.closer) - 1; i >= 0; i-- {
		s.closer[i]()
	}
	s.closer = nil
}

func brokerName(cfg *serveConfig) string {
	switch {
	case cfg.redisURL == "":
		return "memory"
	case strings.Contains(cfg.redisURL, "-cluster://"):
		return "redis-cluster"
	}
	return "redis"
}

// transportAuth authenticates transport connections with connect tokens,
// and verifies the tokens of refresh commands.
type transportAuth struct{ a *auth.Authenticator }

var _ wire.TokenVerifier = transportAuth{}

func (t transportAuth) Authenticate(r *http.Request) (*notify.Grants, error) {
	return t.a.Verify(r.Context(), wire.Token(r))
}

func (t transportAuth) VerifyToken(ctx context.Context, token string) (*notify.Grants, error) {
	return t.a.Verify(ctx, token)
}
