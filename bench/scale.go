package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// The scale-out scenario: tens of thousands of connections over several
// instances, broadcast through Redis. One process may hold only about
// 20,000 open files here, so the clients live in worker processes
// (worker.go), each a fleet of its own.

const (
	// scaleInstances and scalePerInstance are the full run's load: 4
	// instances × 18,000 connections.
	scaleInstances   = 4
	scalePerInstance = 18000
	// workerMaxClients is the most connections one worker holds: below the
	// open-files limit (20,000 here), leaving room for the connections of
	// its token requests and the runtime's own files.
	workerMaxClients = 15000
	// scaleRate is the full run's publish rate: every message goes to
	// every client, 72,000 deliveries a message, and each costs the
	// servers (one core for the four instances and Redis) and the load
	// generator (one core) some 10–15 µs without batching: a message
	// every 5 s keeps both well below saturation.
	scaleRate = 0.2
	// scaleRamp is the full run's connection ramp, all workers together:
	// each connection is a token request, a WebSocket handshake and a
	// Redis subscription to the user's own channel.
	scaleRamp = 1200.0
)

// scalePlan is the load of one scale-out run.
type scalePlan struct {
	instances       int
	clients         int
	workers         int
	rate            float64 // messages per second
	ramp            float64 // connections per second, all workers together
	warmup, measure time.Duration
	drain           time.Duration
	bufferSize      int
	capped          bool // fewer per instance than --scale asks: the servers' open-files limit
}

func planScaleOut(cfg Config) scalePlan {
	if cfg.Quick {
		p := scalePlan{instances: 2, clients: 200, workers: 2, rate: 10, ramp: 1000,
			warmup: 200 * time.Millisecond, measure: 800 * time.Millisecond, drain: 10 * time.Second, bufferSize: 64}
		if len(cfg.Targets) > 0 {
			p.instances = min(2, len(cfg.Targets))
		}
		return p
	}
	inst := scaleInstances
	if len(cfg.Targets) > 0 {
		inst = len(cfg.Targets)
	}
	per := max(1, int(scalePerInstance*cfg.Scale))
	lim := int(fileLimit())
	capped := false
	if lim > 0 && len(cfg.Targets) == 0 && per > lim-1500 {
		// The instances have the bench's limit too: one file a connection
		// and some of their own.
		per, capped = max(1, lim-1500), true
	}
	n := per * inst
	perWorker := workerMaxClients
	if lim > 0 && lim-3000 < perWorker {
		perWorker = max(1000, lim-3000)
	}
	return scalePlan{instances: inst, clients: n, capped: capped, workers: max(2, (n+perWorker-1)/perWorker), rate: scaleRate, ramp: scaleRamp,
		warmup: 5 * time.Second, measure: 20 * time.Second, drain: 15 * time.Second, bufferSize: 16}
}

func (p scalePlan) load(instances int) string {
	return fmt.Sprintf("%d × %d subscribers × %g msg/s, %d workers", instances, p.clients/max(instances, 1), p.rate, p.workers)
}

// scaleTransports are the transports scale-out runs on: the run's
// HTTP/1.1 ones (ws and sse-h1); the quick run's ws only.
func scaleTransports(cfg Config) []string {
	var out []string
	for _, t := range cfg.Transports {
		if t == WS || (t == SSEH1 && !cfg.Quick) {
			out = append(out, t)
		}
	}
	return out
}

