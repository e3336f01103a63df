package bench

import (
	"strings"
	"testing"
)

// TestScalePlan: the full run's 4 × 18,000 spread over enough workers
// that none holds more than a process may open, the quick run's 2 × 100
// on 2 workers, and the transports each runs on.
func TestScalePlan(t *testing.T) {
	full := planScaleOut(Config{Scale: 1, Transports: AllTransports, SourceAddrs: 4})
	switch {
	case full.instances != 4:
		t.Errorf("full: %d instances, want 4", full.instances)
	case fileLimit() >= 18000+1500 && (full.clients != 72000 || full.capped):
		t.Errorf("full: %d clients (capped %v), want 4 × 18,000", full.clients, full.capped)
	case fileLimit() < 18000+1500 && !full.capped:
		t.Errorf("full: %d clients with a file limit of %d: not capped", full.clients, fileLimit())
	}
	if per := (full.clients + full.workers - 1) / full.workers; full.workers < 2 || per > workerMaxClients || uint64(per) > fileLimit() {
		t.Errorf("full: %d workers of %d clients (file limit %d)", full.workers, per, fileLimit())
	}
	quick := planScaleOut(Config{Quick: true, Scale: 1, Transports: AllTransports})
	if quick.instances != 2 || quick.clients != 200 || quick.workers != 2 {
		t.Errorf("quick: %+v; want 2 instances, 2 workers × 100", quick)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Transports: AllTransports}, "ws,sse-h1"},
		{Config{Transports: AllTransports, Quick: true}, "ws"},
		{Config{Transports: []string{H3, SSEH1}}, "sse-h1"},
		{Config{Transports: []string{SSEH2, H3}}, ""},
	} {
		if got := strings.Join(scaleTransports(tc.cfg), ","); got != tc.want {
			t.Errorf("scaleTransports(%q, quick %v) = %q, want %q", tc.cfg.Transports, tc.cfg.Quick, got, tc.want)
		}
	}
	if m := scaleMethod(Config{Scale: 1, Transports: AllTransports, SourceAddrs: 4}); !strings.Contains(m, "herald bench worker") || !strings.Contains(m, "72000 clients") {
		t.Errorf("method line %q", m)
	}
}
