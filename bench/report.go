package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Report renders a run as Markdown: method, environment, the design's
// targets against the measured figures, one table per scenario with the
// transports side by side, and a summary derived from the numbers.
func Report(res *Results) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	kind := "full run"
	if res.Quick {
		kind = "quick run (CI: small loads, short windows — not for comparisons)"
	}
	w("# Herald benchmark report\n\n")
	w("`%s` — %s, %s, %.0f s.\n\n", strings.TrimSpace(res.Command), kind, res.Started.Format("2006-01-02 15:04 MST"), res.Duration)
	w("## Method\n\n")
	for _, m := range res.Method {
		w("- %s\n", m)
	}
	m := res.Machine
	w("\n## Environment\n\n| | |\n|---|---|\n")
	w("| CPU | %s, %d cores |\n| kernel | Linux %s |\n| Go | %s |\n| Herald | %s |\n| open files limit | %d |\n| servers | %s |\n",
		m.CPUModel, m.Cores, m.Kernel, m.GoVersion, m.Herald, m.NoFile, res.Targets)
	if t := res.Redis.String(); t != "" {
		w("| Redis | %s |\n", t)
	}
	if m.ServerCPUs != "" {
		w("| CPU placement | servers and Redis on CPU %s, load generator on CPU %s |\n", m.ServerCPUs, m.LoadCPUs)
	} else {
		w("| CPU placement | not pinned |\n")
	}
	w("\n| transport | what it is |\n|---|---|\n")
	for _, tr := range AllTransports {
		w("| %s | %s |\n", tr, transportDesc[tr])
	}
	w("\n## Promises\n\n")
	if len(res.Failures) == 0 {
		w("Every message was delivered exactly once and in order in every scenario on every transport: lost 0, duplicates 0, reordered 0.\n")
	} else {
		for _, f := range res.Failures {
			w("- **%s**\n", f)
		}
	}
	if res.Quick {
		w("\n## Targets\n\nThe design's performance targets are checked by the full run only (`herald bench`).\n")
	} else if t := targets(res); t != "" {
		w("\n## Targets\n\nMeasured at the target's load where the run reached it; a figure at another load is shown as such and counts as not met.\n\n%s", t)
	}
	w("\n## Which transport when\n\n%s", summary(res))
	for _, sc := range AllScenarios {
		rs := filter(res.Results, func(r *Result) bool { return r.Scenario == sc })
		if len(rs) == 0 {
			continue
		}
		w("\n## %s\n\n%s\n", sc, scenarioDesc[sc])
		var loads []string
		for _, r := range rs {
			if !slices.Contains(loads, r.Load) {
				loads = append(loads, r.Load)
			}
		}
		for _, load := range loads {
			w("\n%s\n\n", scenarioTable(filter(rs, func(r *Result) bool { return r.Load == load })))
		}
	}
	if charts := chartFiles(res); len(charts) > 0 {
		w("\n## Charts\n\n")
		for _, c := range charts {
			w("![%s](%s)\n\n", c, c)
		}
	}
	return b.String()
}

