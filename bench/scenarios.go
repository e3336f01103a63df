package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/transports/client"
)

// The scenarios, in run order.
const (
	Broadcast      = "broadcast"
	Saturation     = "saturation"
	Unicast        = "unicast"
	CrossInstance  = "cross-instance"
	ScaleOut       = "scale-out"
	Idle           = "idle"
	SlowConsumers  = "slow-consumers"
	Failover       = "failover"
	RedisRestart   = "redis-restart"
	ReconnectStorm = "reconnect-storm"
)

// AllScenarios in run order.
var AllScenarios = []string{Idle, Broadcast, Saturation, Unicast, CrossInstance, ScaleOut, SlowConsumers, Failover, RedisRestart, ReconnectStorm}

var scenarioDesc = map[string]string{
	Idle:           "N connections held open, nothing published: server memory and CPU per connection, connect rate, idle bytes on the wire.",
	Broadcast:      "One channel, N subscribers on one instance, messages published at a fixed rate: fan-out throughput, latency and server CPU per delivery.",
	Saturation:     "Broadcast to N subscribers on one instance at a rate beyond what one core of clients takes in: each connection's writes then carry many messages. Server CPU per delivery received, and the throughput (received/s) the transport sustains; latency here is mostly queueing and is not a comparison. The servers keep 20,000 messages of history (--history-size) so that a client dropped as lagged resumes.",
	Unicast:        "Each user on its own channel (user:<id>) on one instance; messages to random users at a fixed rate.",
	CrossInstance:  "Unicast with clients spread over every instance, each message published on an instance other than its recipient's: the path through Redis Pub/Sub.",
	ScaleOut:       "Tens of thousands of connections spread evenly over several instances (the full run: 4 × 18,000), held by several load-generator processes, all on one broadcast channel published on each instance in turn, so every message reaches the other instances through Redis: connect rate, every delivery made (lost, duplicated, reordered), latency, server CPU and memory per connection.",
	SlowConsumers:  "Broadcast where a share of the clients stop reading: the others must not suffer (latency compared with the fast clients), the slow ones are dropped as lagged and resume without loss once they read again.",
	Failover:       "Clients spread over the instances, unicast traffic; one instance is killed with SIGKILL mid-run: its clients reconnect to the others and resume.",
	RedisRestart:   "Unicast traffic across instances; Redis (appendonly yes, appendfsync always) is killed and restarted mid-run: publishes fail meanwhile, nothing acknowledged may be lost.",
	ReconnectStorm: "Every client of an instance loses its connection at once (the instance is killed and restarted): reconnection time and resume correctness under the herd.",
}

