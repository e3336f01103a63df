package bench

import (
	"strings"
	"testing"
	"time"
)

func TestStreamAccounting(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		seqs                 []int64
		published            int64
		failed               map[int64]bool
		lost, dups, reorderd int64
	}{
		{"in order", []int64{1, 2, 3}, 3, nil, 0, 0, 0},
		{"tail missing", []int64{1, 2}, 4, nil, 2, 0, 0},
		{"hole", []int64{1, 3, 4}, 4, nil, 1, 0, 0},
		{"late one", []int64{1, 3, 2, 4}, 4, nil, 0, 0, 1},
		{"duplicate", []int64{1, 2, 2, 3, 1}, 3, nil, 0, 2, 0},
		{"none received", nil, 3, nil, 3, 0, 0},
		{"first missing", []int64{2, 3}, 3, nil, 1, 0, 0},
		{"failed publish not lost", []int64{1, 3}, 4, map[int64]bool{2: true, 4: true}, 0, 0, 0},
	} {
		var s stream
		for _, q := range tc.seqs {
			s.observe(q)
		}
		if got := s.lost(tc.published, tc.failed); got != tc.lost || s.dups != tc.dups || s.reordered != tc.reorderd {
			t.Errorf("%s: lost %d dups %d reordered %d, want %d %d %d", tc.name, got, s.dups, s.reordered, tc.lost, tc.dups, tc.reorderd)
		}
	}
}

func TestDataRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, pad := range []int{0, 10} {
		seq, ns, ok := parseData(appendData(nil, 42, at, pad))
		if !ok || seq != 42 || ns != at.UnixNano() {
			t.Errorf("pad %d: got %d %d %v", pad, seq, ns, ok)
		}
	}
	if _, _, ok := parseData([]byte(`{"probe":1}`)); ok {
		t.Error("a probe parsed as a message")
	}
}

func TestCompareAndReport(t *testing.T) {
	a := &Results{Results: []*Result{{Scenario: Unicast, Transport: WS, Load: "x", Latency: Latency{P99: 2}}}}
	b := &Results{Results: []*Result{{Scenario: Unicast, Transport: WS, Load: "x", Latency: Latency{P99: 1}, Correctness: Correctness{Lost: 1}}}}
	if out := Compare(a, b); !strings.Contains(out, "p99 ms") || !strings.Contains(out, "better") {
		t.Errorf("compare:\n%s", out)
	}
	b.Failures = []string{"unicast on ws: lost 1"}
	if rep := Report(b); !strings.Contains(rep, "**unicast on ws: lost 1**") || !strings.Contains(rep, "| lost | **1** |") {
		t.Errorf("report does not show the loss in bold:\n%s", rep)
	}
}

func TestQuantile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{1, 10}, {0.99, 10}, {0.9, 9}, {0.5, 5}, {0.01, 1}} {
		if got := quantile(ds, c.q); got != c.want {
			t.Errorf("quantile(1..10, %v) = %v; want %v", c.q, got, c.want)
		}
	}
	if got := quantile(nil, 0.99); got != 0 {
		t.Errorf("quantile(nil) = %v; want 0", got)
	}
}
