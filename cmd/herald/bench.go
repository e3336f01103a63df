package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/bench"
)

// benchServeEnv, when set, is the herald command bench children run
// (tests set it: their own binary is not herald).
const benchServeEnv = "HERALD_BENCH_SERVE"

func runBench(args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "compare" {
		return runBenchCompare(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "peer" {
		return runBenchPeer(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "worker" {
		// Hidden: a load-generator process of the scale-out scenario,
		// started by the bench itself (Config.Worker), speaking JSON lines
		// on stdin and stdout. It stops when its stdin ends.
		if len(args) != 1 {
			return errors.New("usage: herald bench worker (started by herald bench, not by hand)")
		}
		return bench.RunWorker(context.Background(), os.Stdin, os.Stdout)
	}
	if len(args) > 0 && args[0] == "report" {
		if len(args) != 2 {
			return errors.New("usage: herald bench report DIR (re-renders DIR/report.md and charts from DIR/results.json)")
		}
		return bench.Rerender(args[1])
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: herald bench [flags]
       herald bench compare old/results.json new/results.json
       herald bench report DIR   (re-render DIR/report.md and charts from DIR/results.json)
       herald bench peer --centrifugo PATH [flags]   (Herald against Centrifugo; see herald bench peer -h)

Runs load scenarios on every transport (ws, sse-h1, sse-h2, sse-h3, h3, wt)
and writes results.json, report.md and SVG charts. By default it starts a
private redis-server (or, with --redis-cluster N, a Redis Cluster of N
masters) and --instances herald serve children on loopback; with --redis
the children use a running Redis or Redis Cluster instead; with --target
it measures servers already running.

Examples:
  herald bench --quick                      # CI: under a minute, fails on any loss
  herald bench --out bench-results/full     # the full run (about 17 minutes)
  herald bench --scenario broadcast --transport ws,h3
  herald bench --quick --redis-cluster 3    # the children on a private 3-master Redis Cluster
  herald bench --redis redis-cluster://10.0.0.7:7000,10.0.0.8:7000   # on a running one
  herald bench --target http://10.0.0.5:8080 --target-tls https://10.0.0.5:8443 --api-key "$KEY"

Flags:
`)
		fs.PrintDefaults()
	}
	var (
		cfg                        bench.Config
		out, transports, scenarios string
		targets, tlsTargets        listFlag
		serverCPUs, loadCPUs       string
		noPin                      bool
		cpuProfile                 string
	)
	fs.StringVar(&out, "out", "", "output directory (default bench-results/<date-time>)")
	fs.BoolVar(&cfg.Quick, "quick", false, "CI run: small loads, under a minute; exits non-zero if any message is lost, duplicated or reordered")
	fs.StringVar(&transports, "transport", "", "transports to run, comma-separated (default all: "+strings.Join(bench.AllTransports, ",")+")")
	fs.StringVar(&scenarios, "scenario", "", "scenarios to run, comma-separated (default all: "+strings.Join(bench.AllScenarios, ",")+")")
	fs.IntVar(&cfg.Instances, "instances", 3, "herald serve children to start")
	fs.Float64Var(&cfg.Scale, "scale", 1, "multiply the full run's connection counts")
	fs.Var(&targets, "target", "plain base URL of a running server (repeatable); the bench then starts nothing")
	fs.Var(&tlsTargets, "target-tls", "TLS base URL of a running server (repeatable, same order as --target)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "API key of the --target servers")
	fs.StringVar(&cfg.CACert, "ca", "", "CA certificate (PEM) of the --target-tls servers; empty skips verification")
	fs.StringVar(&serverCPUs, "server-cpus", "0", "CPU list the children are pinned to")
	fs.StringVar(&loadCPUs, "load-cpus", "1", "CPU list the load generator is pinned to")
	fs.BoolVar(&noPin, "no-pin", false, "do not pin processes to CPUs")
	fs.IntVar(&cfg.SourceAddrs, "source-addrs", 4, "loopback source addresses to spread client connections over")
	fs.IntVar(&cfg.RedisCluster, "redis-cluster", 0, "start a Redis Cluster of this many masters (at least 3, no replicas; needs redis-cli) instead of one redis-server")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write the load generator's CPU profile (the bench process, not the servers: see herald serve --debug-addr) to this file")
	fs.StringVar(&cfg.Redis, "redis", "", "use this running Redis (redis://host:port/db) or Redis Cluster (redis-cluster://host1:port1,host2:port2,…) for the children instead of starting one; skips redis-restart")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	if cfg.Redis != "" {
		// The parser herald serve uses: a URL the children would reject
		// fails here, before anything starts.
		rdb, err := newRedisClient(cfg.Redis)
		if err != nil {
			return fmt.Errorf("bench: --redis %s: %s", bench.RedactURL(cfg.Redis),
				strings.ReplaceAll(err.Error(), cfg.Redis, bench.RedactURL(cfg.Redis)))
		}
		_ = rdb.Close()
	}
	cfg.Targets, cfg.TLSTargets = targets, tlsTargets
	cfg.Transports, cfg.Scenarios = splitList(transports), splitList(scenarios)
	cfg.ServerCPUs, cfg.LoadCPUs = serverCPUs, loadCPUs
	cfg.Pin = !noPin && len(targets) == 0 && bench.CPUCount() >= 2
	cfg.Command = "herald bench " + strings.Join(args, " ")
	if out == "" {
		out = filepath.Join("bench-results", time.Now().Format("2006-01-02T15-04-05"))
	}
	cfg.Out = out
	if len(targets) == 0 {
		serve, err := serveCommand()
		if err != nil {
			return err
		}
		cfg.Serve = serve
	}
	worker, err := workerCommand()
	if err != nil {
		return err
	}
	cfg.Worker = worker
	cfg.Progress = os.Stderr
	cfg.Log = stdout
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("bench: --cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: --cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if res != nil {
		fmt.Fprintf(stdout, "results: %s (%.0f s)\n", filepath.Join(out, "report.md"), res.Duration)
	}
	if err != nil {
		return err
	}
	if len(res.Failures) > 0 {
		for _, f := range res.Failures {
			fmt.Fprintf(stdout, "FAILED: %s\n", f)
		}
		if cfg.Quick {
			return errors.New("bench: a promise was broken (see above)")
		}
	}
	return nil
}

// serveCommand is the argv that runs `herald serve`: this executable.
func serveCommand() ([]string, error) {
	if v := os.Getenv(benchServeEnv); v != "" {
		return strings.Fields(v), nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: cannot find the herald executable: %w", err)
	}
	return []string{exe, "serve"}, nil
}

// workerCommand is the argv that runs `herald bench worker`: this
// executable, or the herald of HERALD_BENCH_SERVE (tests: their own
// binary).
func workerCommand() ([]string, error) {
	if f := strings.Fields(os.Getenv(benchServeEnv)); len(f) > 0 {
		return []string{f[0], "bench", "worker"}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: cannot find the herald executable: %w", err)
	}
	return []string{exe, "bench", "worker"}, nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func runBenchCompare(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: herald bench compare old/results.json new/results.json")
	}
	a, err := bench.ReadResults(args[0])
	if err != nil {
		return err
	}
	b, err := bench.ReadResults(args[1])
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, bench.Compare(a, b))
	return err
}
