package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/transports/devcert"
)

// Config configures a run. Zero values are the defaults.
type Config struct {
	// Out is the output directory (created).
	Out string
	// Serve is the argv that runs `herald serve` (flags are appended):
	// typically {os.Executable(), "serve"}. Needed unless Targets is set.
	Serve []string
	// Instances is how many herald serve children to start. Default 3.
	Instances int
	// Targets are running servers' plain base URLs (http://host:8080), and
	// TLSTargets their TLS base URLs in the same order; with Targets the
	// bench starts nothing and APIKey is needed.
	Targets, TLSTargets []string
	APIKey              string
	// CACert is a PEM file to trust for TLS targets; empty with Targets
	// skips verification.
	CACert string
	// Transports and Scenarios to run; empty means all.
	Transports, Scenarios []string
	// Quick is the CI run: small loads, short windows.
	Quick bool
	// Scale multiplies the full run's connection counts (default 1).
	Scale float64
	// Pin pins the children to ServerCPUs and the bench to LoadCPUs.
	Pin                  bool
	ServerCPUs, LoadCPUs string
	// SourceAddrs spreads client connections over this many loopback
	// source addresses (127.0.0.2, .3, …) when the servers are on
	// loopback. Default 4.
	SourceAddrs int
	// Progress receives a live progress line (a terminal), or nil.
	Progress io.Writer
	// Log receives one line per finished result; nil means silent.
	Log io.Writer
	// Command is recorded in the report.
	Command string
}

// Run runs the configured scenarios and writes results.json and report.md
// (and charts) into cfg.Out. The error is non-nil when the run could not
// be made; a broken promise is reported in Results.Failures.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.Instances <= 0 {
		cfg.Instances = 3
	}
	if cfg.Scale <= 0 {
		cfg.Scale = 1
	}
	if cfg.SourceAddrs <= 0 {
		cfg.SourceAddrs = 4
	}
	if len(cfg.Transports) == 0 {
		cfg.Transports = AllTransports
	}
	if len(cfg.Scenarios) == 0 {
		cfg.Scenarios = AllScenarios
	}
	for _, t := range cfg.Transports {
		if !slices.Contains(AllTransports, t) {
			return nil, fmt.Errorf("unknown transport %q (want %s)", t, strings.Join(AllTransports, ", "))
		}
	}
	for _, s := range cfg.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (want %s)", s, strings.Join(AllScenarios, ", "))
		}
	}
	if len(cfg.Targets) > 0 && cfg.APIKey == "" {
		return nil, errors.New("--target needs --api-key")
	}
	if len(cfg.Targets) == 0 && len(cfg.Serve) == 0 {
		return nil, errors.New("bench: no herald command to start servers with")
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	raiseFileLimit()
	// This machine caps UDP buffers below quic-go's wish; the warning is
	// about the host, not the run (docs/transports.md has the sysctl).
	_ = os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	start := time.Now()
	res := &Results{Started: start.UTC(), Command: cfg.Command, Quick: cfg.Quick, Machine: readMachine(), Method: method(cfg)}
	res.Machine.NoFile = fileLimit()
	if cfg.Pin {
		if err := pinSelf(cfg.LoadCPUs); err != nil {
			res.Method = append(res.Method, "CPU pinning failed: "+err.Error())
		} else {
			res.Machine.ServerCPUs, res.Machine.LoadCPUs = cfg.ServerCPUs, cfg.LoadCPUs
		}
	}
	r := &runner{cfg: cfg, res: res, prog: newProgress(cfg.Progress)}
	defer r.prog.done()
	if err := r.setup(); err != nil {
		return nil, err
	}
	if len(cfg.Targets) > 0 {
		res.Targets = strings.Join(append(slices.Clone(cfg.Targets), cfg.TLSTargets...), " ")
	} else {
		res.Targets = fmt.Sprintf("children: redis-server and %d × herald serve", cfg.Instances)
	}
	var runErr error
	for _, sc := range cfg.Scenarios {
		if err := ctx.Err(); err != nil {
			runErr = err
			break
		}
		if err := r.scenario(ctx, sc); err != nil {
			runErr = fmt.Errorf("%s: %w", sc, err)
			if ctx.Err() != nil {
				break
			}
			res.Failures = append(res.Failures, runErr.Error())
			runErr = nil
		}
	}
	for _, x := range res.Results {
		if !x.Correctness.Clean() {
			res.Failures = append(res.Failures, fmt.Sprintf("%s on %s (%s): lost %d, duplicates %d, reordered %d",
				x.Scenario, x.Transport, x.Load, x.Correctness.Lost, x.Correctness.Duplicate, x.Correctness.Reordered))
		}
	}
	res.Duration = time.Since(start).Seconds()
	if err := res.write(filepath.Join(cfg.Out, "results.json")); err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "report.md"), []byte(Report(res)), 0o644); err != nil {
		return res, err
	}
	if err := writeCharts(res, cfg.Out); err != nil {
		return res, fmt.Errorf("charts: %w", err)
	}
	return res, runErr
}

