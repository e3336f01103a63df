package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/heraldhq/herald/transports/devcert"
)

// TestCloseClosesEveryDialedConnection: http3 may dial again after a failed
// request and drop the first connection without closing it; a Client made
// with a Dial hook closes every connection the hook returned, and one that
// arrives after Close is closed at once.
func TestCloseClosesEveryDialedConnection(t *testing.T) {
	cert, err := devcert.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h3"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			if _, err := ln.Accept(context.Background()); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tlsCfg := &tls.Config{RootCAs: devcert.Pool(cert), ServerName: "127.0.0.1", NextProtos: []string{"h3"}}
	var d dialedConns
	dial := d.wrap(func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
		return quic.DialAddr(ctx, addr, tlsCfg, cfg)
	})
	quicCfg := &quic.Config{KeepAlivePeriod: time.Second, MaxIdleTimeout: time.Minute}
	var conns []*quic.Conn
	for range 2 { // the first one, then the redial
		conn, err := dial(ctx, ln.Addr().String(), tlsCfg, quicCfg)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	d.closeAll()
	for i, conn := range conns {
		select {
		case <-conn.Context().Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d still open after Close", i)
		}
	}
	if _, err := dial(ctx, ln.Addr().String(), tlsCfg, quicCfg); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial after Close: %v; want net.ErrClosed (and the connection closed)", err)
	}
}
