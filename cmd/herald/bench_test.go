package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/bench"
)

// benchChildEnv makes the test binary behave as the herald command, so
// that the bench can start it as `herald serve` children and as `herald
// bench worker` load-generator processes (scale-out; runBench derives
// the worker's argv from HERALD_BENCH_SERVE).
const benchChildEnv = "HERALD_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) == "1" {
		// os.Args says which: `serve …` or `bench worker`.
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchQuickEndToEnd runs a tiny quick run against real children (a
// private redis-server and two instances of this binary as herald serve)
// on every transport, and checks the promise held and the outputs exist.
func TestBenchQuickEndToEnd(t *testing.T) {
	t.Setenv(benchChildEnv, "1")
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log bytes.Buffer
	res, err := bench.Run(ctx, bench.Config{
		Out: out, Serve: []string{os.Args[0], "serve"}, Instances: 2, Quick: true,
		Scenarios: []string{bench.Unicast, bench.CrossInstance}, Log: &log,
	})
	t.Log("\n" + log.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failures) > 0 {
		t.Fatalf("promises broken: %q", res.Failures)
	}
	if got, want := len(res.Results), 2*len(bench.AllTransports); got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	for _, r := range res.Results {
		if r.Error != "" || r.Correctness.Delivered == 0 || r.Latency.Count == 0 {
			t.Errorf("%s/%s: error %q, %d delivered, %d latencies", r.Scenario, r.Transport, r.Error, r.Correctness.Delivered, r.Latency.Count)
		}
	}
	for _, f := range []string{"results.json", "report.md"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	back, err := bench.ReadResults(filepath.Join(out, "results.json"))
	if err != nil || len(back.Results) != len(res.Results) {
		t.Fatalf("results.json: %v", err)
	}
	report, _ := os.ReadFile(filepath.Join(out, "report.md"))
	for _, want := range []string{"## Method", "## unicast", "## cross-instance", "| ws |"} {
		if !strings.Contains(string(report), want) && !strings.Contains(string(report), strings.TrimSuffix(want, " |")) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}

func TestBenchFlagErrors(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{
		{"--transport", "carrier-pigeon", "--out", t.TempDir()},
		{"--target", "http://127.0.0.1:1", "--out", t.TempDir()}, // no --api-key
		{"stray"},
	} {
		if err := runBench(args, &out); err == nil {
			t.Errorf("runBench(%q) succeeded", args)
		}
	}
	// A profile that cannot be written fails before anything starts.
	dir := filepath.Join(t.TempDir(), "never")
	err := runBench([]string{"--cpuprofile", filepath.Join(t.TempDir(), "no", "such", "dir", "cpu.prof"), "--out", dir}, &out)
	if err == nil || !strings.Contains(err.Error(), "--cpuprofile") {
		t.Errorf("unwritable --cpuprofile: %v; want a --cpuprofile error", err)
	}
	if _, statErr := os.Stat(dir); !os.IsNotExist(statErr) {
		t.Errorf("a failed --cpuprofile left %s behind", dir)
	}
}
