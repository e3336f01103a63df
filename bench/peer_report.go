package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PeerResults is everything a peer bench measured: its results.json.
type PeerResults struct {
	Started      time.Time         `json:"started"`
	Command      string            `json:"command"`
	Quick        bool              `json:"quick"`
	Machine      Machine           `json:"machine"`
	Centrifugo   string            `json:"centrifugo,omitempty"` // its version; empty: Herald alone
	Servers      []string          `json:"servers"`
	Runs         int               `json:"runs_per_case"`
	WarmupS      float64           `json:"warmup_s"`
	WindowS      float64           `json:"window_s"`
	Method       []string          `json:"method"`
	LoadAvgStart string            `json:"loadavg_start"`
	LoadAvgEnd   string            `json:"loadavg_end"`
	Cases        []*PeerCaseResult `json:"cases"`
	Duration     float64           `json:"duration_s"`
}

// PeerCaseResult is one case: every run, and per server its summary.
type PeerCaseResult struct {
	Case    peerCase               `json:"case"`
	Runs    []*PeerRun             `json:"runs"`
	Summary map[string]PeerSummary `json:"summary"`
	// Ratios are Herald ÷ Centrifugo per metric, over the run pairs
	// (run i of each) that both succeeded; absent with Herald alone.
	Ratios map[string]Spread `json:"ratios_h_over_c,omitempty"`
}

// PeerRun is one run: one fresh server process.
type PeerRun struct {
	Server string `json:"server"`
	Index  int    `json:"index"`
	Error  string `json:"error,omitempty"`
	// Load cases.
	DeliveriesPerS float64 `json:"deliveries_per_s,omitempty"`
	OfferedPerS    float64 `json:"offered_per_s,omitempty"` // at a rate: rate × subscribers
	ServerCores    float64 `json:"server_cores,omitempty"`  // CPU the server used over the window
	PerCore        float64 `json:"deliveries_per_s_per_core,omitempty"`
	LoadCores      float64 `json:"load_cores,omitempty"` // CPU the load client used over the window
	Latency        Latency `json:"latency"`
	Published      int64   `json:"published,omitempty"`
	PubFailed      int64   `json:"publish_failed,omitempty"`
	LastPubError   string  `json:"last_publish_error,omitempty"`
	Lost           int64   `json:"lost"`
	Duplicate      int64   `json:"duplicates"`
	Reordered      int64   `json:"reordered"`
	Alien          int64   `json:"alien,omitempty"` // payloads of no known worker
	Disconnected   int     `json:"disconnected"`    // subscribers the server closed
	Closes         string  `json:"closes,omitempty"`
	// Every case.
	RSSBytes     int64   `json:"rss_bytes,omitempty"`
	BaseRSSBytes int64   `json:"base_rss_bytes,omitempty"` // idle: before the connections
	KiBPerConn   float64 `json:"kib_per_conn,omitempty"`   // idle
	ConnectS     float64 `json:"connect_s"`                // connecting and subscribing everyone
	LoadAvg      string  `json:"loadavg"`                  // /proc/loadavg when the run ended
}

// Spread is a median and the range it comes from.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

