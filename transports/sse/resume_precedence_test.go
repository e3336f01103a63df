package sse

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// TestResumePrecedence: when a request carries several positions, the
// Last-Event-ID header wins, then the last_event_id query parameter, then
// since — on a hijacked HTTP/1.1 stream and on an HTTP/2 stream served by
// the handler loop alike. Each source names a different message, so the
// first message the stream replays tells which one was used.
func TestResumePrecedence(t *testing.T) {
	for _, major := range []int{1, 2} {
		t.Run(fmt.Sprintf("HTTP/%d", major), func(t *testing.T) {
			s := newTestServer(t, wire.Config{})
			client := http.DefaultClient
			if major == 2 {
				client = s.serveHTTP2(t)
			}
			var ids []notify.ID
			for _, n := range []string{"1", "2", "3", "4"} {
				ids = append(ids, s.publish(t, "user:alice", n))
			}
			cases := []struct {
				name   string
				query  string
				header string
				want   notify.ID // the first message replayed
			}{
				{"since and last_event_id", "since=" + ids[0].String() + "&last_event_id=" + ids[1].String(), "", ids[2]},
				{"last_event_id and since", "last_event_id=" + ids[1].String() + "&since=" + ids[0].String(), "", ids[2]},
				{"header, since and last_event_id", "since=" + ids[0].String() + "&last_event_id=" + ids[1].String(), ids[2].String(), ids[3]},
			}
			for _, c := range cases {
				header := http.Header{}
				if c.header != "" {
					header.Set("Last-Event-ID", c.header)
				}
				r := s.openWith(t, client, major, "token=x&"+c.query, header)
				if ev := r.event(); !strings.HasPrefix(ev[len(ev)-1], `data: {"type":"subscribed"`) {
					t.Fatalf("%s: first event %q; want the subscribed notice", c.name, ev)
				}
				if ev := r.event(); len(ev) != 2 || ev[0] != "id: "+c.want.String() {
					t.Fatalf("%s: resumed with %q; want message %v first", c.name, ev, c.want)
				}
			}
		})
	}
}

// serveHTTP2 serves the test server's handler over TLS with HTTP/2 as well
// and returns a client that speaks HTTP/2 to it; s.url moves there.
func (s *testServer) serveHTTP2(t *testing.T) *http.Client {
	t.Helper()
	srv := httptest.NewUnstartedServer(NewHandler(wire.Config{Hub: s.hub, Auth: wire.AuthFunc(func(r *http.Request) (*notify.Grants, error) {
		return &notify.Grants{User: "alice"}, nil
	})}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	s.url = srv.URL + "/v1/sse"
	return srv.Client()
}

// openWith is open with a given client, checking the HTTP version it spoke.
func (s *testServer) openWith(t *testing.T, client *http.Client, major int, query string, header http.Header) *rawStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"?"+query, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	if resp.ProtoMajor != major || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s; want HTTP/%d 200", resp.Proto, resp.Status, major)
	}
	return &rawStream{t: t, resp: resp, br: bufio.NewReader(resp.Body)}
}
