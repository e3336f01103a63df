package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/heraldhq/herald/bench"
	"github.com/heraldhq/herald/internal/redistest"
)

// TestBenchRedisFlagErrors: contradictory or malformed Redis options fail
// with a message naming the problem, before anything is created or
// started.
func TestBenchRedisFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis-cluster", "-1"}, "--redis-cluster -1"},
		{[]string{"--redis-cluster", "2"}, "at least 3 masters"},
		{[]string{"--redis-cluster", "3", "--redis", "redis://127.0.0.1:6379"}, "give one of them"},
		{[]string{"--redis", "redis://127.0.0.1:6379", "--target", "http://127.0.0.1:1", "--api-key", "k"}, "--target measures running servers"},
		{[]string{"--redis-cluster", "3", "--target", "http://127.0.0.1:1", "--api-key", "k"}, "--target measures running servers"},
		{[]string{"--redis", "http://127.0.0.1:6379"}, "--redis"},
		{[]string{"--redis", "127.0.0.1:6379"}, "--redis"},
		{[]string{"--redis", "redis-cluster://"}, "seed nodes"},
		{[]string{"--redis", "redis-cluster://127.0.0.1:7000,,127.0.0.1:7001"}, "seed nodes"},
		{[]string{"--redis", "redis://127.0.0.1:7000,127.0.0.1:7001"}, "several hosts"},
		{[]string{"--redis", "redis://user:hunter2@127.0.0.1:notaport"}, "user:xxxxx@"},
		{[]string{"--redis", "redis://127.0.0.1:6379", "--scenario", "cross-instance,redis-restart"}, "needs a Redis the bench starts"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		var stdout bytes.Buffer
		err := runBench(append(tc.args, "--out", out), &stdout)
		switch {
		case err == nil:
			t.Errorf("runBench(%q) succeeded", tc.args)
			continue
		case !strings.Contains(err.Error(), tc.want):
			t.Errorf("runBench(%q): %v; want it to say %q", tc.args, err, tc.want)
		case strings.Contains(err.Error(), "hunter2"):
			t.Errorf("runBench(%q): the error shows the password: %v", tc.args, err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("runBench(%q) created %s", tc.args, out)
		}
	}
}

// needRedisCluster fails (never skips) when the tools to start a Redis
// Cluster are missing.
func needRedisCluster(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found in PATH: install it (Debian: apt-get install -y redis-server redis-tools) or run `make test`, which installs it", tool)
		}
	}
}

// runBenchChildren runs `herald bench args…` with this test binary as the
// herald serve children and returns what results.json recorded.
func runBenchChildren(t *testing.T, args ...string) *bench.Results {
	t.Helper()
	t.Setenv(benchChildEnv, "1")
	t.Setenv(benchServeEnv, os.Args[0]+" serve")
	out := filepath.Join(t.TempDir(), "out")
	var stdout bytes.Buffer
	err := runBench(append(args, "--quick", "--no-pin", "--out", out), &stdout)
	t.Log("\n" + stdout.String())
	if err != nil {
		t.Fatal(err)
	}
	res, err := bench.ReadResults(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	report, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "| Redis | " + res.Redis.String() + " |"; res.Redis.String() == "" || !strings.Contains(string(report), want) {
		t.Errorf("report.md lacks the Redis topology line %q", want)
	}
	return res
}

// checkClean fails the test unless every result delivered and kept the
// promise.
func checkClean(t *testing.T, res *bench.Results) {
	t.Helper()
	if len(res.Failures) > 0 {
		t.Errorf("promises broken: %q", res.Failures)
	}
	for _, r := range res.Results {
		c := r.Correctness
		if r.Error != "" || c.Lost != 0 || c.Duplicate != 0 || c.Reordered != 0 || c.Delivered == 0 {
			t.Errorf("%s/%s: error %q, lost %d, duplicates %d, reordered %d, delivered %d",
				r.Scenario, r.Transport, r.Error, c.Lost, c.Duplicate, c.Reordered, c.Delivered)
		}
	}
}

// TestBenchOnRedisCluster runs the quick bench with its children on a
// 3-master Redis Cluster the bench starts: messages cross instances
// through sharded Pub/Sub, and an instance is killed mid-run.
func TestBenchOnRedisCluster(t *testing.T) {
	needRedisCluster(t)
	res := runBenchChildren(t, "--redis-cluster", "3", "--scenario", "cross-instance,failover", "--transport", "ws")
	checkClean(t, res)
	if got, want := res.Redis, (bench.RedisTopology{Topology: "cluster", Masters: 3, Started: true}); got != want {
		t.Errorf("redis topology %+v, want %+v", got, want)
	}
	if !strings.Contains(res.Targets, "3-node Redis Cluster") {
		t.Errorf("targets %q do not name the cluster", res.Targets)
	}
	var scenarios []string
	for _, r := range res.Results {
		scenarios = append(scenarios, r.Scenario)
		// Measured (the nodes' sum); 1 s windows and 10 ms clock ticks
		// may make it 0.
		if r.Scenario == bench.CrossInstance && r.RedisCPUPct == nil {
			t.Errorf("cross-instance: Redis CPU not measured, want the cluster nodes' sum")
		}
	}
	if !slices.Equal(scenarios, []string{bench.CrossInstance, bench.Failover}) {
		t.Errorf("scenarios run: %q", scenarios)
	}
}

// TestBenchOnRunningRedis runs the children on a Redis Cluster the bench
// did not start (--redis): it is used, recorded, and not measured.
func TestBenchOnRunningRedis(t *testing.T) {
	needRedisCluster(t)
	c := redistest.StartCluster(t, 3, 0)
	res := runBenchChildren(t, "--redis", c.URL(), "--scenario", "cross-instance", "--transport", "ws")
	checkClean(t, res)
	if got, want := res.Redis, (bench.RedisTopology{Topology: "cluster", URL: c.URL()}); got != want {
		t.Errorf("redis topology %+v, want %+v", got, want)
	}
	for _, r := range res.Results {
		if r.RedisCPUPct != nil {
			t.Errorf("%s: Redis CPU %v measured on a Redis the bench did not start", r.Scenario, *r.RedisCPUPct)
		}
	}
	if len(res.Results) != 1 {
		t.Errorf("%d results, want 1", len(res.Results))
	}
}
