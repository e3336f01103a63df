package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald/bench"
)

// TestBenchPeerQuickHeraldAlone runs `herald bench peer --quick` with no
// --centrifugo: every case against real `herald serve` children (this
// test binary), and checks that each measured something, that nothing was
// lost, and that the outputs say Herald ran alone.
func TestBenchPeerQuickHeraldAlone(t *testing.T) {
	t.Setenv(benchChildEnv, "1")
	t.Setenv(benchServeEnv, os.Args[0]+" serve")
	out := filepath.Join(t.TempDir(), "peer")
	var log bytes.Buffer
	err := runBench([]string{"peer", "--quick", "--no-pin", "--out", out}, &log)
	t.Log("\n" + log.String())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "running Herald alone") {
		t.Error("the output does not say Herald ran alone")
	}
	raw, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res bench.PeerResults
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Cases) != len(bench.PeerCases) || len(res.Servers) != 1 || res.Servers[0] != bench.PeerHerald {
		t.Fatalf("%d cases on %q, want %d on herald alone", len(res.Cases), res.Servers, len(bench.PeerCases))
	}
	for _, c := range res.Cases {
		if len(c.Runs) != 1 || c.Ratios != nil {
			t.Errorf("%s: %d runs, ratios %v; want 1 run and no ratios", c.Case.Name, len(c.Runs), c.Ratios)
			continue
		}
		checkPeerRun(t, c.Case.Name, c.Runs[0])
	}
	report, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Herald alone", "### flat-1000", "### idle-10000", "## Method", "Quick run"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}

func checkPeerRun(t *testing.T, name string, r *bench.PeerRun) {
	t.Helper()
	if r.Error != "" {
		t.Errorf("%s: %s", name, r.Error)
		return
	}
	if strings.HasPrefix(name, "idle") {
		if r.KiBPerConn <= 0 || r.RSSBytes <= r.BaseRSSBytes {
			t.Errorf("%s: %.1f KiB/conn, RSS %d → %d", name, r.KiBPerConn, r.BaseRSSBytes, r.RSSBytes)
		}
		return
	}
	if r.DeliveriesPerS <= 0 || r.ServerCores <= 0 || r.Latency.Count == 0 || r.Published == 0 {
		t.Errorf("%s: %.0f deliveries/s, %.2f cores, %d latencies, %d published", name, r.DeliveriesPerS, r.ServerCores, r.Latency.Count, r.Published)
	}
	if r.Lost != 0 || r.Duplicate != 0 || r.Reordered != 0 || r.Disconnected != 0 || r.PubFailed != 0 {
		t.Errorf("%s: lost %d, duplicates %d, reordered %d, disconnected %d (%s), publishes failed %d (%s)",
			name, r.Lost, r.Duplicate, r.Reordered, r.Disconnected, r.Closes, r.PubFailed, r.LastPubError)
	}
}

// TestBenchPeerFlagErrors: bad flags get a clear error before anything
// starts (no output directory, no child).
func TestBenchPeerFlagErrors(t *testing.T) {
	t.Setenv(benchServeEnv, os.Args[0]+" serve")
	tmp := t.TempDir()
	notExec := filepath.Join(tmp, "centrifugo.txt")
	if err := os.WriteFile(notExec, []byte("not a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--centrifugo", filepath.Join(tmp, "no-such-centrifugo")}, "--centrifugo"},
		{[]string{"--centrifugo", tmp}, "not a regular file"},
		{[]string{"--centrifugo", notExec}, "not executable"},
		{[]string{"--cases", "flat-1000,flat-9"}, `unknown case "flat-9"`},
		{[]string{"--cases", ","}, "names no case"},
		{[]string{"--runs", "0"}, "--runs must be at least 1"},
		{[]string{"--runs", "-3"}, "--runs must be at least 1"},
		{[]string{"--runs", "many"}, "invalid value"},
		{[]string{"--window", "-1s"}, "must not be negative"},
		{[]string{"--server-cpus", "zero"}, "--server-cpus"},
		{[]string{"stray"}, "unexpected arguments"},
	} {
		out := filepath.Join(tmp, "out")
		var log bytes.Buffer
		// --quick --no-pin: should a check go missing, the run it lets through is short.
		err := runBench(append([]string{"peer", "--quick", "--no-pin", "--cases", "flat-1000", "--out", out}, tc.args...), &log)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench peer %q: %v; want an error with %q", tc.args, err, tc.want)
		}
		if _, statErr := os.Stat(out); !os.IsNotExist(statErr) {
			t.Errorf("bench peer %q created %s", tc.args, out)
		}
	}
}
