package main

import (
	"strings"
	"testing"
)

// TestQUICResetKeyFlag: --quic-reset-key (HERALD_QUIC_RESET_KEY) must be
// 64 hexadecimal digits; anything else is refused with an error naming
// the flag, before any listener is bound. Without it the key is derived
// from --secret: instances sharing the secret share the key.
func TestQUICResetKeyFlag(t *testing.T) {
	good := strings.Repeat("ab", 32)
	for _, bad := range []string{"short", good[:63], good + "0", strings.Repeat("g", 64)} {
		_, err := serveFlags([]string{"--quic-reset-key", bad})
		if err == nil || !strings.Contains(err.Error(), "--quic-reset-key") || !strings.Contains(err.Error(), "64 hexadecimal digits") {
			t.Errorf("--quic-reset-key %q: err = %v; want a clear error naming the flag", bad, err)
		}
	}
	t.Setenv("HERALD_QUIC_RESET_KEY", "not-a-key")
	if _, err := serveFlags(nil); err == nil || !strings.Contains(err.Error(), "--quic-reset-key") {
		t.Errorf("HERALD_QUIC_RESET_KEY=not-a-key: err = %v; want a refusal", err)
	}
	t.Setenv("HERALD_QUIC_RESET_KEY", good)
	cfg, err := serveFlags(nil)
	if err != nil || cfg.quicResetKey != good {
		t.Fatalf("HERALD_QUIC_RESET_KEY=%s: %q, %v", good, cfg.quicResetKey, err)
	}
	k, err := quicResetKey(good, []byte("ignored when the flag is set...."))
	if err != nil || k[0] != 0xab || k[31] != 0xab {
		t.Errorf("quicResetKey(flag): %x, %v", k, err)
	}
	secret := []byte(strings.Repeat("s", 32))
	a, _ := quicResetKey("", secret)
	b, _ := quicResetKey("", secret)
	c, _ := quicResetKey("", []byte(strings.Repeat("t", 32)))
	if a == nil || *a != *b || *a == *c {
		t.Errorf("derived keys: one secret must give one key, two secrets two: %x %x %x", a, b, c)
	}
}

// TestTLSTicketKeyFlag: --tls-ticket-key (HERALD_TLS_TICKET_KEY) is a
// comma-separated list of 64-hex-digit keys; anything else is refused
// with an error naming the flag. Without it one key is derived from
// --secret: instances sharing the secret resume each other's sessions.
func TestTLSTicketKeyFlag(t *testing.T) {
	a, b := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	for _, bad := range []string{"short", a[:63], a + ",", a + ",zz", strings.Repeat("g", 64)} {
		_, err := serveFlags([]string{"--tls-ticket-key", bad})
		if err == nil || !strings.Contains(err.Error(), "--tls-ticket-key") || !strings.Contains(err.Error(), "64 hexadecimal digits") {
			t.Errorf("--tls-ticket-key %q: err = %v; want a clear error naming the flag", bad, err)
		}
	}
	t.Setenv("HERALD_TLS_TICKET_KEY", "not-a-key")
	if _, err := serveFlags(nil); err == nil || !strings.Contains(err.Error(), "--tls-ticket-key") {
		t.Errorf("HERALD_TLS_TICKET_KEY=not-a-key: err = %v; want a refusal", err)
	}
	t.Setenv("HERALD_TLS_TICKET_KEY", a+","+b)
	cfg, err := serveFlags(nil)
	if err != nil || cfg.tlsTicketKeys != a+","+b {
		t.Fatalf("HERALD_TLS_TICKET_KEY=%s,%s: %q, %v", a, b, cfg.tlsTicketKeys, err)
	}
	keys, err := tlsTicketKeys(cfg.tlsTicketKeys, []byte("ignored when the flag is set...."))
	if err != nil || len(keys) != 2 || keys[0][0] != 0xab || keys[1][0] != 0xcd {
		t.Errorf("tlsTicketKeys(flag): %x, %v", keys, err)
	}
	secret := []byte(strings.Repeat("s", 32))
	k1, _ := tlsTicketKeys("", secret)
	k2, _ := tlsTicketKeys("", secret)
	k3, _ := tlsTicketKeys("", []byte(strings.Repeat("t", 32)))
	if len(k1) != 1 || k1[0] != k2[0] || k1[0] == k3[0] {
		t.Errorf("derived keys: one secret must give one key, two secrets two: %x %x %x", k1, k2, k3)
	}
}
