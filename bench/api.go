package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// api calls a server's REST API with the API key.
type api struct {
	key    string
	client *http.Client
}

func newAPI(key string, tlsCfg *tls.Config) *api {
	return &api{key: key, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 256, TLSClientConfig: tlsCfg.Clone(),
	}}}
}

func (a *api) post(ctx context.Context, url string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(raw))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// tokens mints connect tokens through POST /v1/token, one per user,
// reused by every connection of the user (they last the run).
type tokens struct {
	api *api
	mu  sync.Mutex
	m   map[string]string // user → token; guarded by mu
}

func (t *tokens) get(ctx context.Context, base, user string, channels []string) (string, error) {
	t.mu.Lock()
	tok, ok := t.m[user]
	t.mu.Unlock()
	if ok {
		return tok, nil
	}
	var out struct {
		Token string `json:"token"`
	}
	err := t.api.post(ctx, base+"/v1/token", map[string]any{"user": user, "channels": channels, "ttl": "2h"}, &out)
	if err != nil {
		return "", err
	}
	t.mu.Lock()
	t.m[user] = out.Token
	t.mu.Unlock()
	return out.Token, nil
}

type publication struct {
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// publish sends one message, or a batch of them in order.
func (a *api) publish(ctx context.Context, base string, pubs []publication) error {
	if len(pubs) == 1 {
		return a.post(ctx, base+"/v1/publish", pubs[0], nil)
	}
	return a.post(ctx, base+"/v1/publish", map[string]any{"messages": pubs}, nil)
}
