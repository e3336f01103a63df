package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/heraldhq/herald/transports/client"
)

// A worker is one load-generator process of the scale-out scenario: the
// bench's own binary re-executed as `herald bench worker` (Config.Worker),
// running a fleet of subscribers, the very code the bench runs in-process,
// in a process of its own, so that the connections of one run are not
// bounded by one process's open files (about 20,000 here).
//
// The protocol is JSON, one message a line: the parent writes commands to
// the worker's stdin, the worker writes messages to its stdout (its stderr
// is a log).
//
//	parent → worker  {"type":"config","config":{…}}      first, once
//	worker → parent  {"type":"progress","progress":{…}}  every 250 ms
//	parent → worker  {"type":"measure","window_start_ns":…,"window_end_ns":…}
//	parent → worker  {"type":"finish","published":[…],"failed":{…},"drain_ms":…}
//	worker → parent  {"type":"result","result":{…}}      then it exits
//	worker → parent  {"type":"error","error":"…"}        instead, then it exits
//
// Correctness stays exact across processes: at the end the parent sends
// what its publisher knows (the last sequence number of every channel and
// the publishes that failed), and each worker checks its own subscribers'
// streams against it with fleet.correctness, as a fleet in the bench
// process does. The other way round (every subscriber's received
// sequence numbers back to the parent) would carry each subscriber's
// missing set, unbounded, over the pipe; the publisher's record is one
// number per channel plus the failed publishes, a few bytes for a
// broadcast. The worker also needs it to know when its subscribers have
// received everything (fleet.waitDelivered).
//
// A worker stops by itself when the parent goes: it gets SIGKILL when the
// parent dies (Pdeathsig, set by the parent), and it stops when its stdin
// ends.

// workerConfig is what a worker runs: its slice of a run's clients.
type workerConfig struct {
	Index     int    `json:"index"`
	Transport string `json:"transport"`
	// RootsPEM are the CA certificates to trust (PEM); SkipVerify skips
	// verification instead (--target without --ca).
	RootsPEM   string `json:"roots_pem,omitempty"`
	SkipVerify bool   `json:"skip_verify,omitempty"`
	APIKey     string `json:"api_key"`
	// Instances are the servers' base URLs: client i connects to instance
	// i mod len(Instances), where it also gets its token.
	Instances []workerTarget `json:"instances"`
	// Prefix names the users: <Prefix>-u<i>.
	Prefix string `json:"prefix"`
	// From and To are the run's client numbers this worker holds: [From, To).
	From int `json:"from"`
	To   int `json:"to"`
	// Channels are the publisher's channels, by its numbering. Broadcast:
	// every client subscribes to Channels[0] and checks it; else client i
	// checks its own user channel, Channels[i].
	Channels  []string `json:"channels"`
	Broadcast bool     `json:"broadcast"`
	// Sources are the loopback addresses this worker's connections come
	// from (round robin); none: the kernel's choice.
	Sources []string `json:"sources,omitempty"`
	// RampPerSec paces the connections from RampStart (Unix ns); 0: all
	// at once.
	RampPerSec float64 `json:"ramp_per_s"`
	RampStart  int64   `json:"ramp_start_ns"`
	BufferSize int     `json:"buffer_size,omitempty"`
}

type workerTarget struct {
	Plain string `json:"plain"`
	TLS   string `json:"tls,omitempty"`
}

// workerCommand is a message from the parent.
type workerCommand struct {
	Type   string        `json:"type"` // config, measure, finish
	Config *workerConfig `json:"config,omitempty"`
	// measure: the window (scheduled publish times) whose latencies count;
	// the worker takes its counters at both ends.
	WindowStart int64 `json:"window_start_ns,omitempty"`
	WindowEnd   int64 `json:"window_end_ns,omitempty"`
	// finish: the publisher's last sequence number of every channel, the
	// sequence numbers whose publish failed by channel, and how long to
	// wait for deliveries that make no progress.
	Published []int64         `json:"published,omitempty"`
	Failed    map[int][]int64 `json:"failed,omitempty"`
	DrainMs   int64           `json:"drain_ms,omitempty"`
}

