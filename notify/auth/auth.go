// Package auth is Herald's authentication: short-lived connect tokens (JWT)
// that carry a user and the channels it may subscribe and publish to,
// server-to-server API keys, and the single-use record that stops a token
// seen in a log from being replayed on any instance.
//
// One Authenticator serves the REST API and every transport: transports
// call Verify with the token the client presented.
package auth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/heraldhq/herald/notify"
)

// Claims are the claims of a Herald token. The user is the subject.
type Claims struct {
	jwt.RegisteredClaims
	// Channels the holder may subscribe to: exact names, or prefixes
	// ending in "." or "*". The user's own channel is always allowed.
	Channels []string `json:"channels,omitempty"`
	// Publish lists the channels the holder may publish to, likewise.
	Publish []string `json:"publish,omitempty"`
	// Presence lists the channels whose presence the holder takes part
	// in and sees, likewise (notify.Grants.Presence).
	Presence []string `json:"presence,omitempty"`
}

// Replay records single-use token IDs until their expiry. Use reports
// whether id was unused (and marks it used) — atomically, across every
// instance sharing the store.
type Replay interface {
	Use(ctx context.Context, id string, until time.Time) (bool, error)
}

// Config configures an Authenticator. Zero values are the defaults.
type Config struct {
	// Secret signs tokens (HS256) and verifies them. At least 32 bytes.
	Secret []byte
	// VerifyKeys are extra public keys that verify tokens a team's own
	// backend mints: ed25519.PublicKey (EdDSA) or *rsa.PublicKey (RS256).
	VerifyKeys []crypto.PublicKey
	// APIKeys authenticate server-to-server calls (publish, minting).
	APIKeys []string
	// Leeway tolerates clock skew between the clock that minted a token
	// and the one verifying it, on exp, nbf and iat: a token is accepted
	// until its exp plus Leeway, so it lives up to its TTL plus Leeway.
	// Keep it small next to the TTLs in use. Default DefaultLeeway;
	// negative means none (the clocks must then agree to the second: exp
	// and iat are whole seconds).
	Leeway time.Duration
	// DefaultTTL is a minted token's lifetime when none is asked.
	// Default 10m.
	DefaultTTL time.Duration
	// MaxTTL caps a minted token's lifetime. Default 24h.
	MaxTTL time.Duration
	// SingleUse, if set, makes every token usable once: its ID is recorded
	// at first use until it expires.
	SingleUse Replay
}

// MinSecretLen is the shortest accepted HS256 secret.
const MinSecretLen = 32

// DefaultLeeway is Config.Leeway's default: enough for clocks kept by NTP,
// short enough that a one-second token does not live several times longer.
const DefaultLeeway = 5 * time.Second

// Authenticator mints and verifies tokens and checks API keys.
type Authenticator struct {
	cfg     Config
	methods []string
	apiKeys [][sha256.Size]byte
	parser  *jwt.Parser
}

// New returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("auth: the secret must be at least %d bytes", MinSecretLen)
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}
	if cfg.DefaultTTL <= 0 {
		cfg.DefaultTTL = 10 * time.Minute
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = 24 * time.Hour
	}
	a := &Authenticator{cfg: cfg, methods: []string{jwt.SigningMethodHS256.Alg()}}
	for _, k := range cfg.VerifyKeys {
		switch k.(type) {
		case ed25519.PublicKey:
			a.methods = append(a.methods, jwt.SigningMethodEdDSA.Alg())
		case *rsa.PublicKey:
			a.methods = append(a.methods, jwt.SigningMethodRS256.Alg())
		default:
			return nil, fmt.Errorf("auth: unsupported verify key type %T (want ed25519.PublicKey or *rsa.PublicKey)", k)
		}
	}
	slices.Sort(a.methods)
	a.methods = slices.Compact(a.methods)
	for _, k := range cfg.APIKeys {
		if len(k) < 16 {
			return nil, errors.New("auth: API keys must be at least 16 characters")
		}
		a.apiKeys = append(a.apiKeys, sha256.Sum256([]byte(k)))
	}
	a.parser = jwt.NewParser(
		jwt.WithValidMethods(a.methods), // pinned: no "none", no confusion
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
	)
	return a, nil
}

// CheckAPIKey reports whether key is one of the configured API keys, in
// constant time.
func (a *Authenticator) CheckAPIKey(key string) bool {
	if key == "" {
		return false
	}
	sum := sha256.Sum256([]byte(key))
	ok := 0
	for i := range a.apiKeys {
		ok |= subtle.ConstantTimeCompare(sum[:], a.apiKeys[i][:])
	}
	return ok == 1
}

