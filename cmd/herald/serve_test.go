package main

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/heraldhq/herald/notify/auth"
)

// TestTokenLeewayFlag: --token-leeway (HERALD_TOKEN_LEEWAY) defaults to a
// few seconds; a negative value or one that is not a duration is refused
// with an error naming the flag.
func TestTokenLeewayFlag(t *testing.T) {
	cfg, err := serveFlags(nil)
	if err != nil || cfg.tokenLeeway != 5*time.Second {
		t.Fatalf("default: %v, %v; want 5s", cfg.tokenLeeway, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--token-leeway", "-1s"}, "--token-leeway must not be negative"},
		{[]string{"--token-leeway", "soon"}, "token-leeway"},
		{[]string{"--token-leeway", "5"}, "token-leeway"}, // a duration needs a unit
	} {
		if _, err := serveFlags(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v: err = %v; want one containing %q", c.args, err, c.want)
		}
	}
	t.Setenv("HERALD_TOKEN_LEEWAY", "soon")
	if _, err := serveFlags(nil); err == nil || !strings.Contains(err.Error(), "HERALD_TOKEN_LEEWAY") {
		t.Errorf("HERALD_TOKEN_LEEWAY=soon: err = %v; want one naming the variable", err)
	}
	t.Setenv("HERALD_TOKEN_LEEWAY", "2s")
	if cfg, err := serveFlags(nil); err != nil || cfg.tokenLeeway != 2*time.Second {
		t.Errorf("HERALD_TOKEN_LEEWAY=2s: %v, %v", cfg.tokenLeeway, err)
	}
	if cfg, err := serveFlags([]string{"--token-leeway", "0"}); err != nil || cfg.tokenLeeway != 0 {
		t.Errorf("--token-leeway 0 over the variable: %v, %v", cfg.tokenLeeway, err)
	}
}

// TestTokenLeewayReachesVerify: a token that expired a second or two ago is
// accepted within the default leeway and refused with --token-leeway 0.
func TestTokenLeewayReachesVerify(t *testing.T) {
	lenient := startServer(t, "--tls-addr", "")
	strict := startServer(t, "--tls-addr", "", "--token-leeway", "0")
	expired := func() string {
		now := time.Now()
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, auth.Claims{RegisteredClaims: jwt.RegisteredClaims{
			Subject:   "u",
			IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
			ExpiresAt: jwt.NewNumericDate(now.Add(-time.Second)), // whole seconds: 1 to 2s ago
		}}).SignedString([]byte(strings.Repeat("s", 32)))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if st := call(t, "GET", lenient.url("/v1/history?channel=user:u"), expired(), nil, nil); st != 200 {
		t.Errorf("default leeway: status %d for a token expired 1-2s ago; want 200", st)
	}
	if st := call(t, "GET", strict.url("/v1/history?channel=user:u"), expired(), nil, nil); st != 401 {
		t.Errorf("--token-leeway 0: status %d for an expired token; want 401", st)
	}
}
