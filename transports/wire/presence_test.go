package wire

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/heraldhq/herald/notify"
)

func presenceConfig(t *testing.T) (*Config, *notify.MemoryBroker) {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	h := notify.NewHub(b, notify.HubConfig{Presence: b})
	t.Cleanup(func() { _ = h.Close(); _ = b.Close() })
	cfg := Config{Hub: h, Auth: AuthFunc(func(*http.Request) (*notify.Grants, error) {
		return &notify.Grants{User: "u", Subscribe: []string{"room."}, Presence: []string{"room."}}, nil
	})}.WithDefaults()
	return &cfg, b
}

// The presence query parameter: false opts the connect channels out; any
// other value than true or false is refused before anything is registered.
func TestOpenPresenceParam(t *testing.T) {
	cfg, _ := presenceConfig(t)
	for _, bad := range []string{"maybe", "yes", "2"} {
		_, err := Open(httptest.NewRequest("GET", "/?channel=room.1&presence="+bad, nil), cfg, "", nil)
		if !errors.Is(err, notify.ErrInvalidCommand) {
			t.Errorf("presence=%s: %v; want invalid_command", bad, err)
		}
	}
	if n := cfg.Hub.Stats().Connections; n != 0 {
		t.Fatalf("refused requests left %d connections", n)
	}
	for _, c := range []struct {
		query string
		want  bool
	}{{"", true}, {"&presence=true", true}, {"&presence=false", false}} {
		s, err := Open(httptest.NewRequest("GET", "/?channel=room.1"+c.query, nil), cfg, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if !s.SubscribeInitial(context.Background()) {
			t.Fatal("SubscribeInitial failed")
		}
		got := map[string]bool{}
		for _, e := range s.Conn.Drain(nil) {
			got[e.Channel] = e.Presence != nil
		}
		if got["room.1"] != c.want || got["user:u"] {
			t.Errorf("query %q: snapshots %v; want room.1 %v, none on user:u (no grant)", c.query, got, c.want)
		}
		s.Close(nil)
	}
}

// The subscribe command's presence field: a JSON boolean, or absent.
func TestDecodeCommandPresence(t *testing.T) {
	for _, bad := range []string{`"yes"`, `1`, `{}`} {
		if _, err := DecodeCommand([]byte(`{"type":"subscribe","channel":"room.1","presence":` + bad + `}`)); !errors.Is(err, notify.ErrInvalidCommand) {
			t.Errorf("presence %s: %v; want invalid_command", bad, err)
		}
	}
	c, err := DecodeCommand([]byte(`{"type":"subscribe","channel":"room.1","presence":false}`))
	if err != nil || c.Presence == nil || *c.Presence {
		t.Fatalf("presence false: %+v, %v", c, err)
	}
	if c, _ := DecodeCommand([]byte(`{"type":"subscribe","channel":"room.1"}`)); c.Presence != nil {
		t.Fatal("absent presence decoded as set")
	}
}
