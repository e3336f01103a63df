package bench

import (
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// chartFiles are the SVG charts a run's results allow, by file name.
func chartFiles(res *Results) []string {
	var out []string
	for _, sc := range []string{Unicast, CrossInstance, Broadcast} {
		if len(filter(res.Results, func(r *Result) bool { return r.Scenario == sc && len(r.Latency.Percentiles) > 0 })) > 0 {
			out = append(out, "latency-"+sc+".svg")
		}
	}
	if broadcastLoads(res) > 1 {
		out = append(out, "broadcast-throughput.svg", "broadcast-p99.svg")
	}
	if len(filter(res.Results, func(r *Result) bool { return r.Scenario == Idle && r.RSSPerConnKiB != nil })) > 0 {
		out = append(out, "memory-per-connection.svg")
	}
	return out
}

func broadcastLoads(res *Results) int {
	seen := map[int]bool{}
	for _, r := range res.Results {
		if r.Scenario == Broadcast && r.Error == "" {
			seen[r.Subscribers] = true
		}
	}
	return len(seen)
}

// writeCharts renders the charts of chartFiles into dir.
func writeCharts(res *Results, dir string) error {
	for _, name := range chartFiles(res) {
		var p *plot.Plot
		var err error
		switch name {
		case "broadcast-throughput.svg":
			p, err = vsSubscribers(res, "Broadcast throughput", "deliveries/s", func(r *Result) float64 { return r.DeliveriesPerSec })
		case "broadcast-p99.svg":
			p, err = vsSubscribers(res, "Broadcast latency p99", "p99 (ms)", func(r *Result) float64 { return r.Latency.P99 })
		case "memory-per-connection.svg":
			p, err = memoryChart(res)
		default:
			sc := name[len("latency-") : len(name)-len(".svg")]
			p, err = latencyChart(res, sc)
		}
		if err != nil {
			return err
		}
		if err := p.Save(7*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// latencyChart is the HdrHistogram percentile plot: latency against
// 1/(1−percentile) on a log axis, one line per transport, for the
// scenario's largest load.
func latencyChart(res *Results, scenario string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Latency by percentile — " + scenario
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = percentileTicks{}
	var lines []any
	for _, tr := range AllTransports {
		r := largest(res, scenario, tr)
		if r == nil || len(r.Latency.Percentiles) == 0 {
			continue
		}
		var xy plotter.XYs
		for _, pc := range r.Latency.Percentiles {
			xy = append(xy, plotter.XY{X: 1 / (1 - math.Min(pc.Percentile, 99.9999)/100), Y: pc.Ms})
		}
		lines = append(lines, tr, xy)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	return p, plotutil.AddLinePoints(p, lines...)
}

type percentileTicks struct{}

func (percentileTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, t := range []struct {
		x float64
		l string
	}{{1, "0%"}, {2, "50%"}, {10, "90%"}, {100, "99%"}, {1000, "99.9%"}, {10000, "99.99%"}, {100000, "99.999%"}} {
		if t.x >= lo && t.x <= hi {
			ts = append(ts, plot.Tick{Value: t.x, Label: t.l})
		}
	}
	return ts
}

func largest(res *Results, scenario, tr string) *Result {
	var best *Result
	for _, r := range res.Results {
		if r.Scenario == scenario && r.Transport == tr && r.Error == "" && (best == nil || r.Subscribers > best.Subscribers) {
			best = r
		}
	}
	return best
}

func vsSubscribers(res *Results, title, ylabel string, val func(*Result) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "subscribers"
	p.Y.Label.Text = ylabel
	var lines []any
	for _, tr := range AllTransports {
		var xy plotter.XYs
		for _, r := range res.Results {
			if r.Scenario == Broadcast && r.Transport == tr && r.Error == "" {
				xy = append(xy, plotter.XY{X: float64(r.Subscribers), Y: val(r)})
			}
		}
		if len(xy) > 0 {
			lines = append(lines, tr, xy)
		}
	}
	p.Legend.Top = true
	p.Legend.Left = true
	return p, plotutil.AddLinePoints(p, lines...)
}

func memoryChart(res *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Server memory per idle connection (RSS)"
	p.Y.Label.Text = "KiB per connection"
	var vals plotter.Values
	var names []string
	for _, tr := range AllTransports {
		if r := largest(res, Idle, tr); r != nil && r.RSSPerConnKiB != nil {
			vals = append(vals, math.Max(*r.RSSPerConnKiB, 0))
			names = append(names, tr)
		}
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(30))
	if err != nil {
		return nil, err
	}
	bars.Color = plotutil.Color(0)
	p.Add(bars)
	p.NominalX(names...)
	return p, nil
}
