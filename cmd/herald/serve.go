package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/redisbroker"
	"github.com/redis/go-redis/v9"
)

type serveConfig struct {
	addr         string
	redisURL     string
	historySize  int
	historyTTL   time.Duration
	queueLength  int
	drainTimeout time.Duration
	logFormat    string
	logLevel     string
}

func serveFlags(args []string) (*serveConfig, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: herald serve [flags]

Runs a Herald server. With no flags it uses the embedded memory broker (one
instance, no Redis). Every flag can also be set with the environment variable
HERALD_<FLAG> (upper case, dashes as underscores), e.g. HERALD_REDIS.

Examples:
  herald serve
  herald serve --redis redis://127.0.0.1:6379/0 --addr :8080

Flags:
`)
		fs.PrintDefaults()
	}
	c := &serveConfig{}
	fs.StringVar(&c.addr, "addr", ":8080", "plain HTTP listen address")
	fs.StringVar(&c.redisURL, "redis", "", "Redis URL (redis://host:port/db); empty runs the embedded memory broker")
	fs.IntVar(&c.historySize, "history-size", 1000, "messages retained per channel for resume")
	fs.DurationVar(&c.historyTTL, "history-ttl", 24*time.Hour, "a channel's history expires after this long without a publish")
	fs.IntVar(&c.queueLength, "queue-length", 1024, "per-connection queue bound; a connection that falls further behind is disconnected (lagged)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "how long SIGTERM waits for connections to drain")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := applyEnv(fs, "HERALD_"); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	if c.historySize <= 0 || c.queueLength <= 0 || c.historyTTL <= 0 {
		return nil, errors.New("serve: --history-size, --history-ttl and --queue-length must be positive")
	}
	return c, nil
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
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}

// pinger is the optional ability of a broker to report readiness.
type pinger interface{ Ping(context.Context) error }

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
	broker, closeBroker, err := openBroker(cfg, log)
	if err != nil {
		return err
	}
	defer closeBroker()
	hub := notify.NewHub(broker, notify.HubConfig{QueueLength: cfg.queueLength, Logger: log})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if p, ok := broker.(pinger); ok {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := p.Ping(ctx); err != nil {
				http.Error(w, "broker unreachable: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	log.Info("herald listening", "addr", ln.Addr().String(), "broker", brokerName(cfg))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stop() // a second signal exits at once
	log.Info("shutting down", "drain_timeout", cfg.drainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.drainTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	_ = hub.Close()
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

func brokerName(cfg *serveConfig) string {
	if cfg.redisURL == "" {
		return "memory"
	}
	return "redis"
}

func openBroker(cfg *serveConfig, log *slog.Logger) (notify.Broker, func(), error) {
	if cfg.redisURL == "" {
		b := notify.NewMemoryBroker(notify.MemoryConfig{HistorySize: cfg.historySize, HistoryTTL: cfg.historyTTL})
		return b, func() { _ = b.Close() }, nil
	}
	opt, err := redis.ParseURL(cfg.redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis: %v", err)
	}
	// A publish must not be retried: if the first attempt reached Redis, a
	// retry would publish the message twice.
	opt.MaxRetries = -1
	rdb := redis.NewClient(opt)
	b, err := redisbroker.New(redisbroker.Config{
		Client: rdb, HistorySize: int64(cfg.historySize), HistoryTTL: cfg.historyTTL, Logger: log,
	})
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return b, func() { _ = b.Close(); _ = rdb.Close() }, nil
}