// scaleMethod is the method line of the scale-out scenario.
func scaleMethod(cfg Config) string {
	p := planScaleOut(cfg)
	per := (p.clients + p.workers - 1) / p.workers
	k := max(cfg.SourceAddrs, 1)
	pin := "not pinned (--no-pin)"
	if cfg.Pin {
		pin = "pinned to CPU " + cfg.LoadCPUs + " like the bench (taskset)"
	}
	inst := fmt.Sprintf("its own cluster of %d instances (whatever --instances says) and Redis", p.instances)
	if len(cfg.Targets) > 0 {
		inst = fmt.Sprintf("the %d targets", p.instances)
	}
	capped := ""
	if p.capped {
		capped = fmt.Sprintf(" (capped at %d per instance by the servers' own open-files limit)", p.clients/p.instances)
	}
	return fmt.Sprintf("scale-out: %d clients%s on %s, client i on instance i mod %d, all subscribed to one broadcast channel; "+
		"each message is published through REST on the next instance in turn, so it reaches the others through Redis. "+
		"One process may hold only about %d open files here, so the load generator spreads the connections over %d worker processes "+
		"(the bench's own binary re-executed as `herald bench worker`, each a fleet of the same reconnecting clients, %s), "+
		"each holding a contiguous slice of about %d clients (at most %d a process) and dialing from %d loopback source addresses of its own "+
		"(127.0.0.x after the bench's, so no source address runs short of ephemeral ports). The connections ramp at %.0f/s in all. "+
		"Workers report progress and, at the end, exact counts: the bench sends each the publisher's last sequence number and failed publishes, "+
		"each checks its own subscribers' streams against them, and the bench adds up their counts and merges their HdrHistograms; "+
		"a worker that dies fails the scenario. Load generator CPU is the sum of the workers' and the bench's. "+
		"Latency here is mostly the fan-out itself: each message is %d writes on the servers' core(s), and its last delivery waits for all of them. "+
		"It runs on ws and sse-h1 only (the quick run: ws only), about 1.5 minutes each: SSE over HTTP/2 pays a TLS handshake per connection (under 1,000 connects/s in the idle scenario), "+
		"and the QUIC transports (sse-h3, h3, wt) a UDP socket per client (an open file each, within the same limits), a keep-alive PING every 5 s per connection "+
		"(some 14,000 packets/s at this count before any message) and 3–4 times WebSocket's server memory per idle connection: beyond the one core of load generator and the scenario's few minutes.",
		p.clients, capped, inst, p.instances, fileLimit(), p.workers, pin, per, workerMaxClients, k, p.ramp, p.clients)
}

// scaleOut runs the scale-out scenario on its transports.
func (r *runner) scaleOut(ctx context.Context) error {
	plan := planScaleOut(r.cfg)
	trs := scaleTransports(r.cfg)
	if len(trs) == 0 {
		r.logf("%-15s skipped: it runs on ws (and sse-h1 when named), none of --transport %s", ScaleOut, strings.Join(r.cfg.Transports, ","))
		return nil
	}
	if len(r.cfg.Worker) == 0 {
		return errors.New("no worker command (Config.Worker, `herald bench worker`) to spread the connections over processes")
	}
	var errs []error
	for _, tr := range trs {
		if err := ctx.Err(); err != nil {
			return err
		}
		cl, err := r.scaleCluster(ctx, tr, plan.instances)
		if err != nil {
			return err
		}
		res := r.scaleRun(ctx, cl, tr, plan)
		if cl != nil {
			cl.close()
		}
		r.add(res)
		if res.Error != "" {
			errs = append(errs, fmt.Errorf("%s: %s", tr, res.Error))
		}
	}
	return errors.Join(errs...)
}

// scaleCluster starts Redis and n instances for one transport, as
// eachTransport does, whatever the run's --instances; nil with targets.
func (r *runner) scaleCluster(ctx context.Context, tr string, n int) (*cluster, error) {
	if len(r.cfg.Targets) > 0 {
		return nil, nil
	}
	dir := filepath.Join(r.cfg.Out, "logs", ScaleOut+"-"+tr)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r.prog.set("%s %s: starting Redis and %d instances", ScaleOut, tr, n)
	return startCluster(ctx, clusterConfig{
		Dir: dir, CertDir: filepath.Join(r.cfg.Out, "certs"), Serve: r.cfg.Serve, Instances: n,
		ServerCPUs: r.serverCPUs(), RedisURL: r.cfg.Redis, RedisCluster: r.cfg.RedisCluster,
	}, r.secret, r.apiKey)
}

// workerSources are worker w's loopback source addresses: k of its own,
// after the bench's.
func (r *runner) workerSources(w int) []string {
	if len(r.sources) == 0 {
		return nil // not on loopback
	}
	k := max(r.cfg.SourceAddrs, 1)
	var out []string
	for j := range k {
		last := 2 + len(r.sources) + w*k + j
		if last > 254 {
			break
		}
		out = append(out, net.IPv4(127, 0, 0, byte(last)).String())
	}
	return out
}

// workerTLS is how workers verify TLS servers: the development
// certificate the bench made, --ca, or not at all (--target without --ca).
func (r *runner) workerTLS() (roots string, skip bool, err error) {
	if len(r.cfg.Targets) > 0 {
		if r.cfg.CACert == "" {
			return "", true, nil
		}
		b, err := os.ReadFile(r.cfg.CACert)
		return string(b), false, err
	}
	b, err := os.ReadFile(filepath.Join(r.cfg.Out, "certs", "cert.pem"))
	return string(b), false, err
}

