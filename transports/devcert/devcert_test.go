package devcert

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

func TestLoadOrCreateReuses(t *testing.T) {
	dir := t.TempDir()
	c1, created, err := LoadOrCreate(dir, DefaultHosts)
	if err != nil || !created {
		t.Fatalf("first: created %v err %v", created, err)
	}
	c2, created, err := LoadOrCreate(dir, DefaultHosts)
	if err != nil || created {
		t.Fatalf("second: created %v err %v", created, err)
	}
	if SPKIHash(c1) != SPKIHash(c2) || Fingerprint(c1) != Fingerprint(c2) {
		t.Fatal("the saved certificate was not reused")
	}
	if err := c2.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: Pool(c1), ServerName: "localhost"}
	if _, err := c2.Leaf.Verify(x509Opts(cfg)); err != nil {
		t.Fatalf("certificate does not verify against its own pool: %v", err)
	}
}

func x509Opts(cfg *tls.Config) (o x509.VerifyOptions) {
	o.Roots, o.DNSName = cfg.RootCAs, cfg.ServerName
	return o
}
