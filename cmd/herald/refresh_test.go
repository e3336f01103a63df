package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/auth"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/ws"
)

// TestRefreshWithRealTokens: the refresh command through the real
// authenticator. Forged, expired, malformed and other users' tokens are
// refused with a clear error and change nothing; a good one moves the
// connection's expiry past the first token's.
func TestRefreshWithRealTokens(t *testing.T) {
	secret := strings.Repeat("s", 32)
	s := startServer(t, "--token-refresh-grace", "500ms", "--token-leeway", "0")
	first, exp, err := s.auth.Mint(auth.TokenRequest{User: "7", TTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ws.Dial(context.Background(), "ws://"+s.plainAddr+"/v1/ws", ws.DialOptions{Token: first})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	next(t, c, notify.TypeSubscribed)

	other, err := auth.New(auth.Config{Secret: []byte(strings.Repeat("x", 32))})
	if err != nil {
		t.Fatal(err)
	}
	forged, _, _ := other.Mint(auth.TokenRequest{User: "7", TTL: time.Hour})
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, auth.Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: "7", ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute)),
	}}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	bob, _, _ := s.auth.Mint(auth.TokenRequest{User: "8", TTL: time.Hour})
	refused := []struct{ token, code, says string }{
		{forged, notify.ErrUnauthorized.Code, "bad signature"},
		{expired, notify.ErrUnauthorized.Code, "expired"},
		{"not-a-token", notify.ErrUnauthorized.Code, "malformed"},
		{bob, notify.ErrForbidden.Code, "another user"},
	}
	ctx := context.Background()
	for i, r := range refused {
		ref := "r" + string(rune('0'+i))
		if err := c.Send(ctx, wire.Command{Type: wire.CmdRefresh, Token: r.token, Ref: ref}); err != nil {
			t.Fatal(err)
		}
		e := next(t, c, notify.TypeError)
		if e.Ref != ref || e.Code != r.code || !strings.Contains(e.Message, r.says) {
			t.Fatalf("refresh %d answered %s; want %s saying %q", i, e.JSON(), r.code, r.says)
		}
	}
	good, _, _ := s.auth.Mint(auth.TokenRequest{User: "7", TTL: time.Hour})
	if err := c.Send(ctx, wire.Command{Type: wire.CmdRefresh, Token: good, Ref: "ok"}); err != nil {
		t.Fatal(err)
	}
	if e := next(t, c, notify.TypeRefreshed); e.Ref != "ok" {
		t.Fatalf("refreshed %s; want ref ok", e.JSON())
	}
	time.Sleep(time.Until(exp.Add(time.Second)))
	if err := c.Send(ctx, wire.Command{Type: wire.CmdPing, Ref: "p"}); err != nil {
		t.Fatal(err)
	}
	next(t, c, notify.TypePong)
	if n := s.hub.Stats().Dropped[notify.DropTokenExpired]; n != 0 {
		t.Fatalf("%d token_expired drops; want 0", n)
	}
}
