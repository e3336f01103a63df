package bench

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/internal/freeport"
)

// The servers the peer bench compares.
const (
	PeerHerald     = "herald"
	PeerCentrifugo = "centrifugo"
)

// peerChannel is the one channel every subscriber of a run reads.
const peerChannel = "bench"

// peerServer is one server child of a peer run and how to talk to it.
type peerServer struct {
	kind   string
	proc   *process
	base   string // http://127.0.0.1:port
	ws     string // WebSocket endpoint, without query
	apiKey string
	secret string
	api    *api // Herald: mints tokens through POST /v1/token
	log    string
}

// startPeerHerald starts `herald serve` with the flags bench gives its
// children: the memory broker (no --redis), the publish rate limit off,
// no per-user connection limit, plain listener only, on a free port.
func startPeerHerald(ctx context.Context, serve []string, dir, cpus, secret, key string) (*peerServer, error) {
	args := append(append([]string(nil), serve...),
		"--addr", "127.0.0.1:0", "--tls-addr", "",
		"--secret", secret, "--api-key", key,
		"--publish-rate", "0", "--max-conns-per-user", "-1",
		"--log-format", "json", "--log-level", "info")
	logPath := filepath.Join(dir, "herald.log")
	pr, pw := io.Pipe()
	p, err := startProcess("herald", logPath, cpus, args, pw)
	if err != nil {
		pw.Close()
		return nil, err
	}
	go func() { <-p.done; pw.Close() }()
	addr := make(chan listenAddrs, 1)
	go copyLogFindListen(pr, logPath, addr)
	select {
	case la := <-addr:
		a := la.http
		s := &peerServer{kind: PeerHerald, proc: p, base: "http://" + a, ws: "ws://" + a + "/v1/ws",
			apiKey: key, secret: secret, api: newAPI(key, nil), log: logPath}
		return s, nil
	case <-p.done:
		return nil, fmt.Errorf("herald serve exited at start (see %s)", logPath)
	case <-time.After(20 * time.Second):
		p.kill()
		return nil, fmt.Errorf("herald serve did not start within 20s (see %s)", logPath)
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
}

// listenAddrs is the addresses of a herald child's "herald listening" log
// line.
type listenAddrs struct{ http, https string }

// copyLogFindListen copies a herald child's JSON log to logPath and sends
// the addresses of its "herald listening" line.
func copyLogFindListen(r io.Reader, logPath string, addr chan<- listenAddrs) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		_, _ = io.Copy(io.Discard, r)
		return
	}
	defer log.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		_, _ = log.Write(append(line, '\n'))
		var rec struct {
			Msg   string `json:"msg"`
			HTTP  string `json:"http"`
			HTTPS string `json:"https_h1_h2_h3"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "herald listening" {
			addr <- listenAddrs{rec.HTTP, rec.HTTPS}
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// centrifugoConfig is the least Centrifugo does for plain fan-out: the
// memory engine, no history, no presence, no join/leave, no recovery or
// positioning (the defaults of channels without namespace), HMAC
// connection tokens, the HTTP API with a key, on the one port. The health
// endpoint tells when it is up; usage statistics (which call out) are off.
func centrifugoConfig(port int, secret, key string) ([]byte, error) {
	cfg := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"log":         map[string]any{"level": "info"},
		"client": map[string]any{
			"token":           map[string]any{"hmac_secret_key": secret},
			"allowed_origins": []string{},
		},
		"http_api":    map[string]any{"key": key},
		"channel":     map[string]any{"without_namespace": map[string]any{}},
		"health":      map[string]any{"enabled": true},
		"usage_stats": map[string]any{"disabled": true},
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// startPeerCentrifugo starts the Centrifugo binary at path with a config
// of its own on a free port and waits until /health answers.
func startPeerCentrifugo(ctx context.Context, path, dir, cpus, secret, key string) (*peerServer, error) {
	port, err := freeport.BelowEphemeral()
	if err != nil {
		return nil, err
	}
	conf, err := centrifugoConfig(port, secret, key)
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "centrifugo.json")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "centrifugo.log")
	p, err := startProcess("centrifugo", logPath, cpus, []string{path, "--config", confPath}, nil)
	if err != nil {
		return nil, err
	}
	a := "127.0.0.1:" + strconv.Itoa(port)
	s := &peerServer{kind: PeerCentrifugo, proc: p, base: "http://" + a, ws: "ws://" + a + "/connection/websocket",
		apiKey: key, secret: secret, log: logPath}
	if err := waitHealth(ctx, p, s.base+"/health", 20*time.Second); err != nil {
		p.kill()
		return nil, fmt.Errorf("centrifugo: %w (see %s)", err, logPath)
	}
	return s, nil
}

func waitHealth(ctx context.Context, p *process, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !p.alive() {
			return errors.New("exited at start")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// token returns a connect token for user allowed to read peerChannel:
// Herald's from its POST /v1/token (its public API), Centrifugo's an HS256
// JWT whose channels claim subscribes the connection server-side (no
// subscribe round trip, as Herald's channel query parameter).
func (s *peerServer) token(ctx context.Context, user string) (string, error) {
	if s.kind == PeerHerald {
		var out struct {
			Token string `json:"token"`
		}
		err := s.api.post(ctx, s.base+"/v1/token", map[string]any{"user": user, "channels": []string{peerChannel}, "ttl": "2h"}, &out)
		return out.Token, err
	}
	claims := jwt.MapClaims{"sub": user, "channels": []string{peerChannel}, "exp": time.Now().Add(2 * time.Hour).Unix()}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(s.secret))
}

// dialURL is the WebSocket URL a subscriber with token opens.
func (s *peerServer) dialURL(token string) string {
	if s.kind == PeerHerald {
		return s.ws + "?channel=" + peerChannel + "&token=" + token
	}
	return s.ws
}

// hello finishes a connection's handshake: nothing for Herald (the token
// and channel were in the URL); for Centrifugo its JSON protocol's connect
// command, whose reply must list the server-side subscription.
func (s *peerServer) hello(c *rawWS, token string) error {
	if s.kind == PeerHerald {
		return nil
	}
	cmd, _ := json.Marshal(map[string]any{"id": 1, "connect": map[string]any{"token": token, "name": "herald-bench"}})
	if err := c.writeText(cmd); err != nil {
		return err
	}
	var frame []byte
	for {
		var err error
		frame, err = c.readMessage(frame)
		if err != nil {
			return fmt.Errorf("centrifugo connect: %w", err)
		}
		var reply error
		found := false
		splitFrame(frame, func(m []byte) {
			if !found {
				found, reply = centrifugoConnectReply(m)
			}
		})
		if found {
			return reply
		}
	}
}

// centrifugoConnectReply reads Centrifugo's reply to the connect command
// (id 1): ok when it carries the subscription to peerChannel.
func centrifugoConnectReply(m []byte) (found bool, err error) {
	var r struct {
		ID      int             `json:"id"`
		Error   json.RawMessage `json:"error"`
		Connect *struct {
			Subs map[string]json.RawMessage `json:"subs"`
		} `json:"connect"`
	}
	if json.Unmarshal(m, &r) != nil || r.ID != 1 {
		return false, nil
	}
	switch {
	case len(r.Error) > 0:
		return true, fmt.Errorf("centrifugo connect refused: %s", r.Error)
	case r.Connect == nil:
		return true, fmt.Errorf("centrifugo connect: unexpected reply %s", m)
	case r.Connect.Subs[peerChannel] == nil:
		return true, fmt.Errorf("centrifugo connect: not subscribed to %q: %s", peerChannel, m)
	}
	return true, nil
}

// publishRequest is one publish of data on peerChannel through the
// server's HTTP API: the same body for both servers.
func (s *peerServer) publishRequest(ctx context.Context, body []byte) (*http.Request, error) {
	url := s.base + "/v1/publish"
	if s.kind == PeerCentrifugo {
		url = s.base + "/api/publish"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.kind == PeerHerald {
		req.Header.Set("Authorization", "Bearer "+s.apiKey)
	} else {
		req.Header.Set("X-API-Key", s.apiKey)
	}
	return req, nil
}

// publishOK checks a publish response: Centrifugo answers API errors with
// 200 and an error object in the body.
func (s *peerServer) publishOK(status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("publish: HTTP %d: %s", status, bytes.TrimSpace(body))
	}
	if s.kind == PeerCentrifugo && bytes.Contains(body, []byte(`"error"`)) {
		return fmt.Errorf("publish: %s", bytes.TrimSpace(body))
	}
	return nil
}

// centrifugoVersion is the module version the binary was built from (a
// `go install` build reports v0.0.0 through `centrifugo version`), or
// what `centrifugo version` prints.
func centrifugoVersion(path string) string {
	if bi, err := buildinfo.ReadFile(path); err == nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return fmt.Sprintf("%s %s (%s)", bi.Main.Path, bi.Main.Version, bi.GoVersion)
	}
	out, err := exec.Command(path, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