// runner is one run's shared state. Owned by Run.
type runner struct {
	cfg     Config
	res     *Results
	prog    *progress
	secret  string
	apiKey  string
	tls     *tls.Config
	sources []net.IP
	nonce   string
	mu      sync.Mutex // guards res.Results while transports run concurrently
}

func (r *runner) setup() error {
	r.secret, r.apiKey, r.nonce = randomHex(32), randomHex(16), randomHex(3)
	if len(r.cfg.Targets) > 0 {
		r.apiKey = r.cfg.APIKey
		r.tls = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the user's own targets; --ca to verify
		if r.cfg.CACert != "" {
			pem, err := os.ReadFile(r.cfg.CACert)
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%s: no certificate", r.cfg.CACert)
			}
			r.tls = &tls.Config{RootCAs: pool}
		}
	} else {
		// One certificate for every instance, made before they start.
		cert, _, err := devcert.LoadOrCreate(filepath.Join(r.cfg.Out, "certs"), devcert.DefaultHosts)
		if err != nil {
			return err
		}
		r.tls = &tls.Config{RootCAs: devcert.Pool(cert)}
	}
	loop := len(r.cfg.Targets) == 0
	for _, t := range r.cfg.Targets {
		loop = loop || isLoopback(t)
	}
	if loop && r.cfg.SourceAddrs > 0 {
		for i := range r.cfg.SourceAddrs {
			// Not 127.0.0.1, where the servers listen: a client's UDP
			// socket there could take the port a server wants next.
			ip := net.IPv4(127, 0, 0, byte(2+i))
			if l, err := net.Listen("tcp", ip.String()+":0"); err == nil { // the address is usable
				l.Close()
				r.sources = append(r.sources, ip)
			}
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func method(cfg Config) []string {
	m := []string{
		"Open-loop publishing at a fixed rate through POST /v1/publish: message k is scheduled at start + k/rate and carries its scheduled time (Unix ns) and a per-channel sequence number in its data; a publisher that falls behind sends what is due as one batch, so a slow server cannot slow the schedule (no coordinated omission).",
		"Latency = receive time at the client − scheduled publish time carried in the message, recorded in an HdrHistogram (1 µs – 120 s, 3 significant digits) for messages scheduled inside the measurement window; the warm-up before it is excluded.",
		"Every subscriber checks every sequence number of its channel: lost (never received, publishes that failed excluded), duplicated and out-of-order deliveries are counted exactly. The promise is zero of each.",
		"QUIC clients (sse-h3; h3 uses the same defaults in its dialer) keep alive every 10 s with a 30 s idle timeout: QUIC notices a killed server only by that timeout." + quickQUICNote(cfg),
		"Clients are transports/client reconnecting clients (one connection each; SSE over HTTP/2 and HTTP/3 get a connection of their own per client), subscribed end to end before publishing starts (a probe message is published until each has received it).",
		"Server cost from /proc/<pid>/stat of every instance and of Redis over the measurement window: CPU µs per delivered message and % of one core; RSS per connection from /proc/<pid>/status.",
		"Bytes on the wire: counted at the client's sockets (both directions, TLS and QUIC framing included): TCP through the HTTP transport's dial hook, QUIC through the http3.Transport Dial hook with a counting net.PacketConn. The HTTP/3 stream transport (h3) offers no dial hook in client.Config, so its bytes are not counted.",
	}
	if cfg.Quick {
		m = append(m, "QUICK RUN: every transport of a scenario runs at the same time on one set of servers, with small loads and 1 s windows. It checks the promises; its costs and latencies are shared between transports and not for comparison.")
	}
	if cfg.Pin {
		m = append(m, fmt.Sprintf("CPU placement: server instances and Redis pinned to CPU %s (taskset), the load generator to CPU %s (sched_setaffinity).", cfg.ServerCPUs, cfg.LoadCPUs))
	}
	return m
}

// logf writes a line to the run log.
func (r *runner) logf(format string, args ...any) {
	if r.cfg.Log != nil {
		r.prog.clear()
		fmt.Fprintf(r.cfg.Log, format+"\n", args...)
	}
}

var _ = runtime.NumCPU

func quickQUICNote(cfg Config) string {
	if cfg.Quick {
		return " This quick run uses 1 s / 3 s for sse-h3 (h3 cannot be configured through client.Config)."
	}
	return ""
}
