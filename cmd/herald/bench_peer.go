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
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/bench"
)

// runBenchPeer is `herald bench peer`: the same fan-out workload against
// Herald and against a Centrifugo binary, side by side.
func runBenchPeer(args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "report" {
		if len(args) != 2 {
			return errors.New("usage: herald bench peer report DIR (re-renders DIR/report.md from DIR/results.json)")
		}
		return bench.RerenderPeer(args[1])
	}
	fs := flag.NewFlagSet("bench peer", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: herald bench peer [--centrifugo PATH] [flags]
       herald bench peer report DIR   (re-render DIR/report.md from DIR/results.json)

Runs the same fan-out workload against Herald (this binary's herald serve)
and against the Centrifugo v6 binary at PATH, a fresh server process per
run, alternating the servers, with the same WebSocket client, the same
100-byte payload and publishes through each server's HTTP API; the server
is pinned to --server-cpus and the load client to --load-cpus. Prints per
case the medians and ranges for each server and the ratio Herald ÷
Centrifugo, and writes results.json and report.md in --out. Without
--centrifugo it runs Herald alone.

Cases: `+strings.Join(bench.PeerCases, ", ")+`
  flat-1000   1,000 subscribers, 16 publishers flat out (closed loop)
  flat-5000   5,000 subscribers, 16 publishers flat out
  rate-1000   1,000 subscribers at 200 msg/s (200k deliveries/s offered, open loop)
  idle-10000  server memory per idle WebSocket connection (RSS growth over 10,000)

Examples:
  GOBIN=/tmp/centrifugo-bin go install github.com/centrifugal/centrifugo/v6@v6.9.1
  herald bench peer --centrifugo /tmp/centrifugo-bin/centrifugo --out bench-results/peer
  herald bench peer --quick                          # Herald alone, seconds: a test

Flags:
`)
		fs.PrintDefaults()
	}
	var (
		cfg            bench.PeerConfig
		cases, out     string
		noPin          bool
		warmup, window time.Duration
	)
	fs.StringVar(&cfg.Centrifugo, "centrifugo", "", "path of a Centrifugo v6 binary to compare with; empty runs Herald alone")
	fs.IntVar(&cfg.Runs, "runs", 5, "runs per case and server (fresh process each, servers alternated); --quick: 1")
	fs.StringVar(&cases, "cases", "", "cases to run, comma-separated (default all: "+strings.Join(bench.PeerCases, ",")+")")
	fs.StringVar(&out, "out", "", "output directory (default bench-results/peer-<date-time>)")
	fs.BoolVar(&cfg.Quick, "quick", false, "tiny run for a test: 200 subscribers, 1 s warm-up, 2 s windows, 1 run")
	fs.DurationVar(&warmup, "warmup", 0, "warm-up before each measurement window (default 3s; --quick 1s)")
	fs.DurationVar(&window, "window", 0, "measurement window; idle: the wait after the last connection (default 10s; --quick 2s)")
	fs.StringVar(&cfg.ServerCPUs, "server-cpus", "0", "CPU list each server is pinned to")
	fs.StringVar(&cfg.LoadCPUs, "load-cpus", "1", "CPU list the load client (this process) is pinned to")
	fs.BoolVar(&noPin, "no-pin", false, "do not pin processes to CPUs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench peer: unexpected arguments %q", fs.Args())
	}
	if cfg.Runs < 1 {
		return fmt.Errorf("bench peer: --runs must be at least 1 (got %d)", cfg.Runs)
	}
	if cfg.Quick && !flagSet(fs, "runs") {
		cfg.Runs = 1
	}
	cfg.Cases = splitList(cases)
	if cases != "" && len(cfg.Cases) == 0 {
		return fmt.Errorf("bench peer: --cases %q names no case (want %s)", cases, strings.Join(bench.PeerCases, ","))
	}
	cfg.Warmup, cfg.Window = warmup, window
	cfg.Pin = !noPin && bench.CPUCount() >= 2
	serve, err := serveCommand()
	if err != nil {
		return err
	}
	cfg.Serve = serve
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("bench peer: %w", err)
	}
	cfg.Command = "herald bench peer " + strings.Join(args, " ")
	if out == "" {
		out = filepath.Join("bench-results", "peer-"+time.Now().Format("2006-01-02T15-04-05"))
	}
	cfg.Out = out
	cfg.Log = stdout
	if cfg.Centrifugo == "" {
		fmt.Fprintln(stdout, "bench peer: no --centrifugo: running Herald alone (no ratios)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.RunPeer(ctx, cfg)
	if res != nil {
		fmt.Fprintf(stdout, "\nload average %s → %s\n\n%s\nresults: %s (%.0f s)\n", res.LoadAvgStart, res.LoadAvgEnd,
			bench.PeerTables(res), filepath.Join(out, "report.md"), res.Duration)
	}
	return err
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
