package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/auth"
	"github.com/heraldhq/herald/transports/wire"
)

// api serves the REST endpoints: token minting, publishing and history.
type api struct {
	hub        *notify.Hub
	auth       *auth.Authenticator
	maxPayload int
	limiter    *rateLimiter
	metrics    *metrics
}

// fail answers a refused call and counts it.
func (a *api) fail(w http.ResponseWriter, err error) {
	if a.metrics != nil {
		a.metrics.Rejected("rest", notify.ErrorEnvelope(err, "").Code)
	}
	wire.WriteError(w, err)
}

// caller is who made a REST call: a server holding an API key, or a client
// holding a token.
type caller struct {
	apiKey bool
	grants *notify.Grants
	key    string // rate-limit key
}

func (a *api) authenticate(r *http.Request) (*caller, error) {
	tok := wire.Token(r)
	if a.auth.CheckAPIKey(tok) {
		return &caller{apiKey: true, key: "key:" + tok[:8]}, nil
	}
	g, err := a.auth.Verify(r.Context(), tok)
	if err != nil {
		return nil, err
	}
	return &caller{grants: g, key: "user:" + g.User}, nil
}

// readJSON decodes a bounded JSON body into v.
func readJSON(r *http.Request, limit int64, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return notify.Errorf(notify.ErrTooLarge, "request body exceeds %d bytes", limit)
		}
		return notify.Errorf(notify.ErrInvalidCommand, "reading the body: %v", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return notify.Errorf(notify.ErrInvalidCommand, "malformed JSON body: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// token handles POST /v1/token (API key only):
//
//	{"user":"42","channels":["news","dash."],"publish":["room."],"presence":["room."],"ttl":"60s"}
//	→ {"token":"…","expires_at":"2026-…Z"}
func (a *api) token(w http.ResponseWriter, r *http.Request) {
	if !a.auth.CheckAPIKey(wire.Token(r)) {
		a.fail(w, notify.Errorf(notify.ErrUnauthorized, "minting tokens needs an API key (Authorization: Bearer <api key>)"))
		return
	}
	var req struct {
		User     string   `json:"user"`
		Channels []string `json:"channels"`
		Publish  []string `json:"publish"`
		Presence []string `json:"presence"`
		TTL      string   `json:"ttl"`
	}
	if err := readJSON(r, 64<<10, &req); err != nil {
		a.fail(w, err)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			a.fail(w, notify.Errorf(notify.ErrInvalidCommand, "ttl %q is not a positive duration like \"60s\"", req.TTL))
			return
		}
	}
	tok, exp, err := a.auth.Mint(auth.TokenRequest{User: req.User, Channels: req.Channels, Publish: req.Publish, Presence: req.Presence, TTL: ttl})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok, "expires_at": exp.UTC().Format(time.RFC3339)})
}

// demoToken handles POST /v1/demo/token, which only a development server
// (one that generated its own API key) has, so that the demo page at /
// works out of the box with no secret in the page. It answers loopback
// clients of the server's own origin only, with a one-minute token for the
// user that may subscribe and publish to every topic and to the user's own
// channel:
//
//	{"user":"ada"} → {"token":"…","expires_at":"…"}
func (a *api) demoToken(w http.ResponseWriter, r *http.Request) {
	if !isLoopback(r.RemoteAddr) || !wire.OriginAllowed(r, nil) {
		wire.WriteError(w, notify.Errorf(notify.ErrForbidden, "demo tokens are for the demo page, on this machine"))
		return
	}
	var req struct {
		User string `json:"user"`
	}
	if err := readJSON(r, 4<<10, &req); err != nil {
		wire.WriteError(w, err)
		return
	}
	if err := notify.ValidateUser(req.User); err != nil {
		wire.WriteError(w, err)
		return
	}
	tok, exp, err := a.auth.Mint(auth.TokenRequest{
		User: req.User, Channels: []string{"*"}, Publish: []string{"*", notify.UserChannel(req.User)}, TTL: time.Minute,
	})
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok, "expires_at": exp.UTC().Format(time.RFC3339)})
}

func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}

