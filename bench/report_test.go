package bench

import (
	"strings"
	"testing"
)

// TestSummaryNamesTheBestWhenHigherIsBetter: a figure where higher is
// better (received/s) names the leader, as lower-is-better figures do.
func TestSummaryNamesTheBestWhenHigherIsBetter(t *testing.T) {
	res := &Results{Results: []*Result{
		{Scenario: Saturation, Transport: WS, Subscribers: 1000, ReceivedPerSec: 600000},
		{Scenario: Saturation, Transport: SSEH1, Subscribers: 1000, ReceivedPerSec: 160000},
	}}
	s := summary(res)
	var line string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, "Most deliveries per second") {
			line = l
		}
	}
	if !strings.Contains(line, "**ws**") {
		t.Fatalf("summary line %q; want ws named as the best", line)
	}
}
