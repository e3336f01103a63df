package main

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// capture runs a subcommand and returns what it printed.
func capture(t *testing.T, fn func(io.Writer) error) (string, error) {
	t.Helper()
	var out syncBuffer
	err := fn(&out)
	return out.String(), err
}

// TestCLI: token, publish and listen (on each transport) against a server.
func TestCLI(t *testing.T) {
	s := startServer(t)
	base := []string{"--url", "http://" + s.plainAddr, "--api-key", testAPIKey}
	tok, err := capture(t, func(w io.Writer) error {
		return runToken(append(base, "--user", "cli", "--channels", "news"), w)
	})
	if err != nil || strings.Count(strings.TrimSpace(tok), ".") != 2 {
		t.Fatalf("token: %q %v", tok, err)
	}
	tok = strings.TrimSpace(tok)
	for _, transport := range []string{"ws", "sse", "h3"} {
		url := "http://" + s.plainAddr
		extra := []string{}
		if transport == "h3" {
			url = "https://" + s.tlsAddr
			extra = []string{"--cacert", s.cfg.certDir + "/cert.pem"}
		}
		out := make(chan string, 1)
		go func() {
			o, err := capture(t, func(w io.Writer) error {
				return runListen(append([]string{"--url", url, "--token", tok, "--transport", transport, "--channel", "news", "--count", "1"}, extra...), w)
			})
			if err != nil {
				t.Errorf("listen %s: %v", transport, err)
			}
			out <- o
		}()
		// Publish until the listener is subscribed and prints it.
		var id string
		deadline := time.After(10 * time.Second)
		for got := ""; got == ""; {
			o, err := capture(t, func(w io.Writer) error {
				return runPublish(append(base, "--channel", "news", "--event", "cli", "--data", `{"via":"`+transport+`"}`), w)
			})
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			id = strings.TrimSpace(o)
			select {
			case got = <-out:
				if !strings.Contains(got, `"type":"message"`) || !strings.Contains(got, `"via":"`+transport) {
					t.Fatalf("listen %s printed %q", transport, got)
				}
			case <-time.After(200 * time.Millisecond):
			case <-deadline:
				t.Fatalf("listen %s printed nothing", transport)
			}
		}
		if id == "" {
			t.Fatal("publish printed no ID")
		}
	}
	if _, err := capture(t, func(w io.Writer) error { return runPublish(append(base, "--channel", "news", "--data", "{nope"), w) }); err == nil {
		t.Fatal("publish accepted invalid JSON")
	}
	if _, err := capture(t, func(w io.Writer) error {
		return runListen([]string{"--url", "http://" + s.plainAddr, "--token", "bad"}, w)
	}); err == nil {
		t.Fatal("listen accepted a bad token")
	}
}