func filter(rs []*Result, keep func(*Result) bool) []*Result {
	var out []*Result
	for _, r := range rs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

type row struct {
	name string
	cell func(*Result) string
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func f2(v float64) string { return fmt.Sprintf("%.2f", v) }
func opt(v *float64, format func(float64) string) string {
	if v == nil {
		return "–"
	}
	return format(*v)
}
func count(v int64) string {
	if v != 0 {
		return fmt.Sprintf("**%d**", v)
	}
	return "0"
}

var rows = []row{
	{"deliveries/s (offered)", func(r *Result) string { return fmt.Sprintf("%.0f", r.DeliveriesPerSec) }},
	{"received/s in the window", func(r *Result) string {
		if r.ReceivedPerSec == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f", r.ReceivedPerSec)
	}},
	{"latency p50 (ms)", func(r *Result) string { return f2(r.Latency.P50) }},
	{"p90 (ms)", func(r *Result) string { return f2(r.Latency.P90) }},
	{"p99 (ms)", func(r *Result) string { return f2(r.Latency.P99) }},
	{"p99.9 (ms)", func(r *Result) string { return f2(r.Latency.P999) }},
	{"max (ms)", func(r *Result) string { return f2(r.Latency.Max) }},
	{"deliveries owed / received", func(r *Result) string {
		return fmt.Sprintf("%d / %d", r.Correctness.Expected, r.Correctness.Delivered)
	}},
	{"lost", func(r *Result) string { return count(r.Correctness.Lost) }},
	{"duplicates", func(r *Result) string { return count(r.Correctness.Duplicate) }},
	{"reordered", func(r *Result) string { return count(r.Correctness.Reordered) }},
	{"gap notices", func(r *Result) string { return fmt.Sprint(r.Correctness.Gaps) }},
	{"publishes failed", func(r *Result) string { return fmt.Sprint(r.Correctness.PubFailed) }},
	{"server CPU (% of a core)", func(r *Result) string { return opt(r.ServerCPUPct, f1) }},
	{"server CPU µs / delivery", func(r *Result) string { return opt(r.ServerCPUPerDelivery, f2) }},
	{"Redis CPU (% of a core)", func(r *Result) string { return opt(r.RedisCPUPct, f1) }},
	{"load generator CPU (% of a core)", func(r *Result) string { return f1(r.LoadCPUPct) }},
	{"wire bytes / delivery", func(r *Result) string { return opt(r.WirePerDelivery, f1) }},
	{"connects/s", func(r *Result) string { return fmt.Sprintf("%.0f", r.ConnectPerSec) }},
	{"server RSS KiB / connection", func(r *Result) string { return opt(r.RSSPerConnKiB, f1) }},
	{"idle server CPU (% of a core)", func(r *Result) string { return opt(r.IdleCPUPct, f2) }},
	{"idle wire bytes / conn / hour", func(r *Result) string {
		return opt(r.IdleWirePerHour, func(v float64) string { return fmt.Sprintf("%.0f", v) })
	}},
	{"reconnections", func(r *Result) string { return fmt.Sprint(r.Reconnects) }},
	{"all resumed", func(r *Result) string {
		if r.ResumedAll == nil {
			return "–"
		}
		if *r.ResumedAll {
			return "yes"
		}
		return "**no**"
	}},
	{"longest reconnection (s)", func(r *Result) string { return opt(r.ResumeMaxSec, f2) }},
	{"p99 reconnection (s)", func(r *Result) string { return opt(r.ResumeP99Sec, f2) }},
	{"slow clients", func(r *Result) string { return fmt.Sprint(r.SlowClients) }},
	{"slow clients' p99 after resuming (ms)", func(r *Result) string {
		if r.SlowLatency == nil {
			return "–"
		}
		return f2(r.SlowLatency.P99)
	}},
	{"notes", func(r *Result) string {
		return strings.ReplaceAll(strings.Join(append(r.Notes, r.Error), " "), "|", "/")
	}},
}

// scenarioTable is one load of a scenario: metrics down, transports across.
// Rows that are empty on every transport are left out.
func scenarioTable(rs []*Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s**\n\n| |", rs[0].Load)
	for _, r := range rs {
		fmt.Fprintf(&b, " %s |", r.Transport)
	}
	b.WriteString("\n|---|")
	for range rs {
		b.WriteString("---:|")
	}
	for _, rw := range rows {
		cells := make([]string, len(rs))
		empty := true
		for i, r := range rs {
			cells[i] = strings.TrimSpace(rw.cell(r))
			if cells[i] != "–" && cells[i] != "" && cells[i] != "0" && cells[i] != "0.00" && cells[i] != "0 / 0" || strings.Contains(rw.name, "lost") || rw.name == "duplicates" || rw.name == "reordered" {
				empty = false
			}
		}
		if empty {
			continue
		}
		fmt.Fprintf(&b, "\n| %s | %s |", rw.name, strings.Join(cells, " | "))
	}
	return b.String()
}

// find returns the result of a scenario and transport whose subscriber
// count is nearest n (any when n is 0).
func find(res *Results, scenario, transport string, n int) *Result {
	var best *Result
	for _, r := range res.Results {
		if r.Scenario != scenario || r.Transport != transport || r.Error != "" {
			continue
		}
		if best == nil || n > 0 && abs(r.Subscribers-n) < abs(best.Subscribers-n) {
			best = r
		}
	}
	return best
}

func deref(v *float64) float64 {
	if v == nil {
		return 0
	}
	return *v
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// targets compares the design's goals with the measured figures.
func targets(res *Results) string {
	var b strings.Builder
	b.WriteString("| goal | measured | met |\n|---|---|---|\n")
	n := 0
	line := func(goal, measured string, ok bool) {
		n++
		met := "yes"
		if !ok {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", goal, measured, met)
	}
	if r := find(res, Saturation, WS, 1000); r != nil && r.ServerCPUPerDelivery != nil {
		line("broadcast, server saturated: ≤ 0.5 µs server CPU per delivery at 1,000 WebSocket subscribers",
			fmt.Sprintf("%.2f µs at %d subscribers, %.0f received/s, server at %.0f%% of a core", *r.ServerCPUPerDelivery, r.Subscribers, r.ReceivedPerSec, deref(r.ServerCPUPct)),
			*r.ServerCPUPerDelivery <= 0.5)
	}
	if r := find(res, Broadcast, WS, 5000); r != nil {
		line("broadcast: 5,000 subscribers at 200,000 deliveries/s, p99 ≤ 20 ms",
			fmt.Sprintf("%d subscribers: %.0f deliveries/s, p99 %.1f ms", r.Subscribers, r.DeliveriesPerSec, r.Latency.P99),
			r.Subscribers >= 5000 && r.DeliveriesPerSec >= 190000 && r.Latency.P99 <= 20)
	}
	if r := find(res, CrossInstance, WS, 0); r != nil {
		line("unicast across instances: 10,000 msg/s, p99 ≤ 1 ms (WebSocket)",
			fmt.Sprintf("%.0f msg/s, p99 %.2f ms", r.DeliveriesPerSec, r.Latency.P99), r.DeliveriesPerSec >= 9500 && r.Latency.P99 <= 1)
	}
	if r := find(res, Idle, WS, 10000); r != nil && r.IdleCPUPct != nil {
		line("10,000 idle WebSocket connections: ≤ 2% of one core",
			fmt.Sprintf("%.2f%% with %d connections", *r.IdleCPUPct, r.Subscribers), r.Subscribers >= 10000 && *r.IdleCPUPct <= 2)
	}
	for _, g := range []struct {
		tr  string
		kib float64
	}{{WS, 16}, {SSEH1, 20}, {SSEH2, 20}, {SSEH3, 48}, {H3, 48}, {WT, 48}} {
		if r := find(res, Idle, g.tr, 10000); r != nil && r.RSSPerConnKiB != nil {
			line(fmt.Sprintf("idle memory %s ≤ %.0f KiB per connection", g.tr, g.kib),
				fmt.Sprintf("%.1f KiB (server RSS, %d connections)", *r.RSSPerConnKiB, r.Subscribers), *r.RSSPerConnKiB <= g.kib)
		}
	}
	for _, tr := range AllTransports {
		if r := find(res, Failover, tr, 15000); r != nil && r.ResumedAll != nil {
			ok := *r.ResumedAll && r.ResumeMaxSec != nil && *r.ResumeMaxSec <= 10 && r.Correctness.Lost == 0 && r.Correctness.Duplicate == 0
			line(fmt.Sprintf("failover (%s): kill 1 of 3 instances holding 15,000 clients: all resumed within 10 s, lost 0, duplicates 0", tr),
				fmt.Sprintf("%d clients, longest reconnection %s s, resumed all: %v, lost %d, duplicates %d",
					r.Subscribers, opt(r.ResumeMaxSec, f2), *r.ResumedAll, r.Correctness.Lost, r.Correctness.Duplicate), ok && r.Subscribers >= 15000)
		}
	}
	for _, r := range filter(res.Results, func(r *Result) bool { return r.Scenario == ScaleOut && r.Transport == WS }) {
		c := r.Correctness
		line("4 instances × 18,000 connections, broadcast through Redis: all delivered, lost = 0",
			fmt.Sprintf("%d instances × %d connections: %d of %d deliveries owed received, lost %d, duplicates %d, reordered %d%s",
				r.Instances, r.Subscribers/max(r.Instances, 1), c.Delivered, c.Expected, c.Lost, c.Duplicate, c.Reordered, strings.TrimSuffix(" — "+r.Error, " — ")),
			r.Error == "" && r.Instances >= 4 && r.Subscribers >= 72000 && c.Expected > 0 && c.Delivered == c.Expected && c.Clean())
	}
	if n == 0 {
		return ""
	}
	return b.String()
}

// summary derives "which transport when" from the numbers: for each
// question, the transports ranked by the figure that answers it.
func summary(res *Results) string {
	var b strings.Builder
	rank := func(question, scenario, unit string, lowerBetter bool, val func(*Result) (float64, bool)) {
		type tv struct {
			tr string
			v  float64
		}
		var vs []tv
		for _, tr := range AllTransports {
			// The largest load of the scenario measured on every transport.
			var r *Result
			for _, x := range res.Results {
				if x.Scenario == scenario && x.Transport == tr && x.Error == "" && (r == nil || x.Subscribers >= r.Subscribers) {
					r = x
				}
			}
			if r == nil {
				continue
			}
			if v, ok := val(r); ok {
				vs = append(vs, tv{tr, v})
			}
		}
		if len(vs) < 2 {
			return
		}
		slices.SortStableFunc(vs, func(a, b tv) int {
			if lowerBetter {
				return cmpF(a.v, b.v)
			}
			return cmpF(b.v, a.v)
		})
		parts := make([]string, len(vs))
		for i, x := range vs {
			parts[i] = fmt.Sprintf("%s %s", x.tr, fmtVal(x.v, unit))
		}
		verdict := "close: any will do"
		lo, hi := vs[0].v, vs[len(vs)-1].v
		if spread(lo, hi) > 0.2 {
			verdict = "**" + vs[0].tr + "**"
		}
		fmt.Fprintf(&b, "- %s — %s (%s).\n", question, verdict, strings.Join(parts, ", "))
	}
	rank("Lowest latency for per-user notifications (unicast p99)", Unicast, "ms", true, func(r *Result) (float64, bool) { return r.Latency.P99, r.Latency.Count > 0 })
	rank("Lowest latency across instances (p99)", CrossInstance, "ms", true, func(r *Result) (float64, bool) { return r.Latency.P99, r.Latency.Count > 0 })
	rank("Cheapest fan-out for the server (saturated broadcast, CPU µs per delivery)", Saturation, "µs", true, func(r *Result) (float64, bool) {
		if r.ServerCPUPerDelivery == nil {
			return 0, false
		}
		return *r.ServerCPUPerDelivery, true
	})
	rank("Most deliveries per second one load-generator core takes in (saturated broadcast)", Saturation, "/s", false, func(r *Result) (float64, bool) {
		return r.ReceivedPerSec, r.ReceivedPerSec > 0
	})
	rank("Cheapest fan-out for the server at a steady rate (broadcast, CPU µs per delivery at the largest load)", Broadcast, "µs", true, func(r *Result) (float64, bool) {
		if r.ServerCPUPerDelivery == nil {
			return 0, false
		}
		return *r.ServerCPUPerDelivery, true
	})
	rank("Best broadcast tail latency at the largest load (p99)", Broadcast, "ms", true, func(r *Result) (float64, bool) { return r.Latency.P99, r.Latency.Count > 0 })
	rank("Fewest bytes on the wire per delivery (metered mobile links)", Broadcast, "B", true, func(r *Result) (float64, bool) {
		if r.WirePerDelivery == nil {
			return 0, false
		}
		return *r.WirePerDelivery, true
	})
	rank("Least server memory per idle connection (many mostly idle clients)", Idle, "KiB", true, func(r *Result) (float64, bool) {
		if r.RSSPerConnKiB == nil {
			return 0, false
		}
		return *r.RSSPerConnKiB, true
	})
	rank("Fewest idle bytes per connection per hour (battery, data plans)", Idle, "B/h", true, func(r *Result) (float64, bool) {
		if r.IdleWirePerHour == nil {
			return 0, false
		}
		return *r.IdleWirePerHour, true
	})
	rank("Fastest recovery when an instance dies (longest reconnection)", Failover, "s", true, func(r *Result) (float64, bool) {
		if r.ResumeMaxSec == nil {
			return 0, false
		}
		return *r.ResumeMaxSec, true
	})
	if b.Len() == 0 {
		return "Not enough scenarios were run to compare the transports.\n"
	}
	b.WriteString("\nEvery transport keeps the same promises (see Promises above); the choice is about cost and reach: WebSocket and the HTTP/3 stream can publish and subscribe on the same connection, SSE is one-way but works with plain `EventSource` and through HTTP proxies.\n")
	return b.String()
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// spread is how far apart the best and the worst value are, relative to
// the smaller, whichever order they come in.
func spread(a, b float64) float64 {
	lo, hi := min(a, b), max(a, b)
	if lo <= 0 {
		return 1
	}
	return (hi - lo) / lo
}

func fmtVal(v float64, unit string) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

// Rerender writes report.md and the charts of dir/results.json again (after
// a change of the report's layout, or to regenerate a copied run).
func Rerender(dir string) error {
	res, err := ReadResults(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(Report(res)), 0o644); err != nil {
		return err
	}
	return writeCharts(res, dir)
}
