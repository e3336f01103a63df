package wire

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/notify"
)

// expiringAfter opens a session whose token expires ttl from now, with
// grace, writing to a fake output; it returns when the expiring notice was
// written, and when the connection ended, measured from the open.
func expiringAfter(t *testing.T, ttl, grace time.Duration) (warned, ended time.Duration) {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	h := notify.NewHub(b, notify.HubConfig{QueueLength: 64})
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	start := time.Now()
	cfg := Config{Hub: h, TokenRefreshGrace: grace, Auth: AuthFunc(func(*http.Request) (*notify.Grants, error) {
		return &notify.Grants{User: "u", Expires: start.Add(ttl)}, nil
	})}.WithDefaults()
	w := NewWriter()
	sess, err := Open(httptest.NewRequest("GET", "/", nil), &cfg, "", w.Wake)
	if err != nil {
		t.Fatal(err)
	}
	out := newFakeOutput()
	w.Start(sess, out, &WriterOptions{FinalNotice: true})
	sess.SubscribeInitial(context.Background())
	for tick := time.Duration(0); tick < ttl+2*grace+time.Second; tick += 10 * time.Millisecond {
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if warned == 0 && strings.Contains(strings.Join(out.written(), ""), `"expiring"`) {
			warned = time.Since(start)
		}
		select {
		case <-sess.Conn.Done():
			return warned, time.Since(start)
		default:
		}
	}
	t.Fatalf("token of %v, grace %v: the connection did not end", ttl, grace)
	return
}

// The expiring notice comes at expiry − grace, or halfway through the
// token's life when that is later: a token shorter than the grace is not
// warned of at once (a one-way client reconnecting on each notice would
// loop). The connection ends at expiry + grace either way.
func TestExpiringNoticeTime(t *testing.T) {
	for _, tc := range []struct {
		ttl, grace, warn time.Duration
	}{
		{10 * time.Second, 2 * time.Second, 8 * time.Second}, // expiry − grace
		{4 * time.Second, 5 * time.Second, 2 * time.Second},  // half the life
		{10 * time.Second, 5 * time.Second, 5 * time.Second}, // both
		{1 * time.Second, 5 * time.Second, 500 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("%v-%v", tc.ttl, tc.grace), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				warned, ended := expiringAfter(t, tc.ttl, tc.grace)
				if d := warned - tc.warn; d < 0 || d > 20*time.Millisecond {
					t.Errorf("token of %v, grace %v: warned after %v; want %v", tc.ttl, tc.grace, warned, tc.warn)
				}
				if want := tc.ttl + tc.grace; ended-want < 0 || ended-want > 20*time.Millisecond {
					t.Errorf("token of %v, grace %v: ended after %v; want %v", tc.ttl, tc.grace, ended, want)
				}
			})
		})
	}
}
