package auth_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/heraldhq/herald/internal/redistest"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/auth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func newAuth(t testing.TB, cfg auth.Config) *auth.Authenticator {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustUnauthorized(t *testing.T, a *auth.Authenticator, token, why string) {
	t.Helper()
	g, err := a.Verify(context.Background(), token)
	if !errors.Is(err, notify.ErrUnauthorized) {
		t.Fatalf("%s: Verify = %v, %v; want unauthorized", why, g, err)
	}
	if strings.Contains(err.Error(), token) && token != "" {
		t.Fatalf("%s: the error echoes the token", why)
	}
}

func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(user string, exp time.Time) auth.Claims {
	return auth.Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: user, ExpiresAt: jwt.NewNumericDate(exp), IssuedAt: jwt.NewNumericDate(time.Now()), ID: user + "-id",
	}, Channels: []string{"news"}}
}

func TestMintAndVerify(t *testing.T) {
	a := newAuth(t, auth.Config{})
	tok, exp, err := a.Mint(auth.TokenRequest{User: "42", Channels: []string{"news", "dash."}, Publish: []string{"room*"}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d < 58*time.Second || d > time.Minute {
		t.Fatalf("expiry in %v; want about a minute", d)
	}
	g, err := a.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if g.User != "42" || !g.CanSubscribe("dash.sales") || !g.CanSubscribe("user:42") || g.CanSubscribe("user:43") ||
		!g.CanPublish("room.9") || g.CanPublish("news") || g.CanSubscribe("dashboard") {
		t.Fatalf("grants %+v", g)
	}
	for _, bad := range []auth.TokenRequest{
		{User: ""}, {User: "a b"}, {User: "x", Channels: []string{"bad name"}}, {User: "x", TTL: 48 * time.Hour}, {User: "x", TTL: -time.Second},
	} {
		if _, _, err := a.Mint(bad); err == nil {
			t.Errorf("Mint(%+v) succeeded", bad)
		}
	}
}

func TestRejectedTokens(t *testing.T) {
	a := newAuth(t, auth.Config{})
	now := time.Now()
	good := sign(t, jwt.SigningMethodHS256, secret, claims("u1", now.Add(time.Minute)))
	if _, err := a.Verify(context.Background(), good); err != nil {
		t.Fatalf("control token rejected: %v", err)
	}
	parts := strings.Split(good, ".")

	// Forged: same claims, another key.
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), claims("u1", now.Add(time.Minute))), "forged signature")
	// Tampered payload, original signature.
	evil := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":` + itoa(now.Add(time.Hour).Unix()) + `,"channels":["*"]}`))
	mustUnauthorized(t, a, parts[0]+"."+evil+"."+parts[2], "tampered payload")
	// alg none.
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("u1", now.Add(time.Minute)))
	mustUnauthorized(t, a, none, "alg none")
	mustUnauthorized(t, a, strings.TrimSuffix(none, ".")+".", "alg none, empty signature")
	// Another HMAC algorithm with the right secret: not allowed.
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS512, secret, claims("u1", now.Add(time.Minute))), "HS512")
	// Expired, beyond the leeway.
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, secret, claims("u1", now.Add(-time.Minute))), "expired")
	// No expiry at all.
	noExp := claims("u1", now)
	noExp.ExpiresAt = nil
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, secret, noExp), "no expiry")
	// Not valid yet.
	nbf := claims("u1", now.Add(time.Hour))
	nbf.NotBefore = jwt.NewNumericDate(now.Add(10 * time.Minute))
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, secret, nbf), "not before")
	// Bad subject and bad grants.
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, secret, claims("a b", now.Add(time.Minute))), "bad subject")
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, secret, claims("", now.Add(time.Minute))), "no subject")
	bad := claims("u1", now.Add(time.Minute))
	bad.Channels = []string{"x{y}"}
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, secret, bad), "bad channel grant")
	// Garbage.
	for _, g := range []string{"", "x", "a.b.c", "..", strings.Repeat("A", 10000)} {
		mustUnauthorized(t, a, g, "garbage "+g[:min(len(g), 10)])
	}
	// Within the leeway: accepted (exp is whole seconds: 2 to 3s ago).
	skew := sign(t, jwt.SigningMethodHS256, secret, claims("u1", now.Add(-2*time.Second)))
	if _, err := a.Verify(context.Background(), skew); err != nil {
		t.Fatalf("token expired 2s ago (within the 5s leeway) rejected: %v", err)
	}
}

