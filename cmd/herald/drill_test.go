package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/lbtest"
	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/client"
)

// Failure drills: several `herald serve` processes (this test binary
// re-executed as the herald command, see TestMain) on one Redis or a Redis
// Cluster, behind a round-robin TCP balancer that skips dead backends.
// Reconnecting clients (transports/client, WebSocket) receive a numbered
// stream published through the balancer while a fault is injected; every
// publish that succeeded must reach every client exactly once, in order.

// heraldProc is one `herald serve` child process.
type heraldProc struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startHerald(t *testing.T, redisURL string) *heraldProc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	logf, err := os.Create(filepath.Join(t.TempDir(), "herald.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "serve", "--addr", addr, "--tls-addr", "", "--redis", redisURL,
		"--secret", strings.Repeat("s", 32), "--api-key", testAPIKey, "--drain-timeout", "4s")
	cmd.Env = append(os.Environ(), benchChildEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &heraldProc{addr: addr, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			log, _ := os.ReadFile(logf.Name())
			t.Logf("herald %s log:\n%s", addr, tailString(string(log), 3000))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("herald on %s exited at start", addr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("herald on %s not ready: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// drillClient is one reconnecting client and what it received.
type drillClient struct {
	c *client.Client

	mu            sync.Mutex
	got           []int // message numbers, in arrival order
	gaps          int
	lastDown      time.Time // last time it lost its connection
	lastUp        time.Time // last time it connected
	reconnections int
}

func (d *drillClient) onState(s client.State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch s.Phase {
	case client.Reconnecting:
		if d.lastDown.Before(d.lastUp) || d.lastDown.IsZero() {
			d.lastDown = time.Now()
		}
	case client.Connected:
		if !d.lastUp.IsZero() {
			d.reconnections++
		}
		d.lastUp = time.Now()
	}
}

func (d *drillClient) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.got)
}

func (d *drillClient) has(n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.got) > 0 && d.got[len(d.got)-1] >= n
}

// drill is a set of instances behind a balancer with clients.
type drill struct {
	t       *testing.T
	lb      *lbtest.Balancer
	procs   []*heraldProc
	clients []*drillClient
	http    *http.Client
	wg      sync.WaitGroup
	started time.Time // when the clients started
}

func newDrill(t *testing.T, redisURL string, instances, clients int) *drill {
	d := &drill{t: t, http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	// The clients' connections and the balancer's, plus the token and
	// publish requests in flight and the test's own.
	lbtest.CheckFiles(t, clients, 500)
	var addrs []string
	for range instances {
		p := startHerald(t, redisURL)
		d.procs = append(d.procs, p)
		addrs = append(addrs, p.addr)
	}
	d.lb = lbtest.Start(t, addrs...)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); d.wg.Wait() })
	d.started = time.Now()
	for i := range clients {
		dc := &drillClient{}
		user := "u" + strconv.Itoa(i)
		c, err := client.New(client.Config{
			URL:      "http://" + d.lb.Addr(),
			Token:    func(ctx context.Context) (string, error) { return d.token(ctx, user) },
			Channels: []string{"drill"},
			Backoff:  client.Backoff{Min: 200 * time.Millisecond, Max: 2 * time.Second},
			OnState:  dc.onState,
			// Enough for a whole drill: the reader keeps up anyway.
			BufferSize: 64,
		})
		if err != nil {
			t.Fatal(err)
		}
		dc.c = c
		d.clients = append(d.clients, dc)
		d.wg.Add(2)
		go func() { defer d.wg.Done(); _ = c.Run(ctx) }()
		go func() { defer d.wg.Done(); d.read(ctx, dc) }()
	}
	t.Cleanup(func() {
		for _, dc := range d.clients {
			_ = dc.c.Close()
		}
	})
	return d
}

func (d *drill) read(ctx context.Context, dc *drillClient) {
	for {
		e, err := dc.c.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || err == client.ErrClosed {
				return
			}
			continue
		}
		switch {
		case e.Type == notify.TypeGap:
			dc.mu.Lock()
			dc.gaps++
			dc.mu.Unlock()
		case e.Type == notify.TypeMessage && e.Channel == "drill":
			var m struct{ N int }
			if json.Unmarshal(e.Data, &m) == nil {
				dc.mu.Lock()
				dc.got = append(dc.got, m.N)
				dc.mu.Unlock()
			}
		}
	}
}

