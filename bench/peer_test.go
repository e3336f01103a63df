package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Frames as the servers sent them (recorded from herald serve and from
// Centrifugo v6.9.1 over WebSocket with this package's payload); both
// coalesce several messages into one frame, newline-separated.
const (
	heraldFrame = `{"type":"subscribed","channel":"user:peer-0"}` + "\n" +
		`{"type":"subscribed","channel":"bench"}`
	heraldMessages = `{"type":"message","channel":"bench","id":"1","data":{"w":3,"s":1,"t":1764770000000000001,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"ts":1764770000000}` + "\n" +
		`{"type":"message","channel":"bench","id":"2","data":{"w":4,"s":17,"t":1764770000000000002,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"ts":1764770000000}`
	centrifugoConnect = `{"id":1,"connect":{"client":"7f5b3c9e-1c1a-4a55-9d4e-2f0a8d5e6b7c","version":"0.0.0","subs":{"bench":{}},"ping":25,"pong":true}}`
	centrifugoPushes  = `{"push":{"channel":"bench","pub":{"data":{"w":3,"s":1,"t":1764770000000000001,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}` + "\n" +
		`{}` + "\n" +
		`{"push":{"channel":"bench","pub":{"data":{"w":4,"s":17,"t":1764770000000000002,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}`
	centrifugoProbe = `{"push":{"channel":"bench","pub":{"data":{"probe":1}}}}`
)

func TestPeerFramesParse(t *testing.T) {
	want := []peerDelivery{{3, 1, 1764770000000000001}, {4, 17, 1764770000000000002}}
	for _, tc := range []struct {
		name, frame string
		pings       int
	}{
		{"herald", heraldMessages, 0},
		{"centrifugo", centrifugoPushes, 1},
	} {
		var got []peerDelivery
		pings := 0
		splitFrame([]byte(tc.frame), func(m []byte) {
			if isCentrifugoPing(m) {
				pings++
				return
			}
			d, ok := parsePeerMessage(m)
			if !ok {
				t.Errorf("%s: %s not parsed", tc.name, m)
				return
			}
			got = append(got, d)
		})
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || pings != tc.pings {
			t.Errorf("%s: %+v and %d pings; want %+v and %d", tc.name, got, pings, want, tc.pings)
		}
	}
}

func TestPeerNonPayloadsIgnored(t *testing.T) {
	for _, m := range []string{centrifugoConnect, centrifugoProbe, `{"type":"message","channel":"bench","id":"1","data":{"probe":1},"ts":1}`,
		`{"type":"subscribed","channel":"bench"}`, `{"push":{"channel":"bench","pub":{"data":{"w":1,"s":`, `{"data":{"w":,"s":1,"t":2}}`, ``} {
		if d, ok := parsePeerMessage([]byte(m)); ok {
			t.Errorf("%q parsed as %+v", m, d)
		}
	}
	if !isProbe([]byte(centrifugoProbe)) || isProbe([]byte(heraldMessages)) {
		t.Error("isProbe is wrong")
	}
	for m, ping := range map[string]bool{`{}`: true, ` {} `: true, `{"id":1}`: false, `{"push":{}}`: false, `}{`: false} {
		if isCentrifugoPing([]byte(m)) != ping {
			t.Errorf("isCentrifugoPing(%q) = %v", m, !ping)
		}
	}
	n := 0
	splitFrame([]byte(heraldFrame+"\n\n"), func([]byte) { n++ })
	if n != 2 {
		t.Errorf("split %d messages, want 2", n)
	}
}

func TestPeerPayload(t *testing.T) {
	at := time.Unix(1764770000, 123)
	for _, tc := range []struct {
		w   int
		seq int64
	}{{0, 1}, {15, 999_999}, {7, 123_456_789_012}} {
		p := appendPeerPayload(nil, tc.w, tc.seq, at)
		if len(p) != peerPayloadSize || !json.Valid(p) {
			t.Errorf("payload %s: %d bytes, valid %v; want %d bytes of JSON", p, len(p), json.Valid(p), peerPayloadSize)
		}
		for _, env := range []string{
			`{"type":"message","channel":"bench","id":"5","data":` + string(p) + `,"ts":1}`,
			`{"push":{"channel":"bench","pub":{"data":` + string(p) + `,"offset":5}}}`,
		} {
			d, ok := parsePeerMessage([]byte(env))
			if !ok || d.worker != tc.w || d.seq != tc.seq || d.sentNs != at.UnixNano() {
				t.Errorf("%s: %+v %v", env, d, ok)
			}
		}
	}
}

func TestCentrifugoConnectReply(t *testing.T) {
	for _, tc := range []struct {
		m         string
		found, ok bool
	}{
		{centrifugoConnect, true, true},
		{`{"id":1,"error":{"code":109,"message":"token expired"}}`, true, false},
		{`{"id":1,"connect":{"client":"x","subs":{"other":{}}}}`, true, false},
		{`{"id":1,"connect":{"client":"x"}}`, true, false},
		{`{}`, false, true},
		{centrifugoProbe, false, true},
	} {
		found, err := centrifugoConnectReply([]byte(tc.m))
		if found != tc.found || (err == nil) != tc.ok {
			t.Errorf("%s: found %v, err %v", tc.m, found, err)
		}
	}
}

func TestCentrifugoConfigKeys(t *testing.T) {
	b, err := centrifugoConfig(8123, "secret-secret-secret-secret-secret", "key")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		HTTPServer struct {
			Address string `json:"address"`
			Port    int    `json:"port"`
		} `json:"http_server"`
		Client struct {
			Token struct {
				HMAC string `json:"hmac_secret_key"`
			} `json:"token"`
		} `json:"client"`
		HTTPAPI struct {
			Key string `json:"key"`
		} `json:"http_api"`
		Channel struct {
			WithoutNamespace map[string]any `json:"without_namespace"`
		} `json:"channel"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.HTTPServer.Address != "127.0.0.1" || c.HTTPServer.Port != 8123 || c.Client.Token.HMAC == "" || c.HTTPAPI.Key != "key" {
		t.Errorf("config %s", b)
	}
	if len(c.Channel.WithoutNamespace) != 0 {
		t.Errorf("channels without namespace must keep their defaults (no history, no presence): %v", c.Channel.WithoutNamespace)
	}
}

func TestPeerRatiosPairRuns(t *testing.T) {
	cr := &PeerCaseResult{Case: peerCase{Name: "flat-1000", Kind: peerFlat}}
	for i, v := range [][2]float64{{200, 100}, {300, 100}, {100, 100}} {
		cr.Runs = append(cr.Runs,
			&PeerRun{Server: PeerHerald, Index: i, DeliveriesPerS: v[0]},
			&PeerRun{Server: PeerCentrifugo, Index: i, DeliveriesPerS: v[1]})
	}
	cr.Runs = append(cr.Runs, &PeerRun{Server: PeerHerald, Index: 3, Error: "exited"},
		&PeerRun{Server: PeerCentrifugo, Index: 3, DeliveriesPerS: 1})
	cr.summarize([]string{PeerHerald, PeerCentrifugo})
	got := cr.Ratios["deliveries_per_s"]
	if got != (Spread{Median: 2, Min: 1, Max: 3, N: 3}) {
		t.Errorf("ratio %+v; want median 2 of the 3 complete pairs", got)
	}
	h := cr.Summary[PeerHerald]
	if h.OK != 3 || h.Failed != 1 || h.Metrics["deliveries_per_s"].Median != 200 {
		t.Errorf("herald summary %+v", h)
	}
	if s := spreadOf([]float64{4, 1, 3, 2}); s.Median != 2.5 || s.Min != 1 || s.Max != 4 {
		t.Errorf("spread of 4 values: %+v", s)
	}
}

func TestPeerConfigValidate(t *testing.T) {
	tmp := t.TempDir()
	script := filepath.Join(tmp, "centrifugo")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ok := PeerConfig{Serve: []string{"herald", "serve"}, Centrifugo: script, ServerCPUs: "0", LoadCPUs: "1"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		edit func(*PeerConfig)
		want string
	}{
		{func(c *PeerConfig) { c.Centrifugo = filepath.Join(tmp, "missing") }, "--centrifugo"},
		{func(c *PeerConfig) { c.Cases = []string{"flat-1000", "nope"} }, `unknown case "nope"`},
		{func(c *PeerConfig) { c.Runs = -1 }, "--runs"},
		{func(c *PeerConfig) { c.Window = -time.Second }, "--window"},
		{func(c *PeerConfig) { c.Pin, c.LoadCPUs = true, "" }, "--load-cpus"},
		{func(c *PeerConfig) { c.Serve = nil }, "no herald command"},
	} {
		c := ok
		tc.edit(&c)
		c.Out = filepath.Join(tmp, "out")
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want an error with %q", c, err, tc.want)
		}
		if _, runErr := RunPeer(t.Context(), c); runErr == nil {
			t.Errorf("RunPeer accepted %+v", c)
		}
		if _, statErr := os.Stat(c.Out); !os.IsNotExist(statErr) {
			t.Errorf("RunPeer with a bad config created %s", c.Out)
		}
	}
}