// TestLeewayBoundary: a token minted for one second is accepted until its
// expiry plus the leeway and refused from that instant on. Fake time
// (synctest) puts each Verify at the exact instant, with no real sleep.
func TestLeewayBoundary(t *testing.T) {
	for _, c := range []struct {
		name   string
		leeway time.Duration // Config.Leeway
		want   time.Duration // the leeway in effect
	}{
		{"default", 0, 5 * time.Second},
		{"2s", 2 * time.Second, 2 * time.Second},
		{"none", -1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a := newAuth(t, auth.Config{Leeway: c.leeway})
				tok, exp, err := a.Mint(auth.TokenRequest{User: "u", TTL: time.Second})
				if err != nil {
					t.Fatal(err)
				}
				// The bubble's clock starts on a whole second, so
				// the whole-second exp is exactly the TTL away.
				if d := time.Until(exp); d != time.Second {
					t.Fatalf("expiry in %v; want 1s", d)
				}
				verifyAt(t, a, tok, exp.Add(-time.Nanosecond), "")
				if c.want > 0 {
					verifyAt(t, a, tok, exp.Add(c.want-time.Nanosecond), "")
				}
				verifyAt(t, a, tok, exp.Add(c.want), "expired")
				verifyAt(t, a, tok, exp.Add(c.want+time.Hour), "expired")
			})
		})
	}
}

// TestSingleUseCoversTheLeeway: a single-use token stays recorded for as
// long as it is accepted, so a replay at the last instant of its leeway is
// refused as a replay.
func TestSingleUseCoversTheLeeway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newAuth(t, auth.Config{Leeway: 2 * time.Second, SingleUse: auth.NewMemoryReplay()})
		tok, exp, err := a.Mint(auth.TokenRequest{User: "u", TTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		verifyAt(t, a, tok, time.Now(), "")
		verifyAt(t, a, tok, exp.Add(2*time.Second-time.Nanosecond), "already used")
		verifyAt(t, a, tok, exp.Add(2*time.Second), "expired")
	})
}

// verifyAt sleeps (in a synctest bubble) until at and verifies tok there:
// it must pass if refusal is empty, else fail as unauthorized with a
// message containing refusal.
func verifyAt(t *testing.T, a *auth.Authenticator, tok string, at time.Time, refusal string) {
	t.Helper()
	time.Sleep(time.Until(at))
	if !time.Now().Equal(at) {
		t.Fatalf("the clock is at %v; want %v (not in a synctest bubble?)", time.Now(), at)
	}
	_, err := a.Verify(context.Background(), tok)
	switch {
	case refusal == "" && err != nil:
		t.Fatalf("at %v: refused: %v; want accepted", at, err)
	case refusal != "" && (!errors.Is(err, notify.ErrUnauthorized) || !strings.Contains(err.Error(), refusal)):
		t.Fatalf("at %v: Verify err = %v; want unauthorized, %q", at, err, refusal)
	}
}

// A team's own backend can mint tokens with its private key; Herald verifies
// them with the public key. Algorithm confusion — an HS256 token whose HMAC
// key is the public key — must fail.
func TestTeamMintedTokens(t *testing.T) {
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	rsaPriv, _ := rsa.GenerateKey(rand.Reader, 2048)
	a := newAuth(t, auth.Config{VerifyKeys: []crypto.PublicKey{edPub, &rsaPriv.PublicKey}})
	exp := time.Now().Add(time.Minute)
	for name, tok := range map[string]string{
		"EdDSA": sign(t, jwt.SigningMethodEdDSA, edPriv, claims("e1", exp)),
		"RS256": sign(t, jwt.SigningMethodRS256, rsaPriv, claims("r1", exp)),
	} {
		if _, err := a.Verify(context.Background(), tok); err != nil {
			t.Errorf("%s token rejected: %v", name, err)
		}
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaPriv.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, pubPEM, claims("r1", exp)), "HS256 keyed with the RSA public key")
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, []byte(edPub), claims("e1", exp)), "HS256 keyed with the Ed25519 public key")
	otherPub, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	_ = otherPub
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodEdDSA, otherPriv, claims("e1", exp)), "EdDSA with an unknown key")
	// Without verify keys, EdDSA is not even an allowed algorithm.
	plain := newAuth(t, auth.Config{})
	mustUnauthorized(t, plain, sign(t, jwt.SigningMethodEdDSA, edPriv, claims("e1", exp)), "EdDSA without verify keys")
}

func TestSingleUseAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	a1 := newAuth(t, auth.Config{SingleUse: &auth.RedisReplay{Client: rdb}})
	a2 := newAuth(t, auth.Config{SingleUse: &auth.RedisReplay{Client: rdb}})
	tok, _, err := a1.Mint(auth.TokenRequest{User: "7"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a2.Verify(context.Background(), tok); err != nil {
		t.Fatalf("first use on instance 2: %v", err)
	}
	mustUnauthorized(t, a1, tok, "replay on instance 1")
	mustUnauthorized(t, a2, tok, "replay on instance 2")
	ttl := rdb.TTL(context.Background(), "herald:jti:/"+jtiOf(t, tok)).Val()
	if ttl <= 0 || ttl > 11*time.Minute {
		t.Fatalf("recorded ID expires in %v; want about the token's 10m (+leeway)", ttl)
	}
	// Redis down: the check fails closed, as unavailable.
	srv.Kill()
	tok2, _, _ := a1.Mint(auth.TokenRequest{User: "7"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := a1.Verify(ctx, tok2); !errors.Is(err, notify.ErrUnavailable) {
		t.Fatalf("Redis down: %v; want unavailable", err)
	}
}

func TestSingleUseInMemory(t *testing.T) {
	a := newAuth(t, auth.Config{SingleUse: auth.NewMemoryReplay()})
	tok, _, _ := a.Mint(auth.TokenRequest{User: "7"})
	if _, err := a.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	mustUnauthorized(t, a, tok, "replay")
	noID := claims("7", time.Now().Add(time.Minute))
	noID.ID = ""
	mustUnauthorized(t, a, sign(t, jwt.SigningMethodHS256, secret, noID), "single-use token without jti")
}

func TestAPIKeys(t *testing.T) {
	if _, err := auth.New(auth.Config{Secret: secret, APIKeys: []string{"short"}}); err == nil {
		t.Fatal("a short API key was accepted")
	}
	if _, err := auth.New(auth.Config{Secret: []byte("short")}); err == nil {
		t.Fatal("a short secret was accepted")
	}
	a := newAuth(t, auth.Config{APIKeys: []string{"key-0123456789abcdef", "key-fedcba9876543210"}})
	if !a.CheckAPIKey("key-fedcba9876543210") || a.CheckAPIKey("key-0123456789abcdeX") || a.CheckAPIKey("") {
		t.Fatal("API key check wrong")
	}
}

func FuzzVerify(f *testing.F) {
	a := newAuth(f, auth.Config{})
	good, _, _ := a.Mint(auth.TokenRequest{User: "1"})
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		g, err := a.Verify(context.Background(), tok)
		if err == nil && tok != good {
			// Only a token signed with the secret may pass: the fuzzer
			// cannot forge HMAC, so anything else passing is a bug.
			t.Fatalf("accepted %q as %+v", tok, g)
		}
		if err != nil && !errors.Is(err, notify.ErrUnauthorized) {
			t.Fatalf("error of the wrong kind: %v", err)
		}
	})
}

func jtiOf(t *testing.T, tok string) string {
	var c auth.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

func itoa(n int64) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

func TestPresenceClaim(t *testing.T) {
	a := newAuth(t, auth.Config{})
	tok, _, err := a.Mint(auth.TokenRequest{User: "42", Channels: []string{"room."}, Presence: []string{"room.", "lobby"}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	g, err := a.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !g.CanPresence("room.1") || !g.CanPresence("lobby") || g.CanPresence("news") || g.CanPresence("user:42") {
		t.Fatalf("presence grants %v", g.Presence)
	}
	if err := g.CheckPresence("news"); !errors.Is(err, notify.ErrForbidden) {
		t.Fatalf("CheckPresence(news) = %v; want forbidden", err)
	}
	// A bad entry is refused when minting, naming the claim…
	_, _, err = a.Mint(auth.TokenRequest{User: "42", Presence: []string{"bad name"}})
	if !errors.Is(err, notify.ErrInvalidChannel) || !strings.Contains(err.Error(), "presence") {
		t.Fatalf("Mint with a bad presence grant: %v; want invalid_channel naming the claim", err)
	}
	// …and in a token minted elsewhere.
	bad := claims("u1", time.Now().Add(time.Minute))
	bad.Presence = []string{"x{y}"}
	tok = sign(t, jwt.SigningMethodHS256, secret, bad)
	mustUnauthorized(t, a, tok, "bad presence grant")
	if _, err := a.Verify(context.Background(), tok); !strings.Contains(err.Error(), "presence") {
		t.Fatalf("the error does not name the claim: %v", err)
	}
}
