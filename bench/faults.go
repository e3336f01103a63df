package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/heraldhq/herald/transports/client"
)

// faultCtx is what a fault injected during a measurement window reaches.
type faultCtx struct {
	r            *runner
	cl           *cluster
	env          *dialEnv
	f            *fleet
	res          *Result
	wStart, wEnd time.Time
}

// faulted records when the fault happened: resume times count from it.
func (fc *faultCtx) faulted() { fc.f.faultAt.Store(time.Now().UnixNano()) }

func (fc *faultCtx) note(format string, args ...any) {
	fc.res.Notes = append(fc.res.Notes, fmt.Sprintf(format, args...))
}

// at waits until the share p of the window has passed.
func (fc *faultCtx) at(ctx context.Context, p float64) {
	sleepUntil(ctx, fc.wStart.Add(time.Duration(p*float64(fc.wEnd.Sub(fc.wStart)))))
}

// hostPort strips a base URL's scheme.
func hostPort(base string) string {
	_, hp, _ := strings.Cut(base, "://")
	return hp
}

// killAndReroute kills instance k with SIGKILL and routes the clients
// that dial it to the live instances (round robin by client), as a load
// balancer in front of them would.
func (fc *faultCtx) killAndReroute(k int) {
	dead := fc.cl.instances[k]
	var live []*instance
	for _, in := range fc.cl.instances {
		if in != dead {
			live = append(live, in)
		}
	}
	route := func(addr string, i int) string {
		to := live[i%len(live)]
		switch addr {
		case hostPort(dead.plainURL):
			return hostPort(to.plainURL)
		case hostPort(dead.tlsURL):
			return hostPort(to.tlsURL)
		}
		return addr
	}
	fc.cl.route.Store(&route)
	dead.kill()
	fc.faulted()
}

func (r *runner) faultScenario(ctx context.Context, name string) error {
	if len(r.cfg.Targets) > 0 {
		r.logf("%-15s skipped: it needs servers the bench started (not --target)", name)
		return nil
	}
	warmup, measure := r.windows()
	_ = warmup
	switch name {
	case Idle:
		return r.eachTransport(ctx, name, false, nil, func(ctx context.Context, cl *cluster, tr string) error {
			r.add(r.idle(ctx, cl, tr, r.sizes([]int{100}, []int{10000})[0]))
			return ctx.Err()
		})
	case SlowConsumers:
		st := trafficSpec{scenario: name, subs: r.sizes([]int{40}, []int{200})[0], instances: 1, broadcast: true,
			rate: r.pick(200, 200), slowShare: 0.25, pad: 1024, bufferSize: 16, fault: true}
		st.during = func(ctx context.Context, fc *faultCtx) {
			fc.at(ctx, 0.2)
			fc.faulted()
			for _, s := range fc.f.subs {
				if s.slow {
					s.paused.Store(true)
				}
			}
			pause := measure / 2
			fc.note("%d of %d clients stop reading for %v, then resume", fc.res.SlowClients, st.subs, pause)
			sleepUntil(ctx, time.Now().Add(pause))
			for _, s := range fc.f.subs {
				s.paused.Store(false)
			}
		}
		// A short queue, so that the slow clients are dropped as lagged
		// within the window and must resume.
		return r.eachTransport(ctx, name, false, []string{"--queue-length", "64", "--write-timeout", "2s"}, func(ctx context.Context, cl *cluster, tr string) error {
			st.transport = tr
			r.add(r.traffic(ctx, cl, st))
			return ctx.Err()
		})
	case Failover:
		st := trafficSpec{scenario: name, subs: r.sizes([]int{60}, []int{15000})[0], instances: r.cfg.Instances, cross: true,
			rate: r.pick(200, 1000), fault: true, drain: r.faultDrain()}
		st.during = func(ctx context.Context, fc *faultCtx) {
			fc.at(ctx, 0.25)
			k := len(fc.cl.instances) - 1
			fc.cl.fault.Do(func() { fc.killAndReroute(k) })
			fc.faulted()
			fc.note("instance %d of %d killed (SIGKILL) at 25%% of the window; its clients rerouted to the others", k+1, len(fc.cl.instances))
		}
		return r.eachTransport(ctx, name, false, nil, func(ctx context.Context, cl *cluster, tr string) error {
			st.transport = tr
			r.add(r.traffic(ctx, cl, st))
			return ctx.Err()
		})
	case RedisRestart:
		st := trafficSpec{scenario: name, subs: r.sizes([]int{60}, []int{1000})[0], instances: r.cfg.Instances, cross: true,
			rate: r.pick(200, 1000), fault: true, drain: r.faultDrain()}
		st.during = func(ctx context.Context, fc *faultCtx) {
			fc.at(ctx, 0.25)
			fc.cl.fault.Do(func() {
				fc.cl.killRedis()
				fc.faulted()
				down := time.Now()
				sleepUntil(ctx, down.Add(measure/8))
				if err := fc.cl.startRedis(ctx); err != nil {
					fc.res.Error = "restart redis: " + err.Error()
					return
				}
				fc.note("Redis killed (SIGKILL) at 25%% of the window and restarted from its AOF after %.1f s", time.Since(down).Seconds())
			})
		}
		return r.eachTransport(ctx, name, true, nil, func(ctx context.Context, cl *cluster, tr string) error {
			st.transport = tr
			r.add(r.traffic(ctx, cl, st))
			return ctx.Err()
		})
	case ReconnectStorm:
		st := trafficSpec{scenario: name, subs: r.sizes([]int{60}, []int{2000})[0], instances: 1,
			rate: r.pick(100, 500), fault: true, drain: r.faultDrain()}
		st.during = func(ctx context.Context, fc *faultCtx) {
			fc.at(ctx, 0.25)
			fc.cl.fault.Do(func() { fc.killAndReroute(0) })
			fc.faulted()
			fc.note("the instance holding every client killed (SIGKILL) at 25%% of the window: all %d reconnect at once to the others", st.subs)
		}
		return r.eachTransport(ctx, name, false, nil, func(ctx context.Context, cl *cluster, tr string) error {
			st.transport = tr
			r.add(r.traffic(ctx, cl, st))
			return ctx.Err()
		})
	}
	return fmt.Errorf("unknown scenario %q", name)
}

