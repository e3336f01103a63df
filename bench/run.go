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
	"strconv"
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
	// Worker is the argv that runs `herald bench worker`, a load-generator
	// process of the scale-out scenario (worker.go): typically
	// {os.Executable(), "bench", "worker"}. Needed by scale-out only.
	Worker []string
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
	// Redis is a running Redis (redis://, rediss://) or Redis Cluster
	// (redis-cluster://, rediss-cluster://) URL the started instances use:
	// the bench then starts no Redis, does not measure its CPU and does not
	// run redis-restart. Not with Targets or RedisCluster.
	Redis string
	// RedisCluster, when > 0, makes the bench start a Redis Cluster of
	// that many masters (at least 3, no replicas) instead of one
	// redis-server. Not with Targets or Redis.
	RedisCluster int
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
	explicit := len(cfg.Scenarios) > 0
	if err := checkRedis(cfg, explicit); err != nil {
		return nil, err
	}
	if len(cfg.Scenarios) == 0 {
		cfg.Scenarios = AllScenarios
		if cfg.Redis != "" {
			// It needs a Redis the bench can kill; method() says so.
			cfg.Scenarios = slices.DeleteFunc(slices.Clone(AllScenarios), func(s string) bool { return s == RedisRestart })
		}
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
	command := cfg.Command
	if cfg.Redis != "" {
		command = strings.ReplaceAll(command, cfg.Redis, RedactURL(cfg.Redis))
	}
	res := &Results{Started: start.UTC(), Command: command, Quick: cfg.Quick, Machine: readMachine(), Method: method(cfg),
		Redis: topology(cfg)}
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
		res.Targets = fmt.Sprintf("children: %s and %d × herald serve", res.Redis.children(), cfg.Instances)
		if !res.Redis.Started {
			res.Targets = fmt.Sprintf("children: %d × herald serve (Redis: --redis, not started by the bench)", cfg.Instances)
		}
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
		"QUIC clients (sse-h3, h3, wt) use transports/client's defaults (client.DefaultQUICConfig: keep-alive every 5 s, 15 s idle timeout; client.QUICDialer: a UDP socket of their own connected to the server, a liveness probe each second of silence) and a TLS session cache of their own; a killed server's port is dead (no process to send a stateless reset), and its kernel's ICMP port unreachable, which the connected socket hears, ends the connection at the client's next packet (a probe at the latest, within 1 s); the reconnection resumes the TLS session on the surviving instance (the instances share the ticket key, derived from --secret).",
		"Clients are transports/client reconnecting clients (one connection each; SSE over HTTP/2 and HTTP/3 get a connection of their own per client), subscribed end to end before publishing starts (a probe message is published until each has received it).",
		"Server cost from /proc/<pid>/stat over the measurement window, of the instances that hold the scenario's clients or take its publishes (idle instances are left out) and of Redis: % of one core, and CPU µs per delivery the clients received in that same window (so a backlog does not distort it); RSS per connection from /proc/<pid>/status. \"deliveries/s (offered)\" counts the deliveries of the messages scheduled in the window, \"received/s\" what the clients received during it: below the offered rate, the system fell behind.",
		"Bytes on the wire: counted at the client's sockets (both directions, TLS and QUIC framing included): TCP through the HTTP transport's dial hook, QUIC through the http3.Transport Dial hook with a counting net.PacketConn.",
	}
	if slices.Contains(cfg.Scenarios, ScaleOut) {
		m = append(m, scaleMethod(cfg))
	}
	if cfg.Quick {
		m = append(m, "QUICK RUN: every transport of a scenario runs at the same time on one set of servers, with small loads and 1 s windows. It checks the promises; its costs and latencies are shared between transports and not for comparison.")
	}
	switch {
	case cfg.RedisCluster > 0:
		m = append(m, fmt.Sprintf("Redis: a Redis Cluster of %d masters and no replicas (nothing fails over), started by the bench on loopback (redis-server --cluster-enabled yes, joined by redis-cli --cluster create); the instances use it through --redis redis-cluster://… and sharded Pub/Sub (SSUBSCRIBE/SPUBLISH). Redis CPU is the sum over every node. redis-restart kills every node at once (SIGKILL) and restarts them all on their ports from their AOF and nodes.conf; the cluster takes writes again once every node is back and agrees (cluster_state:ok).", cfg.RedisCluster))
	case cfg.Redis != "":
		what := "a running Redis"
		if isClusterURL(cfg.Redis) {
			what = "a running Redis Cluster"
		}
		m = append(m, fmt.Sprintf("Redis: %s the bench did not start (--redis %s): its configuration (persistence, topology, placement) is its owner's, its CPU is not measured, and redis-restart is not run (the bench cannot kill and restart it).", what, RedactURL(cfg.Redis)))
	}
	if cfg.Pin {
		who := "server instances and Redis"
		if cfg.Redis != "" {
			who = "server instances"
		}
		m = append(m, fmt.Sprintf("CPU placement: %s pinned to CPU %s (taskset), the load generator to CPU %s (sched_setaffinity).", who, cfg.ServerCPUs, cfg.LoadCPUs))
	}
	return m
}

