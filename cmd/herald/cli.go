package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/auth"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/sse"
	"github.com/heraldhq/herald/transports/ws"
	"github.com/heraldhq/herald/transports/wt"
)

// clientFlags are the flags every client subcommand shares.
type clientFlags struct {
	url    string
	apiKey string
	token  string
	cacert string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "http://localhost:8080", "Herald server URL (https://host:8443 for HTTP/3)")
	fs.StringVar(&c.apiKey, "api-key", "", "API key (server-to-server calls)")
	fs.StringVar(&c.token, "token", "", "a connect token (instead of an API key)")
	fs.StringVar(&c.cacert, "cacert", "", "PEM certificate to trust (e.g. the development certificate's cert.pem)")
}

func (c *clientFlags) tlsConfig() (*tls.Config, error) {
	if c.cacert == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.cacert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--cacert %s: no certificate found", c.cacert)
	}
	return &tls.Config{RootCAs: pool}, nil
}

func (c *clientFlags) httpClient() (*http.Client, error) {
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}, nil
}

// post calls a REST endpoint and decodes its JSON answer into out.
func (c *clientFlags) post(path, bearer string, body, out any) error {
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", strings.TrimSuffix(c.url, "/")+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal(raw, &e) == nil && e.Error.Code != "" {
			return &notify.Error{Code: e.Error.Code, Message: e.Error.Message}
		}
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	return json.Unmarshal(raw, out)
}

func newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := applyEnv(fs, "HERALD_"); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return nil
}

func runToken(args []string, stdout io.Writer) error {
	fs := newFlagSet("token", `Usage: herald token [flags]

Mints a connect token and prints it. With --api-key it asks a server
(POST /v1/token); with --secret it signs the token locally, as the server
would.

Examples:
  herald token --api-key "$HERALD_API_KEY" --user 42 --channels news,dash. --ttl 10m
  herald token --secret "$HERALD_SECRET" --user 42 --publish room.
  herald token --api-key "$HERALD_API_KEY" --user 42 --channels room. --presence room.
`)
	var c clientFlags
	c.register(fs)
	user := fs.String("user", "", "the user the token is for (required)")
	var channels, publish, presence listFlag
	fs.Var(&channels, "channels", "channels it may subscribe to (names, or prefixes ending in . or *)")
	fs.Var(&publish, "publish", "channels it may publish to")
	fs.Var(&presence, "presence", "channels whose presence it joins and sees")
	ttl := fs.Duration("ttl", 10*time.Minute, "lifetime")
	secret := fs.String("secret", "", "sign locally with this secret instead of asking a server")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("token: --user is required")
	}
	if *secret != "" {
		a, err := auth.New(auth.Config{Secret: []byte(*secret), MaxTTL: max(*ttl, 24*time.Hour)})
		if err != nil {
			return err
		}
		tok, _, err := a.Mint(auth.TokenRequest{User: *user, Channels: channels, Publish: publish, Presence: presence, TTL: *ttl})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}
	if c.apiKey == "" {
		return errors.New("token: give --api-key (ask a server) or --secret (sign locally)")
	}
	var out struct{ Token string }
	err := c.post("/v1/token", c.apiKey, map[string]any{"user": *user, "channels": channels, "publish": publish, "presence": presence, "ttl": ttl.String()}, &out)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, out.Token)
	return nil
}

func runPublish(args []string, stdout io.Writer) error {
	fs := newFlagSet("publish", `Usage: herald publish [flags]

Publishes one message and prints its ID. The data is --data, or standard
input when --data is "-"; it must be JSON.

Examples:
  herald publish --api-key "$HERALD_API_KEY" --channel news --event breaking --data '{"title":"Hello"}'
  echo '{"order":7}' | herald publish --token "$TOKEN" --channel user:42 --event order.shipped --data -
`)
	var c clientFlags
	c.register(fs)
	channel := fs.String("channel", "", "channel (required)")
	event := fs.String("event", "", "event name")
	data := fs.String("data", "null", "JSON data, or - for standard input")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *channel == "" {
		return errors.New("publish: --channel is required")
	}
	raw := []byte(*data)
	if *data == "-" {
		var err error
		if raw, err = io.ReadAll(os.Stdin); err != nil {
			return err
		}
	}
	if !json.Valid(raw) {
		return errors.New("publish: --data is not valid JSON")
	}
	bearer := c.apiKey
	if bearer == "" {
		bearer = c.token
	}
	var out struct{ ID string }
	if err := c.post("/v1/publish", bearer, map[string]any{"channel": *channel, "event": *event, "data": json.RawMessage(raw)}, &out); err != nil {
		return err
	}
	fmt.Fprintln(stdout, out.ID)
	return nil
}