// TokenRequest asks for a token.
type TokenRequest struct {
	User     string
	Channels []string
	Publish  []string
	Presence []string
	TTL      time.Duration // zero: DefaultTTL
}

// Mint returns a signed token for req and its expiry.
func (a *Authenticator) Mint(req TokenRequest) (string, time.Time, error) {
	if err := notify.ValidateUser(req.User); err != nil {
		return "", time.Time{}, err
	}
	if err := validateGrants(req.Channels, req.Publish, req.Presence); err != nil {
		return "", time.Time{}, err
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = a.cfg.DefaultTTL
	}
	if ttl < 0 || ttl > a.cfg.MaxTTL {
		return "", time.Time{}, notify.Errorf(notify.ErrInvalidCommand, "ttl must be between 0 and %v", a.cfg.MaxTTL)
	}
	now := time.Now()
	exp := now.Add(ttl)
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   req.User,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        base64.RawURLEncoding.EncodeToString(id),
		},
		Channels: req.Channels,
		Publish:  req.Publish,
		Presence: req.Presence,
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(a.cfg.Secret)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, exp.Truncate(time.Second), nil
}

// Verify checks token (signature, algorithm, expiry, claims and, in
// single-use mode, that it was not used before) and returns its grants.
// Every failure is notify.ErrUnauthorized; the message says why without
// echoing the token.
func (a *Authenticator) Verify(ctx context.Context, token string) (*notify.Grants, error) {
	if token == "" {
		return nil, notify.Errorf(notify.ErrUnauthorized, "no token")
	}
	if len(token) > 8192 {
		return nil, notify.Errorf(notify.ErrUnauthorized, "token too long")
	}
	var c Claims
	_, err := a.parser.ParseWithClaims(token, &c, a.key)
	if err != nil {
		return nil, notify.Errorf(notify.ErrUnauthorized, "invalid token: %s", reason(err))
	}
	if err := notify.ValidateUser(c.Subject); err != nil {
		return nil, notify.Errorf(notify.ErrUnauthorized, "invalid token: bad subject: %v", err)
	}
	if err := validateGrants(c.Channels, c.Publish, c.Presence); err != nil {
		return nil, notify.Errorf(notify.ErrUnauthorized, "invalid token: %v", err)
	}
	if a.cfg.SingleUse != nil {
		if c.ID == "" {
			return nil, notify.Errorf(notify.ErrUnauthorized, "invalid token: single-use tokens need an ID (jti)")
		}
		// Recorded for as long as the parser accepts the token (until
		// exp + Leeway), so that it cannot be replayed at the end of
		// its leeway.
		fresh, err := a.cfg.SingleUse.Use(ctx, c.Issuer+"/"+c.ID, c.ExpiresAt.Add(a.cfg.Leeway))
		if err != nil {
			return nil, notify.Unavailable("token replay check", err)
		}
		if !fresh {
			return nil, notify.Errorf(notify.ErrUnauthorized, "token already used")
		}
	}
	g := &notify.Grants{User: c.Subject, Subscribe: c.Channels, Publish: c.Publish, Presence: c.Presence}
	if c.ExpiresAt != nil {
		g.Expires = c.ExpiresAt.Time
	}
	return g, nil
}

// validateGrants returns the first invalid entry of the grant claims,
// naming the claim.
func validateGrants(channels, publish, presence []string) error {
	for _, claim := range [...]struct {
		name     string
		patterns []string
	}{{"channels", channels}, {"publish", publish}, {"presence", presence}} {
		for _, g := range claim.patterns {
			if err := notify.ValidateGrant(g); err != nil {
				var e *notify.Error
				if errors.As(err, &e) {
					return notify.Errorf(e, "%s: %s", claim.name, e.Message)
				}
				return err
			}
		}
	}
	return nil
}

// key picks the verification key for the token's (already pinned)
// algorithm; a key of another type never verifies it.
func (a *Authenticator) key(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		return a.cfg.Secret, nil
	case *jwt.SigningMethodEd25519:
		var keys jwt.VerificationKeySet
		for _, k := range a.cfg.VerifyKeys {
			if ek, ok := k.(ed25519.PublicKey); ok {
				keys.Keys = append(keys.Keys, ek)
			}
		}
		return keys, nil
	case *jwt.SigningMethodRSA:
		var keys jwt.VerificationKeySet
		for _, k := range a.cfg.VerifyKeys {
			if rk, ok := k.(*rsa.PublicKey); ok {
				keys.Keys = append(keys.Keys, rk)
			}
		}
		return keys, nil
	}
	return nil, fmt.Errorf("unexpected signing method %v", t.Header["alg"])
}

func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable (algorithm not allowed)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing expiry"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	}
	return "rejected"
}
