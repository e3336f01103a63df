package h3

import (
	"errors"
	"fmt"
	"strings"
)

// ticketKeyLabel is the HKDF info that derives a TLS session ticket key
// from a shared secret (see resetKeyLabel).
const ticketKeyLabel = "herald tls session ticket key v1"

// ErrTicketKey is returned by ParseTicketKeys for a list that is empty or
// holds a key that is not 64 hexadecimal digits.
var ErrTicketKey = errors.New("h3: TLS session ticket keys are 32 bytes each, written as 64 hexadecimal digits, comma-separated")

// ParseTicketKeys parses TLS session ticket keys written as 64
// hexadecimal digits each, comma-separated (e.g. `openssl rand -hex 32`):
// the form tls.Config.SetSessionTicketKeys takes. The first key encrypts
// new tickets; every key decrypts. To rotate without losing the tickets
// clients hold, put the new key first and keep the old one after it until
// the old tickets have expired (7 days, crypto/tls's lifetime), on every
// instance.
func ParseTicketKeys(s string) ([][32]byte, error) {
	var keys [][32]byte
	for i, part := range strings.Split(s, ",") {
		k, err := parseKey32(part)
		if err != nil {
			return nil, fmt.Errorf("%w (key %d: got %d characters)", ErrTicketKey, i+1, len(strings.TrimSpace(part)))
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// DeriveTicketKey derives a TLS session ticket key from a secret every
// instance shares (the token-signing secret): HKDF-SHA256 with a fixed
// label, distinct from the reset key's.
//
// Instances that share the ticket key resume each other's TLS sessions: a
// client reconnecting to any of them (after a failover, say) skips the
// certificate signature and its verification. Whoever holds the key can
// decrypt tickets and so impersonate the server to a client holding one,
// for the ticket's life: it is as secret as the certificate's key.
func DeriveTicketKey(secret []byte) ([32]byte, error) {
	k, err := deriveKey32(secret, ticketKeyLabel)
	if err != nil {
		return k, fmt.Errorf("h3: deriving a TLS session ticket key: %w", err)
	}
	return k, nil
}
