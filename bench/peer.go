package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PeerConfig configures `herald bench peer`: the same fan-out workload
// against Herald and against a Centrifugo binary. Zero values are the
// defaults.
type PeerConfig struct {
	// Out is the output directory (created): results.json, report.md and
	// one folder of server logs per run.
	Out string
	// Serve is the argv that runs `herald serve` (flags are appended).
	Serve []string
	// Centrifugo is the path of a Centrifugo v6 binary; empty runs Herald
	// alone.
	Centrifugo string
	// Cases to run, by name (PeerCases); empty means all.
	Cases []string
	// Runs per case and server, alternating the servers. Default 5
	// (1 with Quick).
	Runs int
	// Quick is the test run: 200 subscribers (and 200 idle connections),
	// 1 s warm-up, 2 s windows, 1 run.
	Quick bool
	// Warmup before, and Window of, each measurement. Defaults 3 s and
	// 10 s (idle: 10 s after the last connection).
	Warmup, Window time.Duration
	// Pin pins each server to ServerCPUs and this process (the load
	// client) to LoadCPUs.
	Pin                  bool
	ServerCPUs, LoadCPUs string
	// Log receives one line per run and the summary; nil means silent.
	Log io.Writer
	// Command is recorded in the report.
	Command string
}

// The kinds of peer case.
const (
	peerFlat = "flat" // closed loop, flat out
	peerRate = "rate" // open loop at a fixed rate
	peerIdle = "idle" // connections only: memory
)

// peerCase is one workload.
type peerCase struct {
	Name        string  `json:"name"`
	Kind        string  `json:"kind"`
	Subscribers int     `json:"subscribers"`
	Publishers  int     `json:"publishers,omitempty"`
	Rate        float64 `json:"rate_msgs_per_s,omitempty"`
}

// PeerCases are the cases, in run order: the hand measurement of issue
// #13 that this command reproduces.
var PeerCases = []string{"flat-1000", "flat-5000", "rate-1000", "idle-10000"}

var peerCaseDefs = map[string]peerCase{
	"flat-1000":  {Name: "flat-1000", Kind: peerFlat, Subscribers: 1000, Publishers: 16},
	"flat-5000":  {Name: "flat-5000", Kind: peerFlat, Subscribers: 5000, Publishers: 16},
	"rate-1000":  {Name: "rate-1000", Kind: peerRate, Subscribers: 1000, Publishers: 16, Rate: 200},
	"idle-10000": {Name: "idle-10000", Kind: peerIdle, Subscribers: 10000},
}

// quickSubscribers replaces every case's subscriber count with Quick.
const quickSubscribers = 200

// Validate checks the configuration before anything starts: a clear
// error, nothing changed.
func (c *PeerConfig) Validate() error {
	var errs []error
	if c.Centrifugo != "" {
		if err := checkExecutable(c.Centrifugo); err != nil {
			errs = append(errs, fmt.Errorf("--centrifugo: %w", err))
		}
	}
	for _, name := range c.Cases {
		if _, ok := peerCaseDefs[name]; !ok {
			errs = append(errs, fmt.Errorf("--cases: unknown case %q (want %s)", name, strings.Join(PeerCases, ", ")))
		}
	}
	if c.Runs < 0 {
		errs = append(errs, fmt.Errorf("--runs must be at least 1 (got %d)", c.Runs))
	}
	if c.Warmup < 0 || c.Window < 0 {
		errs = append(errs, errors.New("--warmup and --window must not be negative"))
	}
	// A bad CPU list is bad input even where pinning is off.
	var set unix.CPUSet
	if _, err := parseCPUList(c.ServerCPUs, &set); err != nil && (c.Pin || c.ServerCPUs != "") {
		errs = append(errs, fmt.Errorf("--server-cpus: %w", err))
	}
	if _, err := parseCPUList(c.LoadCPUs, &set); err != nil && (c.Pin || c.LoadCPUs != "") {
		errs = append(errs, fmt.Errorf("--load-cpus: %w", err))
	}
	if len(c.Serve) == 0 {
		errs = append(errs, errors.New("no herald command to start servers with"))
	}
	return errors.Join(errs...)
}

