package bench

import (
	"fmt"
	"strings"
)

// figure is one comparable number of a result.
type figure struct {
	name        string
	lowerBetter bool
	get         func(*Result) (float64, bool)
}

func val(v float64) (float64, bool) { return v, true }
func optVal(v *float64) (float64, bool) {
	if v == nil {
		return 0, false
	}
	return *v, true
}

var figures = []figure{
	{"deliveries/s", false, func(r *Result) (float64, bool) { return val(r.DeliveriesPerSec) }},
	{"p50 ms", true, func(r *Result) (float64, bool) { return val(r.Latency.P50) }},
	{"p90 ms", true, func(r *Result) (float64, bool) { return val(r.Latency.P90) }},
	{"p99 ms", true, func(r *Result) (float64, bool) { return val(r.Latency.P99) }},
	{"p99.9 ms", true, func(r *Result) (float64, bool) { return val(r.Latency.P999) }},
	{"max ms", true, func(r *Result) (float64, bool) { return val(r.Latency.Max) }},
	{"lost", true, func(r *Result) (float64, bool) { return float64(r.Correctness.Lost), true }},
	{"duplicates", true, func(r *Result) (float64, bool) { return float64(r.Correctness.Duplicate), true }},
	{"reordered", true, func(r *Result) (float64, bool) { return float64(r.Correctness.Reordered), true }},
	{"server CPU µs/delivery", true, func(r *Result) (float64, bool) { return optVal(r.ServerCPUPerDelivery) }},
	{"server CPU %", true, func(r *Result) (float64, bool) { return optVal(r.ServerCPUPct) }},
	{"Redis CPU %", true, func(r *Result) (float64, bool) { return optVal(r.RedisCPUPct) }},
	{"wire B/delivery", true, func(r *Result) (float64, bool) { return optVal(r.WirePerDelivery) }},
	{"RSS KiB/conn", true, func(r *Result) (float64, bool) { return optVal(r.RSSPerConnKiB) }},
	{"idle CPU %", true, func(r *Result) (float64, bool) { return optVal(r.IdleCPUPct) }},
	{"idle wire B/conn/h", true, func(r *Result) (float64, bool) { return optVal(r.IdleWirePerHour) }},
	{"connects/s", false, func(r *Result) (float64, bool) { return val(r.ConnectPerSec) }},
	{"longest reconnection s", true, func(r *Result) (float64, bool) { return optVal(r.ResumeMaxSec) }},
}

// Compare prints the change of every figure from a to b, result by result
// (matched by scenario, transport and load).
func Compare(a, b *Results) string {
	var s strings.Builder
	fmt.Fprintf(&s, "old: %s (%s)\nnew: %s (%s)\n", a.Started.Format("2006-01-02 15:04"), a.Machine.Herald, b.Started.Format("2006-01-02 15:04"), b.Machine.Herald)
	key := func(r *Result) string { return r.Scenario + " " + r.Transport + " " + r.Load }
	old := map[string]*Result{}
	for _, r := range a.Results {
		old[key(r)] = r
	}
	for _, nr := range b.Results {
		or := old[key(nr)]
		if or == nil {
			fmt.Fprintf(&s, "\n%s: new\n", key(nr))
			continue
		}
		delete(old, key(nr))
		fmt.Fprintf(&s, "\n%s\n", key(nr))
		for _, f := range figures {
			x, okx := f.get(or)
			y, oky := f.get(nr)
			if !okx || !oky || x == 0 && y == 0 {
				continue
			}
			change := "n/a"
			if x != 0 {
				change = fmt.Sprintf("%+.1f%%", 100*(y-x)/x)
			}
			mark := ""
			if x != y {
				if (y < x) == f.lowerBetter {
					mark = "better"
				} else {
					mark = "worse"
				}
			}
			fmt.Fprintf(&s, "  %-24s %12.3f → %12.3f  %8s  %s\n", f.name, x, y, change, mark)
		}
	}
	for k := range old {
		fmt.Fprintf(&s, "\n%s: gone\n", k)
	}
	return s.String()
}
