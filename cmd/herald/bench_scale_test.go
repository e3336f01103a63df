package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/heraldhq/herald/bench"
)

// TestBenchScaleOutQuick runs the quick scale-out scenario: its clients
// live in worker processes (this test binary as `herald bench worker`),
// spread over two instances, and every broadcast crosses Redis. The run
// must be clean, every delivery made, and the clients held by at least two
// workers.
func TestBenchScaleOutQuick(t *testing.T) {
	res := runBenchChildren(t, "--scenario", bench.ScaleOut)
	checkClean(t, res)
	if len(res.Results) != 1 {
		t.Fatalf("%d results, want 1 (scale-out on ws)", len(res.Results))
	}
	r := res.Results[0]
	if r.Scenario != bench.ScaleOut || r.Transport != bench.WS || r.Instances != 2 || r.Subscribers != 200 {
		t.Errorf("result %s/%s: %d instances, %d subscribers; want scale-out/ws, 2, 200", r.Scenario, r.Transport, r.Instances, r.Subscribers)
	}
	c := r.Correctness
	if c.Expected == 0 || c.Delivered != c.Expected || c.Gaps != 0 || c.PubFailed != 0 {
		t.Errorf("delivered %d of %d owed, %d gaps, %d publishes failed: want all delivered", c.Delivered, c.Expected, c.Gaps, c.PubFailed)
	}
	if r.Latency.Count == 0 || r.ConnectPerSec <= 0 || r.LoadCPUPct <= 0 {
		t.Errorf("latencies %d, connects/s %.0f, load generator CPU %.1f%%: want all measured", r.Latency.Count, r.ConnectPerSec, r.LoadCPUPct)
	}
	workers := 0
	re := regexp.MustCompile(`(\d+) worker processes`)
	for _, n := range r.Notes {
		if m := re.FindStringSubmatch(n); m != nil {
			workers, _ = strconv.Atoi(m[1])
		}
	}
	if workers < 2 {
		t.Errorf("notes %q: want the clients held by at least 2 worker processes", r.Notes)
	}
	method := strings.Join(res.Method, "\n")
	if !strings.Contains(method, "herald bench worker") {
		t.Errorf("the method does not say how the connections were spread:\n%s", method)
	}
}