// checkExecutable reports whether path is a regular file this process may
// execute.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if unix.Access(path, unix.X_OK) != nil {
		return fmt.Errorf("%s is not executable", path)
	}
	return nil
}

// defaults fills in the zero values.
func (c *PeerConfig) defaults() {
	if len(c.Cases) == 0 {
		c.Cases = PeerCases
	}
	if c.Runs == 0 {
		c.Runs = 5
		if c.Quick {
			c.Runs = 1
		}
	}
	if c.Warmup == 0 {
		c.Warmup = 3 * time.Second
		if c.Quick {
			c.Warmup = time.Second
		}
	}
	if c.Window == 0 {
		c.Window = 10 * time.Second
		if c.Quick {
			c.Window = 2 * time.Second
		}
	}
}

// RunPeer runs every case against Herald and, when configured, against
// Centrifugo, alternating them run by run, and writes results.json and
// report.md into cfg.Out. A run that fails is recorded with its error and
// left out of the medians; the error returned is for a bench that could
// not be made at all.
func RunPeer(ctx context.Context, cfg PeerConfig) (*PeerResults, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	raiseFileLimit()
	start := time.Now()
	res := &PeerResults{Started: start.UTC(), Command: cfg.Command, Quick: cfg.Quick, Machine: readMachine(),
		Runs: cfg.Runs, WarmupS: cfg.Warmup.Seconds(), WindowS: cfg.Window.Seconds(), LoadAvgStart: loadAvg()}
	res.Machine.NoFile = fileLimit()
	res.Servers = []string{PeerHerald}
	if cfg.Centrifugo != "" {
		res.Servers = append(res.Servers, PeerCentrifugo)
		res.Centrifugo = centrifugoVersion(cfg.Centrifugo)
	}
	if cfg.Pin {
		if err := pinSelf(cfg.LoadCPUs); err != nil {
			return nil, fmt.Errorf("pin the load client to %s: %w", cfg.LoadCPUs, err)
		}
		res.Machine.ServerCPUs, res.Machine.LoadCPUs = cfg.ServerCPUs, cfg.LoadCPUs
	}
	res.Method = peerMethod(cfg)
	r := &peerRunner{cfg: cfg}
	var runErr error
	for _, name := range cfg.Cases {
		c := r.scaled(peerCaseDefs[name])
		cr := &PeerCaseResult{Case: c}
		res.Cases = append(res.Cases, cr)
		for i := range cfg.Runs {
			for _, kind := range runOrder(res.Servers, i) {
				if runErr = ctx.Err(); runErr != nil {
					break
				}
				run := r.run(ctx, c, kind, i)
				cr.Runs = append(cr.Runs, run)
				r.logRun(c, run)
			}
		}
		cr.summarize(res.Servers)
	}
	res.LoadAvgEnd = loadAvg()
	res.Duration = time.Since(start).Seconds()
	if failed, total := res.failedRuns(); runErr == nil && failed > 0 {
		runErr = fmt.Errorf("%d of %d runs failed (see %s)", failed, total, filepath.Join(cfg.Out, "report.md"))
	}
	if err := res.write(filepath.Join(cfg.Out, "results.json")); err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "report.md"), []byte(PeerReport(res)), 0o644); err != nil {
		return res, err
	}
	return res, runErr
}

// runOrder alternates which server goes first: H C, C H, H C, …
func runOrder(servers []string, i int) []string {
	o := slices.Clone(servers)
	if i%2 == 1 {
		slices.Reverse(o)
	}
	return o
}

// peerRunner runs one case on one server. Owned by RunPeer.
type peerRunner struct {
	cfg PeerConfig
}

func (r *peerRunner) scaled(c peerCase) peerCase {
	if r.cfg.Quick {
		c.Subscribers = quickSubscribers
	}
	return c
}

func (r *peerRunner) logRun(c peerCase, run *PeerRun) {
	if r.cfg.Log == nil {
		return
	}
	fmt.Fprintf(r.cfg.Log, "%-10s run %d %-10s %s\n", c.Name, run.Index+1, run.Server, run.line(c))
}

