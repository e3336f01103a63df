package h3_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/heraldhq/herald/transports/h3"
)

func TestParseTicketKeys(t *testing.T) {
	a, b := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	keys, err := h3.ParseTicketKeys(a + ", " + b)
	if err != nil || len(keys) != 2 || keys[0][0] != 0xab || keys[1][31] != 0xcd {
		t.Fatalf("ParseTicketKeys(two keys) = %x, %v", keys, err)
	}
	for _, bad := range []string{"", a + ",", "," + a, a[:63], a + "0", strings.Repeat("g", 64), a + "," + b[:10]} {
		if _, err := h3.ParseTicketKeys(bad); !errors.Is(err, h3.ErrTicketKey) {
			t.Errorf("ParseTicketKeys(%q): %v; want ErrTicketKey", bad, err)
		}
	}
}

func TestDeriveTicketKey(t *testing.T) {
	secret := []byte("the shared token-signing secret, 32+ bytes")
	a1, err := h3.DeriveTicketKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := h3.DeriveTicketKey(secret)
	b, _ := h3.DeriveTicketKey([]byte("another token-signing secret, 32+ bytes.."))
	reset, _ := h3.DeriveResetKey(secret)
	if a1 != a2 || a1 == b || a1 == *reset {
		t.Errorf("one secret must give one ticket key, two secrets two, and not the reset key: %x %x %x %x", a1, a2, b, *reset)
	}
	if _, err := h3.DeriveTicketKey(nil); err == nil {
		t.Error("DeriveTicketKey(nil): no error")
	}
}
