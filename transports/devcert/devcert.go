// Package devcert makes the self-signed development certificate that
// `herald serve` uses when no certificate is configured (TLS for HTTP/2 and
// HTTP/3), and that tests use.
package devcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Generate returns a self-signed ECDSA P-256 certificate for hosts (names or
// IP addresses), valid from an hour ago for validity. Browsers cap the
// validity of certificates they are asked to trust by hash at 14 days.
func Generate(hosts []string, validity time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Herald development"}, CommonName: "herald-dev"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	)
}

// DefaultHosts are the names a development certificate covers.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// LoadOrCreate returns the development certificate kept in dir (cert.pem,
// key.pem), generating and saving a new one if there is none or it expires
// within a day. created reports whether it was generated.
func LoadOrCreate(dir string, hosts []string) (cert tls.Certificate, created bool, err error) {
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err == nil && cert.Leaf != nil && time.Until(cert.Leaf.NotAfter) > 24*time.Hour {
		return cert, false, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, false, fmt.Errorf("devcert: %w", err)
	}
	cert, err = Generate(hosts, 13*24*time.Hour)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, false, err
	}
	keyDER, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		return tls.Certificate{}, false, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return tls.Certificate{}, false, err
	}
	return cert, true, nil
}

// SPKIHash is base64(sha256(SubjectPublicKeyInfo)) of the leaf: the value
// Chromium's --ignore-certificate-errors-spki-list takes.
func SPKIHash(cert tls.Certificate) string {
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return ""
		}
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Fingerprint is the SHA-256 fingerprint of the leaf certificate, as
// browsers show it.
func Fingerprint(cert tls.Certificate) string {
	sum := sha256.Sum256(cert.Certificate[0])
	s := ""
	for i, b := range sum {
		if i > 0 {
			s += ":"
		}
		s += fmt.Sprintf("%02X", b)
	}
	return s
}

// Pool returns a cert pool trusting cert, for clients.
func Pool(cert tls.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
		pool.AddCert(leaf)
	}
	return pool
}
