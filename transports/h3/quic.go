package h3

import (
	"crypto/tls"
	"net/http"
	"time"

	"github.com/heraldhq/herald/transports/wire"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// Flow-control windows for what clients send: commands, a few hundred
// bytes each, at most wire.Config.MaxCommandSize. quic-go allocates nothing
// up front for a window (received data is buffered as it arrives, in pooled
// packet buffers), so the windows do not change what an idle connection
// costs; they bound what one client can make the server buffer. Its
// defaults (512 KiB per stream growing to 6 MiB, 768 KiB per connection
// growing to 15 MiB) are sized for uploads: a client could park megabytes
// in a GET stream whose body nobody reads.
const (
	initialStreamWindow = 16 << 10
	initialConnWindow   = initialStreamWindow * 3 / 2 // quic-go's ratio
)

// QUICConfig is the QUIC configuration a Herald HTTP/3 server uses:
//
//   - KeepAlivePeriod is cfg.Heartbeat: QUIC PINGs keep NAT bindings and
//     proxies open and let the idle timeout below find dead peers. The
//     handler itself sends no heartbeat on HTTP/3.
//   - MaxIdleTimeout is 2×Heartbeat+WriteTimeout: two lost keep-alive
//     rounds and a write's worth of slack (a client may ask for less: the
//     smaller wins). A peer gone silent (a phone that lost coverage, a
//     crashed client) is then closed and its streams' request contexts
//     end.
//   - Allow0RTT is false. 0-RTT requests can be replayed by an attacker;
//     a replayed POST would run its commands (publish) twice, and a replayed
//     token would defeat single-use tokens. The cost is one round trip when
//     a client reconnects.
//   - Receive windows are small (see initialStreamWindow): clients send
//     only commands.
func QUICConfig(cfg wire.Config) *quic.Config {
	cfg = cfg.WithDefaults()
	streamMax := uint64(max(64<<10, 2*cfg.MaxCommandSize))
	return &quic.Config{
		KeepAlivePeriod:                cfg.Heartbeat,
		MaxIdleTimeout:                 2*cfg.Heartbeat + cfg.WriteTimeout,
		Allow0RTT:                      false,
		InitialStreamReceiveWindow:     initialStreamWindow,
		MaxStreamReceiveWindow:         streamMax,
		InitialConnectionReceiveWindow: initialConnWindow,
		MaxConnectionReceiveWindow:     2 * streamMax,
	}
}

// NewServer returns the HTTP/3 server for handler (typically a mux that
// routes /v1/stream to a Handler) with QUICConfig(cfg). Serve it on a UDP
// socket with Serve, or ListenAndServe with Addr set; advertise it from the
// TCP server with SetQUICHeaders (Alt-Svc).
//
// Its IdleTimeout closes QUIC connections that have had no request for
// max(2×Heartbeat, 30s): without it the keep-alive would hold a browser's
// pooled connection open for ever after its stream ended.
//
// tlsCfg needs a certificate; ALPN and TLS 1.3 are set by http3.
func NewServer(handler http.Handler, tlsCfg *tls.Config, cfg wire.Config) *http3.Server {
	logger := cfg.Logger // nil stays nil: quic-go then skips building debug records
	cfg = cfg.WithDefaults()
	return &http3.Server{
		Handler:     handler,
		TLSConfig:   tlsCfg,
		QUICConfig:  QUICConfig(cfg),
		IdleTimeout: max(2*cfg.Heartbeat, 30*time.Second),
		Logger:      logger,
	}
}
