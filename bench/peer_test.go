package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Frames as the servers sent them to this package's client (recorded from
// herald serve at commit 7f52d0d and from Centrifugo v6.9.1 over
// WebSocket). Centrifugo's second frame coalesced seven pushes; Herald's
// messages are two of its recorded frames joined as it coalesces them
// under load (docs/protocol.md: envelopes separated by "\n").
const (
	heraldSubscribed = `{"type":"subscribed","channel":"user:peer-0","id":"0-0"}` + "\n" +
		`{"type":"subscribed","channel":"bench","id":"0-0"}`
	heraldMessages = `{"type":"message","channel":"bench","id":"1796301698545-0","data":{"w":0,"s":1,"t":1796301698544844576,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"ts":1796301698545}` + "\n" +
		`{"type":"message","channel":"bench","id":"1796301698545-1","data":{"w":2,"s":1,"t":1796301698545265544,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"ts":1796301698545}`
	centrifugoConnect = `{"id":1,"connect":{"client":"ca014fc8-b576-4f6f-8de7-8ea0d67294ec","version":"0.0.0 OSS","expires":true,"ttl":7200,"subs":{"bench":{}},"ping":25,"pong":true}}`
	centrifugoPushes  = `{"push":{"channel":"bench","pub":{"data":{"w":2,"s":1,"t":1796301700204129972,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}` + "\n" +
		`{"push":{"channel":"bench","pub":{"data":{"w":7,"s":1,"t":1796301700203778987,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}` + "\n" +
		`{"push":{"channel":"bench","pub":{"data":{"w":4,"s":1,"t":1796301700204050233,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}` + "\n" +
		`{"push":{"channel":"bench","pub":{"data":{"w":3,"s":1,"t":1796301700203880034,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}` + "\n" +
		`{"push":{"channel":"bench","pub":{"data":{"w":1,"s":1,"t":1796301700204097145,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}` + "\n" +
		`{"push":{"channel":"bench","pub":{"data":{"w":0,"s":1,"t":1796301700204058177,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}` + "\n" +
		`{"push":{"channel":"bench","pub":{"data":{"w":6,"s":1,"t":1796301700204144892,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}`
	centrifugoPing  = `{}`
	centrifugoProbe = `{"push":{"channel":"bench","pub":{"data":{"probe":1}}}}`
)

func TestPeerFramesParse(t *testing.T) {
	herald := []peerDelivery{{0, 1, 1796301698544844576}, {2, 1, 1796301698545265544}}
	centrifugo := []peerDelivery{{2, 1, 1796301700204129972}, {7, 1, 1796301700203778987}, {4, 1, 1796301700204050233}, {3, 1, 1796301700203880034}, {1, 1, 1796301700204097145}, {0, 1, 1796301700204058177}, {6, 1, 1796301700204144892}}
	for _, tc := range []struct {
		name, frame string
		want        []peerDelivery
		pings       int
	}{
		{"herald", heraldMessages, herald, 0},
		{"centrifugo", centrifugoPushes, centrifugo, 0},
		{"centrifugo ping alone", centrifugoPing, nil, 1},
		{"centrifugo ping among pushes", centrifugoPing + "\n" + centrifugoPushes, centrifugo, 1},
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
		if !slices.Equal(got, tc.want) || pings != tc.pings {
			t.Errorf("%s: %+v and %d pings; want %+v and %d", tc.name, got, pings, tc.want, tc.pings)
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
	splitFrame([]byte(heraldSubscribed+"\n\n"), func([]byte) { n++ })
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
