package h3

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// resetKeyLabel is the HKDF info that derives a stateless-reset key from a
// shared secret: a fixed label, so that every instance given the same
// secret derives the same key, and the key reveals nothing usable about the
// secret (tokens are signed with the secret itself).
const resetKeyLabel = "herald quic stateless reset key v1"

// ErrResetKey is returned by ParseResetKey for a value that is not 64
// hexadecimal digits.
var ErrResetKey = errors.New("h3: a QUIC reset key is 32 bytes written as 64 hexadecimal digits")

// ParseResetKey parses a stateless-reset key written as 64 hexadecimal
// digits (32 bytes, e.g. `openssl rand -hex 32`).
func ParseResetKey(s string) (*quic.StatelessResetKey, error) {
	b, err := parseKey32(s)
	if err != nil {
		return nil, fmt.Errorf("%w (got %d characters)", ErrResetKey, len(strings.TrimSpace(s)))
	}
	k := quic.StatelessResetKey(b)
	return &k, nil
}

// DeriveResetKey derives a stateless-reset key from a secret every instance
// shares (the token-signing secret): HKDF-SHA256 with a fixed label.
func DeriveResetKey(secret []byte) (*quic.StatelessResetKey, error) {
	b, err := deriveKey32(secret, resetKeyLabel)
	if err != nil {
		return nil, fmt.Errorf("h3: deriving a QUIC reset key: %w", err)
	}
	k := quic.StatelessResetKey(b)
	return &k, nil
}

// parseKey32 parses 32 bytes written as 64 hexadecimal digits.
func parseKey32(s string) ([32]byte, error) {
	var k [32]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, errors.New("not 64 hexadecimal digits")
	}
	copy(k[:], b)
	return k, nil
}

// deriveKey32 derives 32 bytes from secret for the purpose label names
// (HKDF-SHA256): one secret, one key per label, and no key says anything
// usable about the secret or about another label's key.
func deriveKey32(secret []byte, label string) ([32]byte, error) {
	var k [32]byte
	if len(secret) == 0 {
		return k, errors.New("the secret is empty")
	}
	b, err := hkdf.Key(sha256.New, secret, nil, label, len(k))
	if err != nil {
		return k, err
	}
	copy(k[:], b)
	return k, nil
}

// Listener is a QUIC listener for an http3.Server (ServeListener) whose
// transport answers packets of connections it does not know with a
// stateless reset.
//
// A client whose server process died keeps sending to the same address;
// without a reset key the next process on that port (a restart, or another
// instance behind the same UDP address of a load balancer) drops those
// packets silently, and the client waits for its idle timeout. With the
// key the old connections' reset tokens were derived from, it answers
// each such packet with a stateless reset, and the client closes the
// connection at once (quic.StatelessResetError) and reconnects.
type Listener struct {
	*quic.EarlyListener
	tr *quic.Transport
}

// Listen makes a QUIC listener on conn with QUICConfig(cfg) whose
// connections carry reset tokens derived from key (nil: no stateless
// resets, as quic-go's default). tlsCfg needs a certificate; ALPN h3 is
// set. Closing the Listener closes its transport, not conn.
func Listen(conn net.PacketConn, tlsCfg *tls.Config, cfg wire.Config, key *quic.StatelessResetKey) (*Listener, error) {
	return ListenQUIC(conn, tlsCfg, QUICConfig(cfg), key)
}

// ListenQUIC is Listen with the QUIC configuration given (a server that
// shares the port with WebTransport needs QUICConfig(cfg) with datagrams
// and partial-delivery resets on: wt.QUICConfig).
func ListenQUIC(conn net.PacketConn, tlsCfg *tls.Config, qcfg *quic.Config, key *quic.StatelessResetKey) (*Listener, error) {
	tr := &quic.Transport{Conn: conn, StatelessResetKey: key}
	ln, err := tr.ListenEarly(http3.ConfigureTLSConfig(tlsCfg), qcfg)
	if err != nil {
		_ = tr.Close()
		return nil, err
	}
	return &Listener{EarlyListener: ln, tr: tr}, nil
}

// Close stops accepting and closes the transport: its connections end.
func (l *Listener) Close() error {
	err := l.EarlyListener.Close()
	return errors.Join(err, l.tr.Close())
}