// workerMsg is a message from a worker.
type workerMsg struct {
	Type     string          `json:"type"` // progress, result, error
	Progress *workerProgress `json:"progress,omitempty"`
	Result   *workerResult   `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
}

type workerProgress struct {
	Added     int   `json:"added"`     // clients started
	Connected int   `json:"connected"` // clients that have connected at least once
	Ready     int   `json:"ready"`     // clients that received a probe: subscribed end to end
	Delivered int64 `json:"delivered"` // sequence-numbered deliveries received
	// LastConnect is when the last of its clients first connected (Unix
	// ns), once all have.
	LastConnect int64 `json:"last_connect_ns,omitempty"`
	Down        int   `json:"down"` // clients not connected now
	// Stuck describes the clients not ready once all were started: their
	// phases and a sample state.
	Stuck string `json:"stuck,omitempty"`
}

// workerCounters are a worker's counters at one moment.
type workerCounters struct {
	At        int64 `json:"at_ns"`
	Delivered int64 `json:"delivered"`
	Wire      int64 `json:"wire_bytes"`
	CPU       int64 `json:"cpu_us"`
}

// workerResult is what a worker measured.
type workerResult struct {
	Clients     int         `json:"clients"`
	Correctness Correctness `json:"correctness"` // its subscribers' counts; PubFailed is the parent's
	// Latency is the HdrHistogram of its fast clients' latencies (µs).
	Latency *hdrhistogram.Snapshot `json:"latency"`
	// Window holds its counters at the measurement window's start and end
	// (zero when no window was measured).
	Window     [2]workerCounters `json:"window"`
	Reconnects int64             `json:"reconnects"`
	Down       int               `json:"down"` // clients not connected at the end
	// DownWhy counts why those clients were not connected (their last
	// error, digits elided).
	DownWhy map[string]int `json:"down_why,omitempty"`
	CPU     int64          `json:"cpu_us"`    // CPU time of the whole process
	RSS     int64          `json:"rss_bytes"` // resident memory before closing its clients
}

// workerOut writes a worker's messages.
type workerOut struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *workerOut) send(m workerMsg) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.enc.Encode(m)
}

// RunWorker is `herald bench worker`: it reads its commands from in and
// writes its messages to out until it has sent its result, or in ends.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	raiseFileLimit()
	_ = os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o := &workerOut{enc: json.NewEncoder(out)}
	cmds := make(chan workerCommand, 4)
	go func() {
		dec := json.NewDecoder(bufio.NewReader(in))
		for {
			var c workerCommand
			if err := dec.Decode(&c); err != nil {
				// The parent closed stdin, or is gone: stop.
				cancel()
				return
			}
			select {
			case cmds <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	err := runWorker(ctx, cmds, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		_ = o.send(workerMsg{Type: "error", Error: err.Error()})
	}
	return err
}

func (cfg *workerConfig) tlsConfig() (*tls.Config, error) {
	if cfg.SkipVerify {
		return &tls.Config{InsecureSkipVerify: true}, nil //nolint:gosec // --target without --ca, as in the bench
	}
	if cfg.RootsPEM == "" {
		return &tls.Config{}, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cfg.RootsPEM)) {
		return nil, errors.New("worker: no certificate in roots_pem")
	}
	return &tls.Config{RootCAs: pool}, nil
}

func runWorker(ctx context.Context, cmds <-chan workerCommand, out *workerOut) error {
	var cfg *workerConfig
	select {
	case c := <-cmds:
		if c.Type != "config" || c.Config == nil {
			return fmt.Errorf("worker: first message %q, want its config", c.Type)
		}
		cfg = c.Config
	case <-ctx.Done():
		return errors.New("worker: stdin ended before the config")
	}
	n := cfg.To - cfg.From
	switch {
	case n < 0 || len(cfg.Instances) == 0 || len(cfg.Channels) == 0:
		return fmt.Errorf("worker: bad config: clients [%d, %d), %d instances, %d channels", cfg.From, cfg.To, len(cfg.Instances), len(cfg.Channels))
	case !cfg.Broadcast && cfg.To > len(cfg.Channels):
		return fmt.Errorf("worker: clients up to %d but %d channels", cfg.To, len(cfg.Channels))
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return err
	}
	var sources []net.IP
	for _, s := range cfg.Sources {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("worker: bad source address %q", s)
		}
		// The address must be usable (as the bench checks its own).
		if l, err := net.Listen("tcp", net.JoinHostPort(s, "0")); err == nil {
			l.Close()
			sources = append(sources, ip)
		}
	}
	env := newDialEnv(cfg.Transport, tlsCfg, sources, nil)
	a := newAPI(cfg.APIKey, tlsCfg)
	tk := &tokens{api: a, m: map[string]string{}}
	f := newFleet(ctx, env)
	if cfg.BufferSize > 0 {
		f.bufferSize = cfg.BufferSize
	}
	var closeOnce sync.Once
	closeFleet := func() { closeOnce.Do(f.close) }
	defer closeFleet()
	fmt.Fprintf(os.Stderr, "worker %d (pid %d): %s clients %d–%d (%d) on %d instances, sources %v, ramp %.0f/s\n",
		cfg.Index, os.Getpid(), cfg.Transport, cfg.From, cfg.To-1, n, len(cfg.Instances), cfg.Sources, cfg.RampPerSec)

	rampStart := time.Unix(0, cfg.RampStart)
	added := 0
	addDue := func() error {
		due := n
		if cfg.RampPerSec > 0 {
			el := time.Since(rampStart).Seconds()
			if el < 0 {
				return nil
			}
			due = min(n, int(el*cfg.RampPerSec)+1)
		}
		for ; added < due; added++ {
			i := cfg.From + added
			in := cfg.Instances[i%len(cfg.Instances)]
			user := fmt.Sprintf("%s-u%d", cfg.Prefix, i)
			var err error
			if cfg.Broadcast {
				err = f.add(tk, user, 0, cfg.Channels[0], i%len(cfg.Instances), in.Plain, in.TLS, []string{cfg.Channels[0]})
			} else {
				err = f.add(tk, user, i, cfg.Channels[i], i%len(cfg.Instances), in.Plain, in.TLS, nil)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	var lastConnect int64
	progress := func() workerProgress {
		// f.subs grows only in this goroutine (addDue).
		p := workerProgress{Added: added, Delivered: f.delivered.Load()}
		var latest int64
		phases := map[string]int{}
		sample, sampleDown := "", false
		for _, s := range f.subs {
			if s.connects.Load() > 0 {
				p.Connected++
				latest = max(latest, s.connectedAt.Load())
			}
			st := s.c.State()
			if st.Phase != client.Connected {
				p.Down++
			}
			if s.ready.Load() {
				p.Ready++
			} else if added == n {
				phases[st.Phase.String()]++
				if down := st.Phase != client.Connected; sample == "" || down && !sampleDown {
					sample, sampleDown = fmt.Sprintf("client %s (%d connections): %v", s.user, s.connects.Load(), st), down
				}
			}
		}
		if len(phases) > 0 {
			p.Stuck = fmt.Sprintf("not ready: %v; e.g. %s", phases, sample)
		}
		if p.Connected == n {
			if lastConnect == 0 {
				lastConnect = latest
				if n == 0 {
					lastConnect = time.Now().UnixNano()
				}
				fmt.Fprintf(os.Stderr, "worker %d: all %d connected, %.1f s after the ramp's start\n", cfg.Index, n, time.Duration(lastConnect-cfg.RampStart).Seconds())
			}
			p.LastConnect = lastConnect
		}
		return p
	}

	ramp := time.NewTicker(5 * time.Millisecond)
	defer ramp.Stop()
	rampC := ramp.C
	report := time.NewTicker(250 * time.Millisecond)
	defer report.Stop()
	var window [2]workerCounters
	var windowDone chan struct{}
	counters := func() workerCounters {
		c := workerCounters{At: time.Now().UnixNano(), Delivered: f.delivered.Load(), Wire: env.wire.total()}
		c.CPU, _ = procCPU(os.Getpid())
		return c
	}
	for {
		if rampC != nil {
			if err := addDue(); err != nil {
				return err
			}
			if added == n {
				ramp.Stop()
				rampC = nil
				// The token requests are over: their connections would only
				// hold files open.
				a.client.CloseIdleConnections()
			}
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "worker %d: stopped (stdin ended) before the finish; progress %+v\n", cfg.Index, progress())
			return errors.New("worker: stopped (stdin ended) before the finish")
		case <-rampC:
		case <-report.C:
			if err := out.send(workerMsg{Type: "progress", Progress: ptr(progress())}); err != nil {
				return err
			}
		case c := <-cmds:
			switch c.Type {
			case "measure":
				wStart, wEnd := time.Unix(0, c.WindowStart), time.Unix(0, c.WindowEnd)
				f.measure.Store([2]time.Time{wStart, wEnd})
				windowDone = make(chan struct{})
				go func() {
					defer close(windowDone)
					sleepUntil(ctx, wStart)
					window[0] = counters()
					sleepUntil(ctx, wEnd)
					window[1] = counters()
				}()
			case "finish":
				if rampC != nil {
					return fmt.Errorf("worker: finish before its %d clients were started (%d)", n, added)
				}
				p := publishedRecord(c.Published, c.Failed)
				for _, s := range f.subs {
					if s.channel >= len(c.Published) {
						return fmt.Errorf("worker: finish names %d channels, a client checks channel %d", len(c.Published), s.channel)
					}
				}
				f.waitDelivered(p, time.Duration(c.DrainMs)*time.Millisecond)
				if windowDone != nil {
					<-windowDone
				}
				res := &workerResult{Clients: n, Window: window}
				for _, s := range f.subs {
					res.Reconnects += max(s.connects.Load()-1, 0)
					if st := s.c.State(); st.Phase != client.Connected {
						res.Down++
						if res.DownWhy == nil {
							res.DownWhy = map[string]int{}
						}
						res.DownWhy[errorKind(st)]++
					}
				}
				res.RSS, _ = procRSS(os.Getpid())
				closeFleet()
				res.Correctness = f.correctness(p)
				h := f.lat.merged()
				res.Latency = h.Export()
				res.CPU, _ = procCPU(os.Getpid())
				fmt.Fprintf(os.Stderr, "worker %d: result: %+v, %d latencies, reconnects %d, down %d\n",
					cfg.Index, res.Correctness, h.TotalCount(), res.Reconnects, res.Down)
				return out.send(workerMsg{Type: "result", Result: res})
			default:
				return fmt.Errorf("worker: unknown command %q", c.Type)
			}
		}
	}
}

// errorKind is a client state's phase and error, digits elided (ports,
// user numbers), to count alike errors together.
func errorKind(st client.State) string {
	s := st.Phase.String()
	if st.Err != nil {
		s += ": " + st.Err.Error()
	}
	b := []byte(s)
	out := make([]byte, 0, len(b))
	for i, c := range b {
		if c >= '0' && c <= '9' {
			if i > 0 && b[i-1] >= '0' && b[i-1] <= '9' {
				continue
			}
			c = '#'
		}
		out = append(out, c)
	}
	if len(out) > 160 {
		out = append(out[:160], "…"...)
	}
	return string(out)
}

// publishedRecord is a publisher as fleet.correctness and
// fleet.waitDelivered read it: the last sequence number of every channel
// and the failed publishes, as the parent's publisher recorded them.
func publishedRecord(last []int64, failed map[int][]int64) *publisher {
	p := &publisher{seq: make([]atomic.Int64, len(last)), failed: map[int]map[int64]bool{}}
	for ch, v := range last {
		p.seq[ch].Store(v)
	}
	for ch, seqs := range failed {
		m := map[int64]bool{}
		for _, s := range seqs {
			m[s] = true
		}
		p.failed[ch] = m
		p.failures.Add(int64(len(seqs)))
	}
	return p
}

// finishCommand is the finish message for a publisher's record.
func finishCommand(p *publisher, drain time.Duration) workerCommand {
	c := workerCommand{Type: "finish", Published: make([]int64, len(p.seq)), DrainMs: drain.Milliseconds()}
	for ch := range p.seq {
		c.Published[ch] = p.published(ch)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for ch, m := range p.failed {
		if c.Failed == nil {
			c.Failed = map[int][]int64{}
		}
		for s := range m {
			c.Failed[ch] = append(c.Failed[ch], s)
		}
		slices.Sort(c.Failed[ch])
	}
	return c
}

// workerMerge is the workers' results put together.
type workerMerge struct {
	Correctness Correctness
	Latency     *hdrhistogram.Histogram
	Reconnects  int64
	Down        int
	DownWhy     map[string]int
	CPU         int64 // µs, every worker's whole life
	RSS         int64 // bytes, summed at the end
	Window      [2]workerCounters
}

// mergeWorkers adds up the workers' counts and merges their histograms;
// pubFailed is the parent publisher's count of failed publishes.
func mergeWorkers(rs []*workerResult, pubFailed int64) (workerMerge, error) {
	m := workerMerge{Latency: hdrhistogram.New(1, maxLatencyMicros, 3)}
	for i, r := range rs {
		if r == nil {
			return m, fmt.Errorf("worker %d: no result", i)
		}
		c := r.Correctness
		m.Correctness.Expected += c.Expected
		m.Correctness.Delivered += c.Delivered
		m.Correctness.Lost += c.Lost
		m.Correctness.Duplicate += c.Duplicate
		m.Correctness.Reordered += c.Reordered
		m.Correctness.Gaps += c.Gaps
		m.Correctness.Errors += c.Errors
		if r.Latency != nil {
			if err := r.Latency.Validate(); err != nil {
				return m, fmt.Errorf("worker %d: latency histogram: %w", i, err)
			}
			m.Latency.Merge(hdrhistogram.Import(r.Latency))
		}
		m.Reconnects += r.Reconnects
		m.Down += r.Down
		for k, v := range r.DownWhy {
			if m.DownWhy == nil {
				m.DownWhy = map[string]int{}
			}
			m.DownWhy[k] += v
		}
		m.CPU += r.CPU
		m.RSS += r.RSS
		for k := range m.Window {
			m.Window[k].Delivered += r.Window[k].Delivered
			m.Window[k].Wire += r.Window[k].Wire
			m.Window[k].CPU += r.Window[k].CPU
		}
	}
	m.Correctness.PubFailed = pubFailed
	return m, nil
}

// workerProc is a worker process, seen from the parent.
type workerProc struct {
	idx     int
	clients int
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	logPath string
	enc     *json.Encoder

	mu       sync.Mutex
	progress workerProgress
	result   *workerResult
	failure  string        // an error the worker reported, or a protocol error
	ended    chan struct{} // closed once stdout has ended and the process was waited for
	waitErr  error         // the exit status; set before ended is closed
}

// startWorker starts argv as worker idx, pinned to cpus when set (through
// taskset, as the servers are), its stderr appended to logPath, and sends
// it its config.
func startWorker(argv []string, idx int, cpus, logPath string, cfg *workerConfig) (*workerProc, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := childCommand(argv, cpus)
	cmd.Stderr = log
	stdin, err := cmd.StdinPipe()
	if err != nil {
		log.Close()
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		log.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start worker %d (%s): %w", idx, strings.Join(argv, " "), err)
	}
	w := &workerProc{idx: idx, clients: cfg.To - cfg.From, cmd: cmd, stdin: stdin, logPath: logPath,
		enc: json.NewEncoder(stdin), ended: make(chan struct{})}
	go func() {
		defer close(w.ended)
		dec := json.NewDecoder(bufio.NewReader(stdout))
		for {
			var m workerMsg
			if err := dec.Decode(&m); err != nil {
				if !errors.Is(err, io.EOF) {
					w.fail("reading its output: " + err.Error())
				}
				break
			}
			w.mu.Lock()
			switch m.Type {
			case "progress":
				if m.Progress != nil {
					w.progress = *m.Progress
				}
			case "result":
				w.result = m.Result
			case "error":
				if w.failure == "" {
					w.failure = m.Error
				}
			}
			w.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout)
		w.waitErr = cmd.Wait()
		log.Close()
	}()
	if err := w.send(workerCommand{Type: "config", Config: cfg}); err != nil {
		w.kill()
		return nil, fmt.Errorf("worker %d: send its config: %w", idx, err)
	}
	return w, nil
}

func (w *workerProc) pid() int { return w.cmd.Process.Pid }

func (w *workerProc) fail(why string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failure == "" {
		w.failure = why
	}
}

func (w *workerProc) send(c workerCommand) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(c)
}

func (w *workerProc) state() (workerProgress, *workerResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.progress, w.result
}

// err is non-nil once the worker failed: it reported an error, or it
// ended without a result (it died).
func (w *workerProc) err() error {
	w.mu.Lock()
	failure, res := w.failure, w.result
	w.mu.Unlock()
	if failure != "" {
		return fmt.Errorf("worker %d (pid %d): %s (log %s)", w.idx, w.pid(), failure, w.logPath)
	}
	select {
	case <-w.ended:
		if res == nil {
			return fmt.Errorf("worker %d (pid %d) died without its result: %v; last log lines: %s", w.idx, w.pid(), w.waitErr, logTail(w.logPath, 3))
		}
	default:
	}
	return nil
}

// stop ends the worker: stdin closed (it exits by itself), SIGKILL if it
// has not within grace. Idempotent.
func (w *workerProc) stop(grace time.Duration) {
	_ = w.stdin.Close()
	select {
	case <-w.ended:
	case <-time.After(grace):
		w.kill()
	}
}

func (w *workerProc) kill() {
	_ = w.stdin.Close()
	_ = w.cmd.Process.Kill()
	<-w.ended
}

// logTail is the last n non-empty lines of a log file, on one line.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}
