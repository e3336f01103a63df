package h3_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/connmem"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/devcert"
	"github.com/heraldhq/herald/transports/h3"
	"github.com/heraldhq/herald/transports/wire"
)

var (
	memConns   = flag.Int("memconns", 1000, "connections for BenchmarkIdleMemory")
	memDuplex  = flag.Bool("memduplex", false, "BenchmarkIdleMemory: POST (duplex) streams instead of GET")
	memProfile = flag.String("memprofile-child", "", "write the server child's heap profile here")
	memFloor   = flag.Bool("memfloor", false, "BenchmarkIdleMemory: serve a handler that only holds the stream open, to measure what quic-go and http3 cost alone")
)

// floorEnv tells the child to serve the floor handler.
const floorEnv = "HERALD_H3_MEMFLOOR"

// childInfo is how the parent finds the child's HTTP/3 server: connmem
// serves the child's HTTP over TCP, where /h3 tells the UDP address and
// the certificate to trust.
type childInfo struct {
	Addr string `json:"addr"`
	Cert []byte `json:"cert"` // DER
}

func TestMain(m *testing.M) {
	connmem.ServeChild(serveH3Child)
	os.Exit(m.Run())
}

// serveH3Child runs in the child: an HTTP/3 server on a loopback UDP
// socket, each client its own user (the user query parameter).
func serveH3Child() http.Handler {
	runtime.MemProfileRate = 512 // a precise profile of the connections for -memprofile-child
	b := notify.NewMemoryBroker(notify.MemoryConfig{})
	hub := notify.NewHub(b, notify.HubConfig{MaxConnsPerUser: -1})
	auth := wire.AuthFunc(func(r *http.Request) (*notify.Grants, error) {
		return &notify.Grants{User: r.URL.Query().Get("user")}, nil
	})
	cfg := wire.Config{Hub: hub, Auth: auth}
	cert, err := devcert.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		panic(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/stream", h3.NewHandler(cfg))
	if os.Getenv(floorEnv) != "" {
		mux = http.NewServeMux()
		mux.HandleFunc("/v1/stream", floorHandler)
	}
	srv := h3.NewServer(mux, &tls.Config{Certificates: []tls.Certificate{cert}}, cfg)
	go func() { _ = srv.Serve(udp) }() // until the parent kills the child
	info, _ := json.Marshal(childInfo{Addr: udp.LocalAddr().String(), Cert: cert.Certificate[0]})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(info) })
}

// BenchmarkIdleMemory opens -memconns idle HTTP/3 streams (each client its
// own QUIC connection and user, subscribed to its personal channel) to a
// server in a child process, and reports the memory per connection of the
// server (bytes/conn: heap + stacks after GC) and of the clients in this
// process (client-bytes/conn). Run it with -benchtime=1x:
//
//	go test -run '^$' -bench IdleMemory -benchtime 1x ./transports/h3/ [-memconns 2000] [-memduplex] [-memprofile-child heap.out]
func BenchmarkIdleMemory(b *testing.B) {
	if *memFloor {
		b.Setenv(floorEnv, "1")
	}
	child := connmem.StartChild(b)
	info := fetchChildInfo(b, child.Addr)
	leaf, err := x509.ParseCertificate(info.Cert)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)

	before, clientBefore := child.Stats(b), connmem.Read()
	clients := make([]*h3.Client, 0, *memConns)
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	ctx := context.Background()
	for i := 0; i < *memConns; i++ {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := h3.Dial(dctx, "https://"+info.Addr+"/v1/stream?user=u"+strconv.Itoa(i), h3.DialOptions{
			TLSConfig: &tls.Config{RootCAs: pool}, Duplex: *memDuplex,
		})
		cancel()
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		clients = append(clients, c)
	}
	// Each client reads its subscribed notice: the stream is set up, its
	// first write done, and idle from then on.
	for _, c := range clients {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		e, err := c.Read(rctx)
		cancel()
		if err != nil || e.Type != notify.TypeSubscribed {
			b.Fatalf("read: %v %v", e, err)
		}
	}
	time.Sleep(time.Second)
	// Each Stats is two GCs; a GC shrinks a goroutine's stack by half at
	// most, so the first ones still count the stacks the handshake grew. A
	// long-lived idle connection sees many GCs.
	child.Stats(b)
	child.Stats(b)
	after, clientAfter := child.Stats(b), connmem.Read()
	if *memProfile != "" {
		child.HeapProfile(b, *memProfile)
	}
	server := connmem.Per(before, after, len(clients))
	client := connmem.Per(clientBefore, clientAfter, len(clients))
	server.ReportTo(b)
	b.ReportMetric(client.GoBytesPerConn, "client-bytes/conn")
	b.Logf("duplex %v, floor %v\nserver: %v\nclient: %v", *memDuplex, *memFloor, server, client)
}

// floorHandler holds a stream open and does nothing else: an HTTP/3
// server's cost per connection before any of Herald's.
func floorHandler(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(`{"type":"subscribed"}` + "\n"))
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

func fetchChildInfo(b *testing.B, addr string) childInfo {
	resp, err := http.Get("http://" + addr + "/h3")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var info childInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		b.Fatal(fmt.Errorf("child info: %w", err))
	}
	return info
}