// scaleRun is one transport's scale-out run.
func (r *runner) scaleRun(ctx context.Context, cl *cluster, tr string, p scalePlan) *Result {
	nInst := min(p.instances, r.instanceCount(cl))
	res := &Result{Scenario: ScaleOut, Transport: tr, Load: p.load(nInst), Subscribers: p.clients, Instances: nInst,
		Rate: p.rate, MeasureSec: p.measure.Seconds()}
	fail := func(format string, args ...any) *Result {
		res.Error = fmt.Sprintf(format, args...)
		return res
	}
	prefix := fmt.Sprintf("b%s-%s-%s", r.nonce, ScaleOut, tr)
	channel := prefix + ".all"
	a := newAPI(r.apiKey, r.tls)
	roots, skip, err := r.workerTLS()
	if err != nil {
		return fail("TLS roots for the workers: %v", err)
	}
	targets := make([]workerTarget, nInst)
	for i := range targets {
		targets[i].Plain, targets[i].TLS = r.endpoints(cl, i)
	}
	logDir := filepath.Join(r.cfg.Out, "logs", ScaleOut+"-"+tr)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fail("%v", err)
	}

	// Memory of the instances before the connections.
	time.Sleep(200 * time.Millisecond)
	rss0 := make([]int64, nInst)
	if cl != nil {
		for i := range nInst {
			rss0[i], _ = procRSS(cl.instances[i].pid())
		}
	}

	// The workers, each a contiguous slice of the clients, ramping at
	// their share of the rate from the same moment.
	rampStart := time.Now().Add(500 * time.Millisecond)
	cpus := ""
	if r.cfg.Pin {
		cpus = r.cfg.LoadCPUs
	}
	var workers []*workerProc
	defer func() {
		for _, w := range workers {
			w.stop(10 * time.Second)
		}
	}()
	var sources []string
	for w := range p.workers {
		wc := &workerConfig{Index: w, Transport: tr, RootsPEM: roots, SkipVerify: skip, APIKey: r.apiKey, Instances: targets,
			Prefix: prefix, From: w * p.clients / p.workers, To: (w + 1) * p.clients / p.workers,
			Channels: []string{channel}, Broadcast: true, Sources: r.workerSources(w),
			RampPerSec: p.ramp / float64(p.workers), RampStart: rampStart.UnixNano(), BufferSize: p.bufferSize}
		sources = append(sources, wc.Sources...)
		wp, err := startWorker(r.cfg.Worker, w, cpus, filepath.Join(logDir, fmt.Sprintf("worker-%d.log", w)), wc)
		if err != nil {
			return fail("%v", err)
		}
		workers = append(workers, wp)
	}
	workerErr := func() error {
		for _, w := range workers {
			if err := w.err(); err != nil {
				return err
			}
		}
		return nil
	}
	// sum adds up the workers' progress; LastConnect is set once every
	// worker's clients have all connected.
	sum := func() (s workerProgress) {
		all := true
		for _, w := range workers {
			pr, _ := w.state()
			s.Added += pr.Added
			s.Connected += pr.Connected
			s.Ready += pr.Ready
			s.Delivered += pr.Delivered
			s.Down += pr.Down
			all = all && pr.LastConnect != 0
			s.LastConnect = max(s.LastConnect, pr.LastConnect)
		}
		if !all {
			s.LastConnect = 0
		}
		return s
	}

	// Connect, then probe until every client has received a probe: it is
	// then subscribed end to end, through Redis from instance 0.
	rampEnd := rampStart.Add(time.Duration(float64(p.clients) / p.ramp * float64(time.Second)))
	timeout := time.Until(rampEnd) + 60*time.Second + time.Duration(p.clients)*time.Millisecond
	deadline := time.Now().Add(timeout)
	probeBase, _ := r.endpoints(cl, 0)
	// A probe is a delivery to every client: no more often than the
	// servers deliver them at some 10,000 a second.
	probeEvery := max(time.Second, time.Duration(p.clients)*100*time.Microsecond)
	var lastProbe time.Time
	var connectedAt time.Time
	for {
		if err := workerErr(); err != nil {
			return fail("%v", err)
		}
		s := sum()
		if s.LastConnect > 0 && connectedAt.IsZero() {
			connectedAt = time.Unix(0, s.LastConnect)
		}
		if s.Ready == p.clients {
			break
		}
		if time.Now().After(deadline) {
			why := ""
			for _, w := range workers {
				if pr, _ := w.state(); pr.Stuck != "" {
					why += fmt.Sprintf("; worker %d: %d of %d ready, %s", w.idx, pr.Ready, w.clients, pr.Stuck)
				}
			}
			return fail("%d of %d clients subscribed (%d connected, %d not connected now) after %v%s", s.Ready, p.clients, s.Connected, s.Down, timeout.Round(time.Second), why)
		}
		if ctx.Err() != nil {
			return fail("%v", ctx.Err())
		}
		if (s.Connected == p.clients || time.Now().After(rampEnd)) && time.Since(lastProbe) > probeEvery {
			lastProbe = time.Now()
			if err := a.publish(ctx, probeBase, []publication{{Channel: channel, Data: []byte(`{"probe":1}`)}}); err != nil {
				res.Notes = append(res.Notes, "a probe failed: "+err.Error())
			}
		}
		r.prog.set("%s %s: %d workers, connected %d/%d, subscribed %d", ScaleOut, tr, len(workers), s.Connected, p.clients, s.Ready)
		sleepUntil(ctx, time.Now().Add(250*time.Millisecond))
	}
	readyAt := time.Now()
	if connectedAt.IsZero() {
		connectedAt = readyAt
	}
	res.ConnectPerSec = float64(p.clients) / connectedAt.Sub(rampStart).Seconds()

	// Memory per connection, once the connections have settled.
	sleepUntil(ctx, time.Now().Add(time.Second))
	var rssNotes []string
	if cl != nil {
		var grown int64
		for i := range nInst {
			rss1, err := procRSS(cl.instances[i].pid())
			if err != nil {
				return fail("instance %d: %v", i, err)
			}
			grown += rss1 - rss0[i]
			conns := p.clients/nInst + btoi(i < p.clients%nInst)
			rssNotes = append(rssNotes, fmt.Sprintf("%.1f KiB/conn (%.0f MiB)", float64(rss1-rss0[i])/1024/float64(conns), float64(rss1)/(1<<20)))
		}
		res.RSSPerConnKiB = ptr(float64(grown) / 1024 / float64(p.clients))
	}

	// Publish on every instance in turn: message k on instance k mod n,
	// one request at a time (the publisher's per-channel order), so each
	// reaches the clients of the other instances through Redis.
	var turn atomic.Int64
	baseOf := func(int) string {
		b, _ := r.endpoints(cl, int(turn.Add(1)-1)%nInst)
		return b
	}
	pub := newPublisher(a, p.rate, []string{channel}, func(int64) int { return 0 }, baseOf)
	start := time.Now().Add(200 * time.Millisecond)
	wStart, wEnd := start.Add(p.warmup), start.Add(p.warmup+p.measure)
	for _, w := range workers {
		if err := w.send(workerCommand{Type: "measure", WindowStart: wStart.UnixNano(), WindowEnd: wEnd.UnixNano()}); err != nil {
			return fail("worker %d: %v", w.idx, err)
		}
	}
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); pub.run(ctx, start, wEnd) }()
	sleepUntil(ctx, wStart)
	before := r.scaleSnapshot(cl, workers)
	for time.Now().Before(wEnd) && ctx.Err() == nil {
		if err := workerErr(); err != nil {
			<-pubDone
			return fail("%v", err)
		}
		r.prog.set("%s %s %s: %.0f%% delivered %d", ScaleOut, tr, res.Load,
			100*time.Since(wStart).Seconds()/p.measure.Seconds(), sum().Delivered)
		sleepUntil(ctx, minTime(wEnd, time.Now().Add(250*time.Millisecond)))
	}
	after := r.scaleSnapshot(cl, workers)
	<-pubDone

	// The end: every worker checks its clients against the publisher's
	// record and reports.
	fin := finishCommand(pub, p.drain)
	for _, w := range workers {
		if err := w.send(fin); err != nil {
			return fail("worker %d: send finish: %v", w.idx, err)
		}
	}
	resultDeadline := time.Now().Add(10*p.drain + 2*time.Minute)
	results := make([]*workerResult, len(workers))
	for {
		if err := workerErr(); err != nil {
			return fail("%v", err)
		}
		done := 0
		for i, w := range workers {
			if _, results[i] = w.state(); results[i] != nil {
				done++
			}
		}
		if done == len(workers) {
			break
		}
		if time.Now().After(resultDeadline) {
			return fail("%d of %d workers reported no result in time", len(workers)-done, len(workers))
		}
		r.prog.set("%s %s: waiting for the workers' results (%d/%d)", ScaleOut, tr, done, len(workers))
		time.Sleep(100 * time.Millisecond)
	}
	// They exit once they have reported: an exit status other than 0 (a
	// crash while closing, the race detector's 66) is an error too.
	for _, w := range workers {
		w.stop(30 * time.Second)
		if w.waitErr != nil {
			return fail("worker %d (pid %d) exited with %v after its result; last log lines: %s", w.idx, w.pid(), w.waitErr, logTail(w.logPath, 3))
		}
	}
	m, err := mergeWorkers(results, pub.failures.Load())
	if err != nil {
		return fail("%v", err)
	}
	res.Correctness = m.Correctness
	res.Latency = summarize(m.Latency)
	res.DeliveriesPerSec = float64(res.Latency.Count) / p.measure.Seconds()
	res.Reconnects = m.Reconnects
	before.wire, after.wire = m.Window[0].Wire, m.Window[1].Wire
	before.delivered, after.delivered = m.Window[0].Delivered, m.Window[1].Delivered
	r.cost(res, before, after, instancePids(cl, nInst))

	perWorker := make([]string, len(workers))
	for i, w := range workers {
		perWorker[i] = fmt.Sprint(w.clients)
	}
	srcs := "the kernel's choice of source address"
	if len(sources) > 0 {
		srcs = fmt.Sprintf("sources %s–%s", sources[0], sources[len(sources)-1])
	}
	res.Notes = append(res.Notes,
		fmt.Sprintf("load generator: %d worker processes (herald bench worker) holding %s connections, %s; workers' CPU %.1f s in all, RSS %.0f MiB at the end.",
			len(workers), strings.Join(perWorker, "/"), srcs, float64(m.CPU)/1e6, float64(m.RSS)/(1<<20)),
		fmt.Sprintf("connection ramp paced at %.0f/s: all connected after %.1f s, all subscribed after %.1f s.",
			p.ramp, connectedAt.Sub(rampStart).Seconds(), readyAt.Sub(rampStart).Seconds()),
		fmt.Sprintf("published on instance k mod %d in turn (REST), reaching the others through Redis.", nInst))
	if cl != nil {
		var cpu []string
		secs := after.at.Sub(before.at).Seconds()
		for i := range nInst {
			pid := cl.instances[i].pid()
			cpu = append(cpu, fmt.Sprintf("%.1f%%", float64(after.server[pid]-before.server[pid])/1e4/secs))
		}
		res.Notes = append(res.Notes, "per instance: server RSS "+strings.Join(rssNotes, ", ")+"; CPU "+strings.Join(cpu, ", ")+" of a core.")
		if nInst != r.cfg.Instances {
			res.Notes = append(res.Notes, fmt.Sprintf("%d instances of its own (the run's --instances is %d).", nInst, r.cfg.Instances))
		}
	}
	if m.Down > 0 {
		type kv struct {
			k string
			v int
		}
		var why []kv
		for k, v := range m.DownWhy {
			why = append(why, kv{k, v})
		}
		slices.SortFunc(why, func(a, b kv) int { return b.v - a.v })
		var parts []string
		for _, x := range why[:min(3, len(why))] {
			parts = append(parts, fmt.Sprintf("%d %s", x.v, x.k))
		}
		res.Notes = append(res.Notes, fmt.Sprintf("%d clients were not connected at the end (%s).", m.Down, strings.Join(parts, "; ")))
	}
	if e := pub.lastErr.Load(); e != nil {
		res.Notes = append(res.Notes, "last publish error: "+e.(string))
	}
	return res
}

// scaleSnapshot is the servers' CPU and the load generator's (the bench's
// and every worker's) at one moment; the workers' wire and delivery
// counters are theirs, taken at the window's ends.
func (r *runner) scaleSnapshot(cl *cluster, workers []*workerProc) snapshot {
	s := r.snapshot(cl, &dialEnv{wire: &wireCounter{}})
	for _, w := range workers {
		if v, err := procCPU(w.pid()); err == nil {
			s.self += v
		}
	}
	return s
}
