package wt_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/connmem"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
	"github.com/heraldhq/herald/transports/wt"
)

var memConns = flag.Int("memconns", 1000, "sessions for BenchmarkIdleMemory")

// childInfo is how the parent finds the child's QUIC server.
type childInfo struct {
	Addr string `json:"addr"`
	Cert []byte `json:"cert"` // DER
}

func TestMain(m *testing.M) {
	connmem.ServeChild(serveChild)
	os.Exit(m.Run())
}

// serveChild runs in the child: a wt.Server on a loopback UDP socket, each
// client its own user (the user query parameter).
func serveChild() http.Handler {
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	hub := notify.NewHub(b, notify.HubConfig{MaxConnsPerUser: -1})
	cfg := wire.Config{Hub: hub, Auth: wire.AuthFunc(func(r *http.Request) (*notify.Grants, error) {
		return &notify.Grants{User: r.URL.Query().Get("user")}, nil
	})}
	cert, err := devcert.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		panic(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		panic(err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	srv := wt.NewServer(wtMux(wt.NewHandler(cfg)), tlsCfg, cfg)
	ln, err := h3.ListenQUIC(udp, tlsCfg, wt.QUICConfig(cfg), nil)
	if err != nil {
		panic(err)
	}
	go func() { _ = srv.ServeListener(ln) }() // until the parent kills the child
	info, _ := json.Marshal(childInfo{Addr: udp.LocalAddr().String(), Cert: cert.Certificate[0]})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(info) })
}

// BenchmarkIdleMemory opens -memconns idle WebTransport sessions (each
// client its own QUIC connection and user, subscribed to its personal
// channel) to a server in a child process and reports the server's memory
// per session (bytes/conn: heap and stacks after GC). Run it with
// -benchtime=1x:
//
//	go test -run '^$' -bench IdleMemory -benchtime 1x ./transports/wt/ [-memconns 2000]
func BenchmarkIdleMemory(b *testing.B) {
	child := connmem.StartChild(b)
	resp, err := http.Get("http://" + child.Addr + "/")
	if err != nil {
		b.Fatal(err)
	}
	var info childInfo
	err = json.NewDecoder(resp.Body).Decode(&info)
	_ = resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(info.Cert)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)

	before := child.Stats(b)
	clients := make([]*wt.Client, 0, *memConns)
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	for i := 0; i < *memConns; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := wt.Dial(ctx, "https://"+info.Addr+"/v1/wt?user=u"+strconv.Itoa(i), wt.DialOptions{TLSConfig: &tls.Config{RootCAs: pool}})
		if err == nil {
			var e *notify.Envelope
			if e, err = c.Read(ctx); err == nil && e.Type != notify.TypeSubscribed {
				err = nil
			}
		}
		cancel()
		if err != nil {
			b.Fatalf("session %d: %v", i, err)
		}
		clients = append(clients, c)
	}
	time.Sleep(time.Second)
	child.Stats(b) // stacks the handshakes grew shrink over GCs
	child.Stats(b)
	server := connmem.Per(before, child.Stats(b), len(clients))
	server.ReportTo(b)
	b.Logf("server: %v", server)
}