// checkRedis rejects Redis options that contradict each other or the
// targets; explicit is whether the scenarios were chosen (not defaulted).
func checkRedis(cfg Config, explicit bool) error {
	switch {
	case cfg.RedisCluster < 0:
		return fmt.Errorf("--redis-cluster %d: want the number of masters (at least 3), or 0 for one redis-server", cfg.RedisCluster)
	case cfg.RedisCluster > 0 && cfg.RedisCluster < 3:
		return fmt.Errorf("--redis-cluster %d: a Redis Cluster needs at least 3 masters (redis-cli --cluster create); 0 runs one redis-server", cfg.RedisCluster)
	case cfg.RedisCluster > 0 && cfg.Redis != "":
		return errors.New("--redis-cluster starts a Redis Cluster, --redis uses a running one: give one of them")
	case len(cfg.Targets) > 0 && (cfg.Redis != "" || cfg.RedisCluster > 0):
		return errors.New("--target measures running servers, which have their own Redis: --redis and --redis-cluster configure the servers the bench starts")
	case cfg.Redis == "":
		return nil
	}
	if err := checkRedisURL(cfg.Redis); err != nil {
		return err
	}
	if explicit && slices.Contains(cfg.Scenarios, RedisRestart) {
		return fmt.Errorf("scenario %s kills and restarts Redis: it needs a Redis the bench starts, not --redis", RedisRestart)
	}
	return nil
}

// checkRedisURL checks the form of a --redis URL (herald serve parses it
// fully).
func checkRedisURL(raw string) error {
	scheme, rest, ok := strings.Cut(raw, "://")
	bad := func(why string) error {
		return fmt.Errorf("--redis %q: %s (want redis://host:port/db, rediss://…, or redis-cluster://host1:port1,host2:port2,…)", RedactURL(raw), why)
	}
	if !ok {
		return bad("not a URL")
	}
	switch scheme {
	case "redis", "rediss", "redis-cluster", "rediss-cluster":
	default:
		return bad("unknown scheme " + strconv.Quote(scheme))
	}
	hosts := rest
	if i := strings.IndexAny(hosts, "/?"); i >= 0 {
		hosts = hosts[:i]
	}
	if i := strings.LastIndex(hosts, "@"); i >= 0 {
		hosts = hosts[i+1:]
	}
	if !isClusterURL(raw) && strings.Contains(hosts, ",") {
		return bad("several hosts in a single-Redis URL (redis-cluster:// for a cluster)")
	}
	for _, h := range strings.Split(hosts, ",") {
		if h == "" || strings.HasPrefix(h, ":") {
			return bad("no host")
		}
	}
	return nil
}

func isClusterURL(u string) bool {
	return strings.HasPrefix(u, "redis-cluster://") || strings.HasPrefix(u, "rediss-cluster://")
}

// RedactURL hides the password of a Redis URL (user:xxxxx@; a lone
// userinfo is hidden whole).
func RedactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	auth := rest
	if i := strings.IndexAny(auth, "/?"); i >= 0 {
		auth = auth[:i]
	}
	i := strings.LastIndex(auth, "@")
	if i < 0 {
		return raw
	}
	user, _, hasPass := strings.Cut(auth[:i], ":")
	if !hasPass {
		user = "" // redis://secret@host: go-redis may take it for a password
	}
	return scheme + "://" + user + ":xxxxx" + rest[i:]
}

// topology is the Redis the servers of a run use.
func topology(cfg Config) RedisTopology {
	switch {
	case len(cfg.Targets) > 0:
		return RedisTopology{Topology: "unknown"}
	case cfg.Redis != "" && isClusterURL(cfg.Redis):
		return RedisTopology{Topology: "cluster", URL: RedactURL(cfg.Redis)}
	case cfg.Redis != "":
		return RedisTopology{Topology: "single", URL: RedactURL(cfg.Redis)}
	case cfg.RedisCluster > 0:
		return RedisTopology{Topology: "cluster", Masters: cfg.RedisCluster, Started: true}
	}
	return RedisTopology{Topology: "single", Started: true}
}

// logf writes a line to the run log.
func (r *runner) logf(format string, args ...any) {
	if r.cfg.Log != nil {
		r.prog.clear()
		fmt.Fprintf(r.cfg.Log, format+"\n", args...)
	}
}

var _ = runtime.NumCPU
