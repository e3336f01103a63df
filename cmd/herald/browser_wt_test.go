package main

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/heraldhq/herald/transports/devcert"
)

// TestBrowserWebTransportCertificateHash: Chromium, not told to trust the
// development certificate (no --ignore-certificate-errors-spki-list), opens
// a WebTransport session to the TLS port when herald.js passes the
// certificate's SHA-256 hash (serverCertificateHashes: the development
// certificate is ECDSA P-256 and valid for 13 days, under the 14 browsers
// accept), and receives; the same client without the hash cannot open one
// and falls back to WebSocket (which cannot connect either: the test only
// checks the fallback). The page is the plain listener's (http://127.0.0.1
// is a secure context), another origin than the TLS port: it must be in
// --allowed-origins, or the CONNECT is refused with 403, which Chromium
// reports as net::ERR_QUIC_PROTOCOL_ERROR.
func TestBrowserWebTransportCertificateHash(t *testing.T) {
	s := startServer(t, "--allowed-origins", "http://127.0.0.1:*")
	cert, _, err := devcert.LoadOrCreate(s.cfg.certDir, devcert.DefaultHosts)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	tab := launchBrowser(t, s, false)
	tab.do(t, "open a page of the plain listener", chromedp.Navigate(s.url("/healthz")))
	tok := mint(t, s, "7", []string{"news"}, nil)
	start := func(name string, withHash bool) string {
		hashes := "undefined"
		if withHash {
			hashes = fmt.Sprintf(`[{algorithm: "sha-256", value: Uint8Array.from(atob(%s), (c) => c.charCodeAt(0))}]`, jsString(base64.StdEncoding.EncodeToString(sum[:])))
		}
		return fmt.Sprintf(`import("/herald.js").then(({ Herald }) => {
			const c = new Herald({ url: %s, transport: "webtransport", token: %s, channels: ["news"],
				serverCertificateHashes: %s, backoff: { min: 100, max: 500, factor: 2 } });
			window[%s] = { c, got: [], causes: [] };
			c.on("message", (m) => window[%s].got.push(m.id));
			c.on("state", (st) => st.cause && window[%s].causes.push(st.cause.message));
			c.connect();
			return "started";
		})`, jsString("https://"+s.tlsAddr+"/"), jsString(tok), hashes, jsString(name), jsString(name), jsString(name))
	}
	tab.evalAsync(t, start("hashed", true))
	tab.waitFor(t, "a WebTransport session trusted by hash", `window.hashed && window.hashed.c.state === "connected"`)
	if active := tab.eval(t, `hashed.c.activeTransport`); active != "webtransport" {
		t.Fatalf("the client with the certificate hash runs on %q (causes %s)", active, tab.eval(t, `JSON.stringify(hashed.causes)`))
	}
	id := publish(t, s, testAPIKey, "news", `{"text":"hashed"}`)
	tab.waitFor(t, "the message over WebTransport", `hashed.got.includes(`+jsString(id)+`)`)

	tab.evalAsync(t, start("plain", false))
	tab.waitFor(t, "the client without the hash to fall back", `window.plain && window.plain.c.activeTransport === "ws"`)
	t.Logf("without the hash: %s", tab.eval(t, `JSON.stringify(plain.causes.slice(0, 1))`))
}
