package sse

import (
	"context"
	"crypto/tls"
	"net"
	"syscall"
	"time"

	"github.com/heraldhq/herald/transports/wire"
)

// ConnContext returns an http.Server.ConnContext that tunes every accepted
// TCP connection for cfg (see TuneConn): keep-alive probes every
// cfg.Heartbeat and a TCP user timeout of 2×Heartbeat+WriteTimeout. A
// heartbeat is then unacknowledged for at most that long before the kernel
// drops the connection, which over HTTP/1.1 is the only way to notice a
// peer that vanished without closing (HTTP/2 has pings, QUIC its idle
// timeout). Tuning is best effort: a connection that cannot be tuned is
// served as it is.
//
//	srv := &http.Server{Handler: mux, ConnContext: sse.ConnContext(cfg)}
func ConnContext(cfg wire.Config) func(ctx context.Context, c net.Conn) context.Context {
	cfg = cfg.WithDefaults()
	userTimeout := 2*cfg.Heartbeat + cfg.WriteTimeout
	return func(ctx context.Context, c net.Conn) context.Context {
		_ = TuneConn(c, cfg.Heartbeat, userTimeout)
		return ctx
	}
}

// TuneConn enables TCP keep-alive probes on c after keepAlive of silence
// and sets its TCP user timeout: how long sent data may stay
// unacknowledged before the kernel closes the connection (Linux only;
// elsewhere only keep-alive is set). c is a *net.TCPConn, a *tls.Conn over
// one, or a wrapper with their methods.
func TuneConn(c net.Conn, keepAlive, userTimeout time.Duration) error {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	if k, ok := c.(interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}); ok {
		// Keep-alive covers the moments the handler writes nothing: an
		// idle HTTP/1.1 connection, or HTTP/2 between streams.
		err := k.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: keepAlive, Interval: keepAlive, Count: 3})
		if err != nil {
			return err
		}
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return setUserTimeout(raw, userTimeout)
}