type publication struct {
	Channel string          `json:"channel"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
}

// publish handles POST /v1/publish (API key, or a token allowed to publish
// to each channel):
//
//	{"channel":"news","event":"breaking","data":{…}}  → {"id":"…"}
//	{"messages":[{…},{…}]}                             → {"ids":["…","…"]}
//
// A batch is validated and authorized whole before any of it is published
// or charged to the rate limit. Each message is validated (and its data
// compacted) here, once: the broker trusts the normalized publications it
// is handed (notify.Publication.Normalized).
func (a *api) publish(w http.ResponseWriter, r *http.Request) {
	c, err := a.authenticate(r)
	if err != nil {
		a.fail(w, err)
		return
	}
	var req struct {
		publication
		Messages []publication `json:"messages"`
	}
	if err := readJSON(r, int64(a.maxPayload)*4+64<<10, &req); err != nil {
		a.fail(w, err)
		return
	}
	batch := req.Messages != nil
	pubs := req.Messages
	if !batch {
		pubs = []publication{req.publication}
	} else if req.Channel != "" {
		a.fail(w, notify.Errorf(notify.ErrInvalidCommand, "send either one message or \"messages\", not both"))
		return
	}
	if len(pubs) == 0 || len(pubs) > 1000 {
		a.fail(w, notify.Errorf(notify.ErrInvalidCommand, "a batch holds 1 to 1000 messages"))
		return
	}
	ps := make([]notify.Publication, len(pubs))
	for i, p := range pubs {
		if ps[i], err = (notify.Publication{Channel: p.Channel, Event: p.Event, Data: p.Data}).Normalize(a.maxPayload); err != nil {
			a.fail(w, indexed(batch, i, err))
			return
		}
		if !c.apiKey {
			if err := c.grants.CheckPublish(p.Channel); err != nil {
				a.fail(w, indexed(batch, i, err))
				return
			}
		}
	}
	if !a.limiter.Allow(c.key, len(ps)) {
		a.fail(w, notify.Errorf(notify.ErrRateLimited, "publish rate limit exceeded"))
		return
	}
	broker := a.hub.Broker()
	var ids []notify.ID
	if batch {
		ids, err = broker.PublishBatch(r.Context(), ps)
	} else {
		var id notify.ID
		id, err = broker.Publish(r.Context(), ps[0])
		ids = []notify.ID{id}
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	if !batch {
		writeJSON(w, http.StatusOK, map[string]string{"id": ids[0].String()})
		return
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	writeJSON(w, http.StatusOK, map[string][]string{"ids": out})
}

func indexed(batch bool, i int, err error) error {
	if !batch {
		return err
	}
	var e *notify.Error
	if errors.As(err, &e) {
		return &notify.Error{Code: e.Code, Message: fmt.Sprintf("message %d: %s", i, e.Message)}
	}
	return err
}

// history handles GET /v1/history?channel=…&since=…&limit=… (API key, or a
// token allowed to subscribe to the channel), for clients that refetch
// after a gap:
//
//	→ {"messages":[envelope…],"gap":false,"last":"…"}
func (a *api) history(w http.ResponseWriter, r *http.Request) {
	c, err := a.authenticate(r)
	if err != nil {
		a.fail(w, err)
		return
	}
	q := r.URL.Query()
	channel := q.Get("channel")
	if err := notify.ValidateChannel(channel); err != nil {
		a.fail(w, err)
		return
	}
	if !c.apiKey {
		if err := c.grants.CheckSubscribe(channel); err != nil {
			a.fail(w, err)
			return
		}
	}
	var since notify.ID
	if s := q.Get("since"); s != "" {
		if since, err = notify.ParseID(s); err != nil {
			a.fail(w, err)
			return
		}
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 1000 {
			a.fail(w, notify.Errorf(notify.ErrInvalidCommand, "limit must be 1 to 1000"))
			return
		}
	}
	h, err := a.hub.Broker().History(r.Context(), channel, since, limit)
	if err != nil {
		a.fail(w, err)
		return
	}
	msgs := make([]json.RawMessage, len(h.Messages))
	for i, m := range h.Messages {
		msgs[i] = m.JSON()
	}
	var last any
	if !h.Last.IsZero() {
		last = h.Last.String()
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": msgs, "gap": h.Gap, "last": last})
}

// presence handles GET /v1/presence?channel=…&limit=…&cursor=… (API key, or
// a token allowed presence on the channel): a page of the channel's
// members, and their count.
//
//	→ {"count":3,"members":[{"user":"42","conn":"…"},…],"next":"…"}
//
// limit is 0 (the count only) to notify.MaxPresencePage, default 100; next,
// absent on the last page, is the cursor of the next page.
func (a *api) presence(w http.ResponseWriter, r *http.Request) {
	c, err := a.authenticate(r)
	if err != nil {
		a.fail(w, err)
		return
	}
	q := r.URL.Query()
	channel := q.Get("channel")
	if err := notify.ValidateChannel(channel); err != nil {
		a.fail(w, err)
		return
	}
	if !c.apiKey {
		if err := c.grants.CheckPresence(channel); err != nil {
			a.fail(w, err)
			return
		}
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 0 || limit > notify.MaxPresencePage {
			a.fail(w, notify.Errorf(notify.ErrInvalidCommand, "limit must be 0 to %d", notify.MaxPresencePage))
			return
		}
	}
	p := a.hub.Presence()
	if p == nil {
		a.fail(w, notify.ErrPresenceDisabled)
		return
	}
	page, err := p.Members(r.Context(), channel, limit, q.Get("cursor"))
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(notify.AppendPresencePage(nil, page), '\n'))
}