func spreadOf(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// PeerSummary is one server's runs of a case.
type PeerSummary struct {
	OK         int               `json:"ok_runs"`
	Failed     int               `json:"failed_runs"`
	Metrics    map[string]Spread `json:"metrics"`
	Lost       int64             `json:"lost"`
	Duplicate  int64             `json:"duplicates"`
	Disconnect int               `json:"disconnected"`
	PubFailed  int64             `json:"publish_failed"`
}

// The metrics summarized; each is a function of a run.
var peerMetrics = []struct {
	name  string
	kinds string // case kinds it applies to
	of    func(*PeerRun) float64
}{
	{"deliveries_per_s", "flat rate", func(r *PeerRun) float64 { return r.DeliveriesPerS }},
	{"per_core", "flat rate", func(r *PeerRun) float64 { return r.PerCore }},
	{"server_cores", "flat rate", func(r *PeerRun) float64 { return r.ServerCores }},
	{"load_cores", "flat rate", func(r *PeerRun) float64 { return r.LoadCores }},
	{"p50_ms", "flat rate", func(r *PeerRun) float64 { return r.Latency.P50 }},
	{"p99_ms", "flat rate", func(r *PeerRun) float64 { return r.Latency.P99 }},
	{"max_ms", "flat rate", func(r *PeerRun) float64 { return r.Latency.Max }},
	{"rss_mib", "flat rate idle", func(r *PeerRun) float64 { return float64(r.RSSBytes) / (1 << 20) }},
	{"kib_per_conn", "idle", func(r *PeerRun) float64 { return r.KiBPerConn }},
}

func (cr *PeerCaseResult) summarize(servers []string) {
	cr.Summary = map[string]PeerSummary{}
	for _, srv := range servers {
		s := PeerSummary{Metrics: map[string]Spread{}}
		var ok []*PeerRun
		for _, r := range cr.Runs {
			if r.Server != srv {
				continue
			}
			if r.Error != "" {
				s.Failed++
				continue
			}
			ok = append(ok, r)
			s.Lost += r.Lost
			s.Duplicate += r.Duplicate
			s.Disconnect += r.Disconnected
			s.PubFailed += r.PubFailed
		}
		s.OK = len(ok)
		for _, m := range peerMetrics {
			if !strings.Contains(m.kinds, cr.Case.Kind) {
				continue
			}
			var v []float64
			for _, r := range ok {
				v = append(v, m.of(r))
			}
			if len(v) > 0 {
				s.Metrics[m.name] = spreadOf(v)
			}
		}
		cr.Summary[srv] = s
	}
	if slices.Contains(servers, PeerCentrifugo) {
		cr.Ratios = cr.ratios()
	}
}

// ratios are Herald ÷ Centrifugo of each metric over the run pairs.
func (cr *PeerCaseResult) ratios() map[string]Spread {
	pairs := map[int][2]*PeerRun{}
	for _, r := range cr.Runs {
		if r.Error != "" {
			continue
		}
		p := pairs[r.Index]
		if r.Server == PeerHerald {
			p[0] = r
		} else {
			p[1] = r
		}
		pairs[r.Index] = p
	}
	out := map[string]Spread{}
	for _, m := range peerMetrics {
		if !strings.Contains(m.kinds, cr.Case.Kind) {
			continue
		}
		var v []float64
		for _, p := range pairs {
			if p[0] != nil && p[1] != nil && m.of(p[1]) != 0 {
				v = append(v, m.of(p[0])/m.of(p[1]))
			}
		}
		if len(v) > 0 {
			out[m.name] = spreadOf(v)
		}
	}
	return out
}

func (r *PeerResults) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// line is one run's figures for the log.
func (r *PeerRun) line(c peerCase) string {
	if r.Error != "" {
		return "FAILED: " + r.Error
	}
	if c.Kind == peerIdle {
		return fmt.Sprintf("%.1f KiB/conn (RSS %.0f → %.0f MiB), load %s",
			r.KiBPerConn, float64(r.BaseRSSBytes)/(1<<20), float64(r.RSSBytes)/(1<<20), r.LoadAvg)
	}
	s := fmt.Sprintf("%s deliveries/s, server %.2f cores (%s/core), load client %.2f cores, p50 %.1f p99 %.1f max %.0f ms, lost %d, dup %d, disconnected %d",
		kfmt(r.DeliveriesPerS), r.ServerCores, kfmt(r.PerCore), r.LoadCores, r.Latency.P50, r.Latency.P99, r.Latency.Max,
		r.Lost, r.Duplicate, r.Disconnected)
	if r.PubFailed > 0 {
		s += fmt.Sprintf(", %d publishes failed (%s)", r.PubFailed, r.LastPubError)
	}
	if r.Closes != "" {
		s += " [" + r.Closes + "]"
	}
	return s + ", load " + r.LoadAvg
}

// kfmt renders a rate in thousands.
func kfmt(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.0fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

func (s Spread) render(f func(float64) string) string {
	if s.N == 0 {
		return "—"
	}
	if s.N == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

func ratioFmt(v float64) string { return fmt.Sprintf("%.2fx", v) }
func msFmt(v float64) string    { return fmt.Sprintf("%.1f ms", v) }
func kibFmt(v float64) string   { return fmt.Sprintf("%.1f KiB", v) }
func coresFmt(v float64) string { return fmt.Sprintf("%.2f", v) }

// PeerReport renders the results as Markdown.
func PeerReport(r *PeerResults) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Herald against a peer\n\n")
	fmt.Fprintf(&b, "- Command: `%s`\n- Started: %s, took %.0f s\n", r.Command, r.Started.Format(time.RFC3339), r.Duration)
	fmt.Fprintf(&b, "- Machine: %s, %d cores, Linux %s, %s\n", r.Machine.CPUModel, r.Machine.Cores, r.Machine.Kernel, r.Machine.GoVersion)
	fmt.Fprintf(&b, "- Herald: %s\n", r.Machine.Herald)
	if r.Centrifugo != "" {
		fmt.Fprintf(&b, "- Centrifugo: %s\n", r.Centrifugo)
	} else {
		fmt.Fprintf(&b, "- Centrifugo: not given (`--centrifugo`): Herald alone, no ratios\n")
	}
	fmt.Fprintf(&b, "- Load average (1, 5, 15 min): %s at the start, %s at the end\n", r.LoadAvgStart, r.LoadAvgEnd)
	if r.Quick {
		fmt.Fprintf(&b, "- **Quick run**: %d subscribers per case, short windows: a test, not a measurement\n", quickSubscribers)
	}
	b.WriteString("\n## Summary\n\n")
	b.WriteString(PeerTables(r))
	b.WriteString("## Method\n\n")
	for _, m := range r.Method {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	b.WriteString("\n## Every run\n\n| case | run | server | figures |\n|---|---|---|---|\n")
	for _, cr := range r.Cases {
		for _, run := range cr.Runs {
			fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", cr.Case.Name, run.Index+1, run.Server, strings.ReplaceAll(run.line(cr.Case), "|", "\\|"))
		}
	}
	return b.String()
}

// PeerTables renders each case's table and notes.
func PeerTables(r *PeerResults) string {
	var b strings.Builder
	b.WriteString("Medians over the runs (range in brackets). Ratio H/C = median (range) of the ratios Herald ÷ Centrifugo of the run pairs (run i of each server): above 1 Herald has more of it (deliveries/s: better; latency, cores, memory: worse).\n\n")
	for _, cr := range r.Cases {
		writePeerCase(&b, r, cr)
	}
	return b.String()
}

func writePeerCase(b *strings.Builder, r *PeerResults, cr *PeerCaseResult) {
	c := cr.Case
	fmt.Fprintf(b, "### %s: %s\n\n", c.Name, describeCase(c))
	type row struct {
		label, metric string
		f             func(float64) string
	}
	rows := []row{{"deliveries/s", "deliveries_per_s", kfmt}, {"deliveries/s per server core", "per_core", kfmt},
		{"server cores used", "server_cores", coresFmt}, {"load client cores used", "load_cores", coresFmt},
		{"p50 latency", "p50_ms", msFmt}, {"p99 latency", "p99_ms", msFmt}, {"max latency", "max_ms", msFmt},
		{"server RSS (MiB)", "rss_mib", coresFmt}}
	if c.Kind == peerIdle {
		rows = []row{{"memory per connection", "kib_per_conn", kibFmt}, {"server RSS (MiB)", "rss_mib", coresFmt}}
	}
	b.WriteString("| metric |")
	for _, s := range r.Servers {
		fmt.Fprintf(b, " %s |", s)
	}
	if cr.Ratios != nil {
		b.WriteString(" ratio H/C |")
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(r.Servers)+btoi(cr.Ratios != nil)) + "\n")
	for _, rw := range rows {
		fmt.Fprintf(b, "| %s |", rw.label)
		for _, s := range r.Servers {
			fmt.Fprintf(b, " %s |", cr.Summary[s].Metrics[rw.metric].render(rw.f))
		}
		if cr.Ratios != nil {
			fmt.Fprintf(b, " %s |", cr.Ratios[rw.metric].render(ratioFmt))
		}
		b.WriteString("\n")
	}
	if c.Kind != peerIdle {
		b.WriteString("| lost / duplicates / disconnected / failed publishes (all runs) |")
		for _, s := range r.Servers {
			sm := cr.Summary[s]
			fmt.Fprintf(b, " %d / %d / %d / %d |", sm.Lost, sm.Duplicate, sm.Disconnect, sm.PubFailed)
		}
		if cr.Ratios != nil {
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	b.WriteString("| runs ok / failed |")
	for _, s := range r.Servers {
		fmt.Fprintf(b, " %d / %d |", cr.Summary[s].OK, cr.Summary[s].Failed)
	}
	if cr.Ratios != nil {
		b.WriteString(" |")
	}
	b.WriteString("\n\n")
	for _, note := range peerNotes(r, cr) {
		fmt.Fprintf(b, "- %s\n", note)
	}
	b.WriteString("\n")
}

// peerNotes are the warnings a reader needs before trusting a case.
func peerNotes(r *PeerResults, cr *PeerCaseResult) []string {
	var notes []string
	loadCPUs, serverCPUs := cpuListSize(r.Machine.LoadCPUs), cpuListSize(r.Machine.ServerCPUs)
	for _, s := range r.Servers {
		if m, ok := cr.Summary[s].Metrics["load_cores"]; ok && loadCPUs > 0 && m.Max >= 0.9*float64(loadCPUs) {
			notes = append(notes, fmt.Sprintf("%s: the load client used up to %.2f of its %d core(s): it may have been the bottleneck, so the server's figure is a lower bound.", s, m.Max, loadCPUs))
		}
	}
	if n, worst := starvedRuns(cr, serverCPUs); n > 0 {
		notes = append(notes, fmt.Sprintf("In %d of %d runs the server used less than %.0f %% of its %d core(s) (down to %.2f) although the load asked for more than it delivered: other processes took its CPU (load average at the start %s) or the load client could not keep up. Its deliveries/s then measure the machine; deliveries/s per server core are the figures to compare.",
			n, len(cr.Runs), 100*starvedShare, serverCPUs, worst, r.LoadAvgStart))
	}
	for _, run := range cr.Runs {
		if run.Error != "" {
			notes = append(notes, fmt.Sprintf("%s run %d failed: %s", run.Server, run.Index+1, run.Error))
		}
	}
	return notes
}

func describeCase(c peerCase) string {
	switch c.Kind {
	case peerFlat:
		return fmt.Sprintf("%d subscribers, %d publishers flat out (closed loop)", c.Subscribers, c.Publishers)
	case peerRate:
		return fmt.Sprintf("%d subscribers at %.0f msg/s (%s deliveries/s offered, open loop, %d publishers)", c.Subscribers, c.Rate, kfmt(c.Rate*float64(c.Subscribers)), c.Publishers)
	}
	return fmt.Sprintf("%d idle WebSocket connections", c.Subscribers)
}

// starvedShare is the share of its cores below which a server that was
// offered more than it delivered was not the bottleneck.
const starvedShare = 0.9

// starvedRuns counts the load runs whose server was not saturated while
// it fell short: flat out (always short by construction), or at a rate
// with less than 95 % of the offered deliveries kept.
func starvedRuns(cr *PeerCaseResult, cores int) (n int, worst float64) {
	worst = float64(cores)
	for _, r := range cr.Runs {
		if r.Error != "" || cr.Case.Kind == peerIdle || r.ServerCores >= starvedShare*float64(cores) {
			continue
		}
		if cr.Case.Kind == peerRate && r.DeliveriesPerS >= 0.95*r.OfferedPerS {
			continue
		}
		n++
		worst = min(worst, r.ServerCores)
	}
	return n, worst
}

// cpuListSize is the number of CPUs of a CPU list ("1", "0-3,6"); for an
// empty or bad one (not pinned), the machine's.
func cpuListSize(list string) int {
	var set unix.CPUSet
	if n, err := parseCPUList(list, &set); err == nil {
		return n
	}
	return CPUCount()
}

// RerenderPeer rewrites DIR/report.md from DIR/results.json.
func RerenderPeer(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var r PeerResults
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	if len(r.Servers) == 0 {
		return fmt.Errorf("%s: not the results of herald bench peer", filepath.Join(dir, "results.json"))
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(PeerReport(&r)), 0o644)
}

// failedRuns counts the runs that failed, of all.
func (r *PeerResults) failedRuns() (failed, total int) {
	for _, c := range r.Cases {
		for _, run := range c.Runs {
			total++
			if run.Error != "" {
				failed++
			}
		}
	}
	return failed, total
}