func (d *drill) token(ctx context.Context, user string) (string, error) {
	var out struct{ Token string }
	if err := d.post(ctx, "/v1/token", map[string]any{"user": user, "channels": []string{"drill"}, "ttl": "5m"}, &out); err != nil {
		return "", err
	}
	return out.Token, nil
}

func (d *drill) post(ctx context.Context, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+d.lb.Addr()+path, strings.NewReader(string(b)))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: status %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// waitAll waits until every client satisfies ok.
func (d *drill) waitAll(timeout time.Duration, what string, ok func(*drillClient) bool) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, dc := range d.clients {
			if ok(dc) {
				n++
			}
		}
		if n == len(d.clients) {
			return
		}
		if time.Now().After(deadline) {
			d.diagnose()
			d.t.Fatalf("after %v, %d of %d clients have %s (balancer accept error: %v)", timeout, n, len(d.clients), what, d.lb.AcceptError())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// diagnose logs what the clients and the instances see, for a drill that
// stalled.
func (d *drill) diagnose() {
	phases := map[string]int{}
	got, reconn := 0, 0
	for _, dc := range d.clients {
		phases[fmt.Sprint(dc.c.State().Phase)]++
		if dc.count() > 0 {
			got++
		}
		dc.mu.Lock()
		reconn += dc.reconnections
		dc.mu.Unlock()
	}
	d.t.Logf("clients by phase %v; %d of %d received a message; %d reconnections", phases, got, len(d.clients), reconn)
	for _, p := range d.procs {
		resp, err := d.http.Get("http://" + p.addr + "/metrics")
		if err != nil {
			d.t.Logf("herald %s metrics: %v", p.addr, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "herald_") && !strings.Contains(l, "_bucket") {
				keep = append(keep, l)
			}
		}
		d.t.Logf("herald %s metrics:\n%s", p.addr, strings.Join(keep, "\n"))
	}
}

// drillResult is what a drill measured.
type drillResult struct {
	published, failed int
	recovery          time.Duration // fault → the last disconnected client reconnected
	moved             int           // clients that lost their connection
	lost, duplicated  int           // summed over clients
}

// run publishes total numbered messages through the balancer, one every
// 5ms, injects fault after a third, and checks delivery.
func (d *drill) run(total int, fault func()) drillResult {
	d.t.Helper()
	// Every client connected and subscribed: each received a warm-up.
	ctx := context.Background()
	start := d.started
	d.waitAll(30*time.Second, "connected", func(dc *drillClient) bool { return dc.c.State().Phase == client.Connected })
	connected := time.Since(start)
	succeeded := make([]bool, total)
	var failed atomic.Int64
	warmSent, warmFailed, warmErr := 0, 0, error(nil)
	for warmUp := time.Now().Add(60 * time.Second); ; {
		if time.Now().After(warmUp) {
			d.diagnose()
			d.t.Fatalf("clients never received the warm-up (%d of %d warm-up publishes failed, the last with %v; balancer accept error: %v)",
				warmFailed, warmSent, warmErr, d.lb.AcceptError())
		}
		// Warm-up numbers are negative so they stay out of the checks.
		warmSent++
		if err := d.post(ctx, "/v1/publish", map[string]any{"channel": "drill", "data": json.RawMessage(`{"n":-1}`)}, &struct{}{}); err != nil {
			warmFailed, warmErr = warmFailed+1, err
		}
		all := true
		for _, dc := range d.clients {
			if dc.count() == 0 {
				all = false
				break
			}
		}
		if all {
			d.t.Logf("%d clients connected after %v, all received a warm-up after %v",
				len(d.clients), connected.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var faultAt time.Time
	done, faulted := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for n := range total {
			if n == total/3 {
				faultAt = time.Now()
				// Publishing goes on during the fault.
				go func() { defer close(faulted); fault() }()
			}
			var out struct{ ID string }
			err := d.post(ctx, "/v1/publish", map[string]any{"channel": "drill", "data": json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}, &out)
			if err == nil {
				succeeded[n] = true
			} else {
				failed.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	<-done
	<-faulted
	last := -1
	for n := total - 1; n >= 0; n-- {
		if succeeded[n] {
			last = n
			break
		}
	}
	if last < total/3 {
		d.t.Fatalf("no publish succeeded after the fault (last %d)", last)
	}
	d.waitAll(30*time.Second, fmt.Sprintf("message #%d", last), func(dc *drillClient) bool { return dc.has(last) })
	res := drillResult{published: total - int(failed.Load()), failed: int(failed.Load())}
	for i, dc := range d.clients {
		dc.mu.Lock()
		seen := map[int]int{}
		prev := -2
		for _, n := range dc.got {
			seen[n]++
			if n < prev {
				d.t.Errorf("client %d: message #%d after #%d: out of order", i, n, prev)
			}
			prev = n
		}
		for n, k := range seen {
			if n >= 0 && k > 1 {
				res.duplicated += k - 1
			}
		}
		for n := range total {
			if succeeded[n] && seen[n] == 0 {
				res.lost++
			}
		}
		if dc.lastDown.After(faultAt) {
			res.moved++
			res.recovery = max(res.recovery, dc.lastUp.Sub(faultAt))
		}
		if dc.gaps > 0 {
			d.t.Errorf("client %d: %d gap notices", i, dc.gaps)
		}
		dc.mu.Unlock()
	}
	if res.lost != 0 || res.duplicated != 0 {
		d.t.Errorf("%d messages lost, %d duplicated (over every client)", res.lost, res.duplicated)
	}
	d.t.Logf("%d clients on %d instances: %d publishes succeeded, %d failed; %d clients reconnected, full recovery %v after the fault; lost %d, duplicated %d",
		len(d.clients), len(d.procs), res.published, res.failed, res.moved, res.recovery.Round(time.Millisecond), res.lost, res.duplicated)
	return res
}

func TestDrillKillInstance(t *testing.T) {
	srv := redistest.Start(t)
	d := newDrill(t, srv.URL(), 3, 30)
	res := d.run(600, func() { _ = d.procs[1].cmd.Process.Kill() })
	if res.moved == 0 {
		t.Error("no client lost its connection: the fault did not happen")
	}
}

func TestDrillDrainInstance(t *testing.T) {
	srv := redistest.Start(t)
	d := newDrill(t, srv.URL(), 3, 30)
	res := d.run(600, func() { _ = d.procs[1].cmd.Process.Signal(syscall.SIGTERM) })
	if res.moved == 0 {
		t.Error("no client moved: the drain did not happen")
	}
	select {
	case <-d.procs[1].exited:
	case <-time.After(10 * time.Second):
		t.Error("the drained instance did not exit")
	}
}

func TestDrillRestartRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Persistent())
	d := newDrill(t, srv.URL(), 3, 30)
	d.run(600, func() {
		srv.Kill()
		time.Sleep(500 * time.Millisecond)
		srv.Restart()
	})
}

func TestDrillKillInstanceOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	d := newDrill(t, c.URL(), 3, 30)
	res := d.run(600, func() { _ = d.procs[0].cmd.Process.Kill() })
	if res.moved == 0 {
		t.Error("no client lost its connection: the fault did not happen")
	}
}

// TestDrillReconnectStorm drops every client connection at once (the
// balancer closes them all, as a balancer restart would): the whole
// population reconnects within the jittered backoff, and the instances
// absorb the storm through their accept backlog and handshake timeout.
// Run without -race for the full size (the race detector caps goroutines).
// HERALD_STORM_CLIENTS overrides the size (stormClients by default).
func TestDrillReconnectStorm(t *testing.T) {
	n := stormClients
	if s := os.Getenv("HERALD_STORM_CLIENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("HERALD_STORM_CLIENTS=%q: want a positive number", s)
		}
	}
	srv := redistest.Start(t)
	d := newDrill(t, srv.URL(), 3, n)
	res := d.run(300, d.lb.DropAll)
	if res.moved < len(d.clients)*9/10 {
		t.Errorf("only %d of %d clients reconnected", res.moved, len(d.clients))
	}
}