// idle holds n connections on one instance with nothing published and
// measures the instance's memory and CPU per connection and the idle bytes
// on the wire.
func (r *runner) idle(ctx context.Context, cl *cluster, tr string, n int) *Result {
	_, measure := r.windows()
	if !r.cfg.Quick {
		measure = 30 * time.Second // longer than the 25 s heartbeat
	}
	res := &Result{Scenario: Idle, Transport: tr, Load: fmt.Sprintf("%d connections", n), Subscribers: n, Instances: 1, MeasureSec: measure.Seconds()}
	env := newDialEnv(tr, r.tls, r.sources, cl)
	a := newAPI(r.apiKey, r.tls)
	tk := &tokens{api: a, m: map[string]string{}}
	f := newFleet(ctx, env)
	f.bufferSize = 4
	defer f.close()
	in := cl.instances[0]
	time.Sleep(200 * time.Millisecond)
	rss0, _ := procRSS(in.pid())
	prefix := fmt.Sprintf("b%s-idle-%s", r.nonce, tr)
	start := time.Now()
	for i := range n {
		user := fmt.Sprintf("%s-u%d", prefix, i)
		if err := f.add(tk, user, 0, "user:"+user, 0, in.plainURL, in.tlsURL, nil); err != nil {
			res.Error = err.Error()
			return res
		}
		if i%200 == 0 {
			r.prog.set("idle %s: connecting %d/%d", tr, i, n)
		}
	}
	base := in.plainURL
	if err := f.waitReady(ctx, a, func(*subscriber) string { return base }, 120*time.Second); err != nil {
		res.Error = err.Error()
		return res
	}
	res.ConnectPerSec = float64(n) / time.Since(start).Seconds()
	r.prog.set("idle %s: %d connections held for %v", tr, n, measure)
	before := r.snapshot(cl, env)
	sleepUntil(ctx, time.Now().Add(measure))
	after := r.snapshot(cl, env)
	// Memory once the connections have been idle for the window, as an
	// operator sees it: not the connection storm's high-water mark, which
	// the server returns (herald serve --memory-trim) or the runtime
	// does within minutes.
	rss1, _ := procRSS(in.pid())
	res.RSSPerConnKiB = ptr(float64(rss1-rss0) / 1024 / float64(n))
	secs := after.at.Sub(before.at).Seconds()
	res.IdleCPUPct = ptr(float64(after.server[in.pid()]-before.server[in.pid()]) / 1e4 / secs)
	res.LoadCPUPct = float64(after.self-before.self) / 1e4 / secs
	if wireCounted(tr) {
		res.IdleWirePerHour = ptr(float64(after.wire-before.wire) / float64(n) / secs * 3600)
	}
	down := 0
	for _, s := range f.subs {
		if s.c.State().Phase != client.Connected {
			down++
		}
	}
	if down > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d connections dropped while idle", down))
	}
	res.Notes = append(res.Notes, fmt.Sprintf("RSS per connection: the instance's growth over the connections, read after they were idle for %v; a quick run's small counts overstate it", measure))
	return res
}

// faultDrain is how long a fault scenario waits for clients to resume and
// catch up: in the full run, with room for a client configured with
// longer QUIC timeouts than client.DefaultQUICConfig's and for
// the backoff of thousands of reconnections at once.
func (r *runner) faultDrain() time.Duration {
	if r.cfg.Quick {
		return 10 * time.Second
	}
	return 40 * time.Second
}