// run measures one fresh server process.
func (r *peerRunner) run(ctx context.Context, c peerCase, kind string, i int) *PeerRun {
	run := &PeerRun{Server: kind, Index: i}
	dir := filepath.Join(r.cfg.Out, "runs", fmt.Sprintf("%s-%d-%s", c.Name, i+1, kind))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		run.Error = err.Error()
		return run
	}
	srv, err := r.start(ctx, kind, dir)
	if err != nil {
		run.Error = err.Error()
		return run
	}
	defer srv.proc.kill()
	if err := r.measure(ctx, c, srv, run); err != nil {
		run.Error = err.Error()
	}
	if ctx.Err() != nil {
		// Stopped mid-run: its figures cover part of a window.
		run.Error = "interrupted: " + ctx.Err().Error()
	}
	if !srv.proc.alive() && run.Error == "" {
		run.Error = fmt.Sprintf("%s exited during the run (see %s)", kind, srv.log)
	}
	run.LoadAvg = loadAvg()
	return run
}

func (r *peerRunner) start(ctx context.Context, kind, dir string) (*peerServer, error) {
	cpus := ""
	if r.cfg.Pin {
		cpus = r.cfg.ServerCPUs
	}
	secret, key := randomHex(32), randomHex(16)
	if kind == PeerHerald {
		return startPeerHerald(ctx, r.cfg.Serve, dir, cpus, secret, key)
	}
	return startPeerCentrifugo(ctx, r.cfg.Centrifugo, dir, cpus, secret, key)
}

// measure connects the subscribers, waits until each is subscribed end to
// end, then runs the case's load and records the run's figures.
func (r *peerRunner) measure(ctx context.Context, c peerCase, srv *peerServer, run *PeerRun) error {
	pid := srv.proc.pid()
	if c.Kind == peerIdle {
		time.Sleep(time.Second) // let the fresh process settle before its baseline
	}
	rss0, _ := procRSS(pid)
	workers := max(c.Publishers, 1)
	pubs := newPeerPublishers(srv, workers)
	defer pubs.close()
	f := newPeerFleet(ctx, srv, workers)
	defer f.close()
	t0 := time.Now()
	if err := f.connect(c.Subscribers, 2*time.Minute); err != nil {
		return err
	}
	if err := f.waitReady(ctx, pubs.post, 30*time.Second); err != nil {
		return err
	}
	run.ConnectS = time.Since(t0).Seconds()
	if c.Kind == peerIdle {
		return r.idle(ctx, c, srv, rss0, run)
	}
	return r.load(ctx, c, srv, f, pubs, run)
}

// idle measures server memory per connection: RSS growth over the
// connections, Window after the last one was subscribed.
func (r *peerRunner) idle(ctx context.Context, c peerCase, srv *peerServer, rss0 int64, run *PeerRun) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(r.cfg.Window):
	}
	rss1, err := procRSS(srv.proc.pid())
	if err != nil {
		return err
	}
	run.RSSBytes, run.BaseRSSBytes = rss1, rss0
	run.KiBPerConn = float64(rss1-rss0) / 1024 / float64(c.Subscribers)
	return nil
}