// scenario runs one scenario on every transport.
func (r *runner) scenario(ctx context.Context, name string) error {
	var steps []trafficSpec
	switch name {
	case Broadcast:
		for _, n := range r.sizes([]int{50}, []int{100, 1000, 5000}) {
			rate := 40.0
			if r.cfg.Quick {
				rate = 50
			}
			steps = append(steps, trafficSpec{subs: n, instances: 1, broadcast: true, rate: rate})
		}
	case Saturation:
		n := r.sizes([]int{50}, []int{1000})[0]
		steps = append(steps, trafficSpec{subs: n, instances: 1, broadcast: true, rate: r.pick(400, saturationRate)})
	case Unicast:
		n := r.sizes([]int{50}, []int{1000})[0]
		steps = append(steps, trafficSpec{subs: n, instances: 1, rate: r.pick(200, 2000)})
	case CrossInstance:
		n := r.sizes([]int{60}, []int{1000})[0]
		steps = append(steps, trafficSpec{subs: n, instances: r.cfg.Instances, cross: true, rate: r.pick(200, 10000)})
	case ScaleOut:
		return r.scaleOut(ctx)
	default:
		return r.faultScenario(ctx, name)
	}
	var serveArgs []string
	if name == Saturation {
		// A client dropped as lagged resumes from the history: keep more
		// than the backlog a saturated client can build up.
		serveArgs = []string{"--history-size", "20000"}
	}
	return r.eachTransport(ctx, name, false, serveArgs, func(ctx context.Context, cl *cluster, tr string) error {
		for _, st := range steps {
			st.scenario, st.transport = name, tr
			res := r.traffic(ctx, cl, st)
			r.add(res)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return nil
	})
}

// saturationRate is the full run's publish rate in the saturation
// scenario: at 1,000 subscribers, more deliveries per second than the load
// generator's core takes in on any transport.
const saturationRate = 600

// sizes returns the quick or the full run's connection counts.
func (r *runner) sizes(quick, full []int) []int {
	if r.cfg.Quick {
		return quick
	}
	out := make([]int, len(full))
	for i, n := range full {
		out[i] = max(1, int(float64(n)*r.cfg.Scale))
	}
	return out
}

func (r *runner) pick(quick, full float64) float64 {
	if r.cfg.Quick {
		return quick
	}
	return full
}

func (r *runner) windows() (warmup, measure time.Duration) {
	if r.cfg.Quick {
		return 200 * time.Millisecond, 800 * time.Millisecond
	}
	return time.Second, 5 * time.Second
}

func (r *runner) add(res *Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Results = append(r.res.Results, res)
	// Transports in their report order whatever order they finished in.
	slices.SortStableFunc(r.res.Results, func(a, b *Result) int {
		ia, ib := slices.Index(AllScenarios, a.Scenario), slices.Index(AllScenarios, b.Scenario)
		if ia != ib {
			return ia - ib
		}
		if a.Subscribers != b.Subscribers {
			return a.Subscribers - b.Subscribers
		}
		return slices.Index(AllTransports, a.Transport) - slices.Index(AllTransports, b.Transport)
	})
	status := "ok"
	if !res.Correctness.Clean() {
		status = fmt.Sprintf("LOST %d DUP %d REORDERED %d", res.Correctness.Lost, res.Correctness.Duplicate, res.Correctness.Reordered)
	}
	if res.Error != "" {
		status = "error: " + res.Error
	}
	r.logf("%-15s %-7s %-32s p50 %7.2f ms  p99 %7.2f ms  %9.0f deliveries/s  %s",
		res.Scenario, res.Transport, res.Load, res.Latency.P50, res.Latency.P99, res.DeliveriesPerSec, status)
}

// eachTransport runs fn on every transport, each with a cluster of its
// own (started here unless the run has targets; persistent: Redis with
// AOF), torn down after.
func (r *runner) eachTransport(ctx context.Context, name string, persistent bool, serveArgs []string, fn func(ctx context.Context, cl *cluster, tr string) error) error {
	var trs []string
	for _, tr := range r.cfg.Transports {
		if len(r.cfg.Targets) > 0 && tr != WS && tr != SSEH1 && len(r.cfg.TLSTargets) == 0 {
			continue // no TLS target for it
		}
		trs = append(trs, tr)
	}
	start := func(label string) (*cluster, error) {
		if len(r.cfg.Targets) > 0 {
			return nil, nil
		}
		dir := filepath.Join(r.cfg.Out, "logs", name+"-"+label)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		r.prog.set("%s %s: starting Redis and %d instances", name, label, r.cfg.Instances)
		return startCluster(ctx, clusterConfig{
			Dir: dir, CertDir: filepath.Join(r.cfg.Out, "certs"), Serve: r.cfg.Serve, Instances: r.cfg.Instances,
			ServerCPUs: r.serverCPUs(), Persistent: persistent, ServeArgs: serveArgs,
			RedisURL: r.cfg.Redis, RedisCluster: r.cfg.RedisCluster,
		}, r.secret, r.apiKey)
	}
	if r.cfg.Quick {
		// The CI run checks the promises, not the costs: every transport at
		// once on one cluster.
		cl, err := start("all")
		if err != nil {
			return err
		}
		if cl != nil {
			defer cl.close()
		}
		errs := make([]error, len(trs))
		var wg sync.WaitGroup
		for i, tr := range trs {
			wg.Go(func() { errs[i] = fn(ctx, cl, tr) })
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	for _, tr := range trs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cl, err := start(tr)
		if err != nil {
			return err
		}
		err = fn(ctx, cl, tr)
		if cl != nil {
			cl.close()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) serverCPUs() string {
	if r.cfg.Pin {
		return r.cfg.ServerCPUs
	}
	return ""
}

// endpoints are instance i's base URLs.
func (r *runner) endpoints(cl *cluster, i int) (plain, tls string) {
	if cl != nil {
		in := cl.instances[i%len(cl.instances)]
		return in.plainURL, in.tlsURL
	}
	plain = r.cfg.Targets[i%len(r.cfg.Targets)]
	if len(r.cfg.TLSTargets) > 0 {
		tls = r.cfg.TLSTargets[i%len(r.cfg.TLSTargets)]
	}
	return plain, tls
}

func (r *runner) instanceCount(cl *cluster) int {
	if cl != nil {
		return len(cl.instances)
	}
	return len(r.cfg.Targets)
}

// trafficSpec is one load: subscribers, channels and a publish rate.
type trafficSpec struct {
	scenario, transport string
	subs                int
	instances           int     // clients spread over the first k instances
	broadcast           bool    // one shared channel; else each user its own
	cross               bool    // publish on another instance than the recipient's
	rate                float64 // messages per second
	slowShare           float64 // share of clients that stop reading mid-run
	pad                 int     // padding bytes per message
	bufferSize          int     // client buffer (default 256)
	// during runs in the measurement window (fault injection); it may
	// add notes.
	during func(ctx context.Context, fc *faultCtx)
	fault  bool // report reconnection and resume figures
	// drain is how long to wait after publishing for late deliveries.
	drain time.Duration
}

func (st trafficSpec) load() string {
	who := "users"
	if st.broadcast {
		who = "subscribers"
	}
	s := fmt.Sprintf("%d %s × %g msg/s", st.subs, who, st.rate)
	if st.instances > 1 {
		s += fmt.Sprintf(", %d inst.", st.instances)
	}
	return s
}

// traffic runs one load on one transport and measures it.
func (r *runner) traffic(ctx context.Context, cl *cluster, st trafficSpec) *Result {
	warmup, measure := r.windows()
	nInst := min(max(st.instances, 1), r.instanceCount(cl))
	res := &Result{Scenario: st.scenario, Transport: st.transport, Load: st.load(), Subscribers: st.subs,
		Instances: nInst, Rate: st.rate, MeasureSec: measure.Seconds()}
	env := newDialEnv(st.transport, r.tls, r.sources, cl)
	a := newAPI(r.apiKey, r.tls)
	tk := &tokens{api: a, m: map[string]string{}}
	f := newFleet(ctx, env)
	if st.bufferSize > 0 {
		f.bufferSize = st.bufferSize
	}
	defer f.close()

	// Channels, and which instance each is published on.
	prefix := fmt.Sprintf("b%s-%s-%s", r.nonce, st.scenario, st.transport)
	var names []string
	var pubInst []int
	if st.broadcast {
		names, pubInst = []string{prefix + ".all"}, []int{0}
	}
	connStart := time.Now()
	for i := range st.subs {
		inst := i % nInst
		plain, tlsURL := r.endpoints(cl, inst)
		user := fmt.Sprintf("%s-u%d", prefix, i)
		var err error
		if st.broadcast {
			err = f.add(tk, user, 0, names[0], inst, plain, tlsURL, []string{names[0]})
		} else {
			names = append(names, "user:"+user)
			p := inst
			if st.cross && nInst > 1 {
				p = (inst + 1) % nInst
			}
			pubInst = append(pubInst, p)
			err = f.add(tk, user, i, names[i], inst, plain, tlsURL, nil)
		}
		if err != nil {
			res.Error = err.Error()
			return res
		}
		if st.slowShare > 0 && i < int(float64(st.subs)*st.slowShare) {
			f.subs[i].slow = true
			res.SlowClients++
		}
		if i%100 == 0 {
			r.prog.set("%s %s: connecting %d/%d", st.scenario, st.transport, i, st.subs)
		}
	}
	baseOf := func(ch int) string {
		i := pubInst[ch]
		if cl != nil { // publish on a live instance
			for k := range len(cl.instances) {
				if cl.instances[(i+k)%len(cl.instances)].alive() {
					i = (i + k) % len(cl.instances)
					break
				}
			}
		}
		p, _ := r.endpoints(cl, i)
		return p
	}
	r.prog.set("%s %s: waiting for %d clients to subscribe", st.scenario, st.transport, st.subs)
	if err := f.waitReady(ctx, a, func(s *subscriber) string { return baseOf(s.channel) }, 60*time.Second+time.Duration(st.subs)*4*time.Millisecond); err != nil {
		res.Error = err.Error()
		if n := f.causesNote(); n != "" {
			res.Notes = append(res.Notes, n) // why they could not all stay connected
		}
		return res
	}
	res.ConnectPerSec = float64(st.subs) / time.Since(connStart).Seconds()

	rng := rand.New(rand.NewPCG(1, 2))
	target := func(int64) int { return 0 }
	if !st.broadcast {
		target = func(int64) int { return rng.IntN(len(names)) }
	}
	pub := newPublisher(a, st.rate, names, target, baseOf)
	pub.pad = st.pad
	start := time.Now().Add(50 * time.Millisecond)
	wStart, wEnd := start.Add(warmup), start.Add(warmup+measure)
	f.measure.Store([2]time.Time{wStart, wEnd})
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); pub.run(ctx, start, wEnd) }()

	// Measure the window: /proc at its start and end.
	sleepUntil(ctx, wStart)
	before := r.snapshot(cl, env)
	before.delivered = f.delivered.Load()
	duringDone := make(chan struct{})
	if st.during != nil {
		go func() {
			defer close(duringDone)
			st.during(ctx, &faultCtx{r: r, cl: cl, env: env, f: f, res: res, wStart: wStart, wEnd: wEnd})
		}()
	} else {
		close(duringDone)
	}
	for time.Now().Before(wEnd) && ctx.Err() == nil {
		r.prog.set("%s %s %s: %.0f%% delivered %d", st.scenario, st.transport, res.Load,
			100*time.Since(wStart).Seconds()/measure.Seconds(), f.delivered.Load())
		sleepUntil(ctx, minTime(wEnd, time.Now().Add(200*time.Millisecond)))
	}
	after := r.snapshot(cl, env)
	after.delivered = f.delivered.Load()
	<-pubDone
	<-duringDone
	drain := st.drain
	if drain == 0 {
		drain = 5 * time.Second
	}
	f.waitDelivered(pub, drain)
	if st.fault {
		// The outage a client saw: from the fault to its next connection
		// (not from when it noticed: QUIC notices a dead server only at
		// its idle timeout).
		all := true
		var took []time.Duration // per reconnected client
		at := f.faultAt.Load()
		for _, s := range f.subs {
			if s.c.State().Phase != client.Connected {
				all = false
			}
			if c := s.connectedAt.Load(); at != 0 && c > at && s.connects.Load() > 1 {
				took = append(took, time.Duration(c-at))
			}
		}
		res.ResumedAll = ptr(all)
		res.ResumeMaxSec, res.ResumeP99Sec = ptr(quantile(took, 1).Seconds()), ptr(quantile(took, 0.99).Seconds())
	}
	for _, s := range f.subs {
		res.Reconnects += max(s.connects.Load()-1, 0)
	}
	f.close()
	if n := f.causesNote(); n != "" && st.fault {
		res.Notes = append(res.Notes, n)
	}

	res.Latency = summarize(f.lat.merged())
	if st.slowShare > 0 {
		res.SlowLatency = ptr(summarize(f.slowLat.merged()))
		res.SlowLatency.Percentiles = nil
	}
	res.Correctness = f.correctness(pub)
	res.DeliveriesPerSec = float64(res.Latency.Count) / measure.Seconds()
	r.cost(res, before, after, instancePids(cl, nInst))
	if e := pub.lastErr.Load(); e != nil {
		res.Notes = append(res.Notes, "last publish error: "+e.(string))
	}
	return res
}

// quantile is the q-quantile (0 < q ≤ 1; 1 is the largest) of ds, which
// it sorts; 0 when ds is empty.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// snapshot is the CPU and wire counters at one moment.
type snapshot struct {
	at        time.Time
	server    map[int]int64 // µs of CPU by instance pid
	redis     map[int]int64 // µs of CPU by Redis pid (every cluster node)
	self      int64
	wire      int64
	delivered int64 // deliveries the clients had received (set by the caller)
	known     bool
}

// instancePids are the pids of the first n instances: those that hold a
// run's clients and receive its publishes. Idle instances are not the
// run's cost.
func instancePids(cl *cluster, n int) map[int]bool {
	if cl == nil {
		return nil
	}
	pids := map[int]bool{}
	for i := 0; i < n && i < len(cl.instances); i++ {
		if in := cl.instances[i]; in.alive() {
			pids[in.pid()] = true
		}
	}
	return pids
}

func (r *runner) snapshot(cl *cluster, env *dialEnv) snapshot {
	s := snapshot{at: time.Now(), wire: env.wire.total()}
	s.self, _ = procCPU(os.Getpid())
	if cl == nil {
		return s
	}
	s.known = true
	s.server = map[int]int64{}
	for _, pid := range cl.serverPids() {
		if v, err := procCPU(pid); err == nil {
			s.server[pid] = v
		}
	}
	s.redis = map[int]int64{}
	for _, pid := range cl.redisPids() {
		if v, err := procCPU(pid); err == nil {
			s.redis[pid] = v
		}
	}
	return s
}

// cost fills in the server cost of the deliveries the clients received
// between two snapshots: CPU and deliveries over the same window, whatever
// the latency. Only the instances in pids count.
func (r *runner) cost(res *Result, a, b snapshot, pids map[int]bool) {
	secs := b.at.Sub(a.at).Seconds()
	deliveries := b.delivered - a.delivered
	res.ReceivedPerSec = float64(deliveries) / secs
	res.LoadCPUPct = float64(b.self-a.self) / 1e4 / secs
	if a.known && b.known {
		// The run's instances alive at both ends of the window: a killed
		// one's CPU is not counted.
		var server int64
		for pid, v := range b.server {
			if v0, ok := a.server[pid]; ok && pids[pid] {
				server += v - v0
			}
		}
		res.ServerCPUPct = ptr(float64(server) / 1e4 / secs)
		// Every Redis process (all the nodes of a cluster), when the same
		// ones ran through the window: else Redis restarted (new
		// processes), or the bench did not start it (--redis).
		if len(a.redis) > 0 && len(a.redis) == len(b.redis) {
			var redisCPU int64
			same := true
			for pid, v := range b.redis {
				v0, ok := a.redis[pid]
				same = same && ok
				redisCPU += v - v0
			}
			if same {
				res.RedisCPUPct = ptr(float64(redisCPU) / 1e4 / secs)
			}
		}
		if deliveries > 0 {
			res.ServerCPUPerDelivery = ptr(float64(server) / float64(deliveries))
		}
	}
	if res.LoadCPUPct > 90 {
		res.Notes = append(res.Notes, fmt.Sprintf("load generator saturated (%.0f%% of its core): latency includes client-side queueing, throughput is a floor", res.LoadCPUPct))
	}
	if wireCounted(res.Transport) && deliveries > 0 {
		res.WirePerDelivery = ptr(float64(b.wire-a.wire) / float64(deliveries))
	}
}