// envelopeReader is what listen needs of a transport's client.
type envelopeReader interface {
	Read(context.Context) (*notify.Envelope, error)
	Close() error
}

func runListen(args []string, stdout io.Writer) error {
	fs := newFlagSet("listen", `Usage: herald listen [flags]

Connects over a transport and prints every envelope as a JSON line until
interrupted. With --api-key and --user it first mints a token for that user.

Examples:
  herald listen --token "$TOKEN" --channel news
  herald listen --token "$TOKEN" --channel news --count 1     # wait for one message
  herald listen --api-key "$HERALD_API_KEY" --user 42 --channel news --transport sse
  herald listen --url https://localhost:8443 --cacert ~/.cache/herald/devcert/cert.pem --transport h3 --token "$TOKEN"
`)
	var c clientFlags
	c.register(fs)
	transport := fs.String("transport", "ws", "ws, sse, h3 or wt")
	user := fs.String("user", "", "with --api-key: mint a token for this user")
	var channels listFlag
	fs.Var(&channels, "channel", "channel to subscribe (repeatable), besides the user's own")
	since := fs.String("since", "", "cursor to resume from (channel=id;channel=id, or an ID)")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	if err := parse(fs, args); err != nil {
		return err
	}
	token := c.token
	if token == "" && c.apiKey != "" && *user != "" {
		var out struct{ Token string }
		if err := c.post("/v1/token", c.apiKey, map[string]any{"user": *user, "channels": channels}, &out); err != nil {
			return err
		}
		token = out.Token
	}
	if token == "" {
		return errors.New("listen: give --token, or --api-key and --user")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := c.dial(ctx, *transport, token, channels, *since)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		e, err := r.Read(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		fmt.Fprintf(stdout, "%s\n", e.AppendJSON(nil))
		if e.Type == notify.TypeMessage {
			if *count--; *count == 0 {
				return nil
			}
		}
	}
}

func (c *clientFlags) dial(ctx context.Context, transport, token string, channels []string, since string) (envelopeReader, error) {
	base := strings.TrimSuffix(c.url, "/")
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	switch transport {
	case "ws":
		hc, err := c.httpClient()
		if err != nil {
			return nil, err
		}
		hc.Timeout = 0
		u := "ws" + strings.TrimPrefix(base, "http") + "/v1/ws"
		return ws.Dial(ctx, u, ws.DialOptions{Token: token, Channels: channels, Since: since, HTTPClient: hc})
	case "sse":
		hc, err := c.httpClient()
		if err != nil {
			return nil, err
		}
		hc.Timeout = 0
		return sse.Dial(ctx, base+"/v1/sse", sse.DialOptions{Token: token, Channels: channels, Since: since, HTTPClient: hc})
	case "h3":
		if !strings.HasPrefix(base, "https://") {
			return nil, errors.New("listen: HTTP/3 needs an https:// --url (the TLS port)")
		}
		return h3.Dial(ctx, base+"/v1/stream", h3.DialOptions{Token: token, Channels: channels, Since: since, TLSConfig: tc})
	case "wt":
		if !strings.HasPrefix(base, "https://") {
			return nil, errors.New("listen: WebTransport needs an https:// --url (the TLS port)")
		}
		return wt.Dial(ctx, base+"/v1/wt", wt.DialOptions{Token: token, Channels: channels, Since: since, TLSConfig: tc})
	}
	return nil, fmt.Errorf("listen: --transport %q is not ws, sse, h3 or wt", transport)
}