// load publishes for Warmup + Window and measures over the Window.
func (r *peerRunner) load(ctx context.Context, c peerCase, srv *peerServer, f *peerFleet, pubs *peerPublishers, run *PeerRun) error {
	pid, self := srv.proc.pid(), os.Getpid()
	start := time.Now()
	winStart, winEnd := start.Add(r.cfg.Warmup), start.Add(r.cfg.Warmup+r.cfg.Window)
	f.window.Store(&[2]int64{winStart.UnixNano(), winEnd.UnixNano()})
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c.Kind == peerRate {
			pubs.open(pctx, c.Rate, start, winEnd)
		} else {
			pubs.flat(pctx, winEnd)
		}
	}()
	time.Sleep(time.Until(winStart))
	d0, cpu0, self0, at0 := f.delivered(), mustCPU(pid), mustCPU(self), time.Now()
	time.Sleep(time.Until(winEnd))
	d1, cpu1, self1, at1 := f.delivered(), mustCPU(pid), mustCPU(self), time.Now()
	run.RSSBytes, _ = procRSS(pid)
	select {
	case <-done:
	case <-time.After(15 * time.Second): // requests still in flight time out at 10 s
		cancel()
		<-done
	}
	f.waitDrained(time.Second, 15*time.Second)
	f.close()
	span := at1.Sub(at0).Seconds()
	run.DeliveriesPerS = float64(d1-d0) / span
	run.ServerCores = float64(cpu1-cpu0) / 1e6 / span
	run.LoadCores = float64(self1-self0) / 1e6 / span
	if run.ServerCores > 0 {
		run.PerCore = run.DeliveriesPerS / run.ServerCores
	}
	if c.Kind == peerRate {
		run.OfferedPerS = c.Rate * float64(c.Subscribers)
	}
	run.Latency = summarize(f.lat.merged())
	run.Latency.Percentiles = nil
	run.Published, run.PubFailed = pubs.total(), pubs.failures.Load()
	if e, ok := pubs.lastErr.Load().(string); ok {
		run.LastPubError = e
	}
	n := f.count(pubs)
	run.Lost, run.Duplicate, run.Reordered, run.Alien = n.Lost, n.Duplicate, n.Reordered, n.Alien
	run.Disconnected, run.Closes = n.Disconnected, closeReasons(n.Closes)
	return nil
}

// mustCPU is a process's CPU time in µs, 0 if it cannot be read (the run
// then fails on the server having exited).
func mustCPU(pid int) int64 {
	us, _ := procCPU(pid)
	return us
}

// loadAvg is /proc/loadavg's three averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func peerMethod(cfg PeerConfig) []string {
	m := []string{
		fmt.Sprintf("Each run starts a fresh server process; runs alternate the servers and which goes first (H C, C H, …), %d per case and server.", cfg.Runs),
		"Herald: `herald serve` with the memory broker, a generated secret and API key, `--publish-rate 0 --max-conns-per-user -1`, plain listener only, its other flags at their defaults.",
		"Centrifugo: the given binary with a generated JSON config: memory engine, HMAC connection tokens, HTTP API key, channels without namespace at their defaults (no history, presence, join/leave, recovery or positioning), health endpoint on, usage statistics off; its other options at their defaults.",
		"The same load client for both, in this process: WebSocket subscribers (github.com/coder/websocket, no compression) that split each frame into its newline-separated messages and find the payload's fields with the same code. Each subscriber is a distinct user; Herald's connect with `/v1/ws?token=…&channel=bench`, Centrifugo's send the JSON protocol's connect command with an HS256 JWT whose `channels` claim subscribes them server-side (no subscribe round trip) and answer its pings.",
		fmt.Sprintf("Payload: the same %d bytes on both, `{\"w\":worker,\"s\":seq,\"t\":unix_ns,\"p\":\"xx…\"}`, published one message per request by N workers POSTing over keep-alive to Herald's `POST /v1/publish` or Centrifugo's `POST /api/publish` (the same request body).", peerPayloadSize),
		fmt.Sprintf("Load cases: %s warm-up, then a %s window: deliveries/s counted by the subscribers over the window, server CPU from /proc/<pid>/stat over the same window, per core = deliveries/s ÷ cores used. Latency (HdrHistogram) = receive time − the payload's time, for messages stamped in the window.", cfg.Warmup, cfg.Window),
		"Flat out: each worker publishes its next message as soon as the previous one was answered (closed loop), stamped with its send time. At a rate: open loop, message k scheduled at start + k/rate, stamped with its scheduled time; offered = rate × subscribers.",
		"Lost and duplicates: each subscriber checks every worker's sequence numbers after the load has drained; subscribers the server disconnected are counted apart (disconnected), not as lost.",
		fmt.Sprintf("Idle: RSS growth of the server process from before the connections to %s after the last one was subscribed, divided by the connections.", cfg.Window),
	}
	if cfg.Pin {
		m = append(m, fmt.Sprintf("Server pinned to CPU %s (taskset, so its GOMAXPROCS follows), load client pinned to CPU %s.", cfg.ServerCPUs, cfg.LoadCPUs))
	} else {
		m = append(m, "Not pinned: server and load client share every CPU.")
	}
	return m
}
