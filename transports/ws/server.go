package ws

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// maxFrame bounds a coalesced frame; an envelope larger than that goes in a
// frame of its own.
const maxFrame = 128 << 10

// Handler serves WebSocket connections (GET /v1/ws).
type Handler struct {
	cfg wire.Config
}

// NewHandler returns a Handler. cfg.Hub and cfg.Auth are required.
func NewHandler(cfg wire.Config) *Handler {
	cfg.Transport = "ws"
	return &Handler{cfg: cfg.WithDefaults()}
}

// ServeHTTP authenticates and upgrades the request, then returns: the
// connection lives on in its reader goroutine, and its writer runs while
// there is something to write.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !wire.OriginAllowed(r, h.cfg.AllowedOrigins) {
		wire.WriteError(w, notify.Errorf(notify.ErrForbidden, "origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	c := &conn{w: wire.NewWriter()}
	sess, err := wire.Open(r, &h.cfg, "", c.w.Wake)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	ws, err := websocket.Accept(leanHijacker{ResponseWriter: w, conn: &c.nc, writeTimeout: h.cfg.WriteTimeout}, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // the origin was checked above, with our patterns
		CompressionMode:    websocket.CompressionDisabled,
		// Chosen when offered: a client that sends its token as the
		// subprotocol herald.token.<token> offers herald.v1 too.
		Subprotocols: []string{"herald.v1"},
	})
	if err != nil {
		sess.Close(nil) // Accept answered the request
		return
	}
	ws.SetReadLimit(int64(h.cfg.MaxCommandSize))
	c.ws, c.sess = ws, sess
	c.w.Start(sess, c, &writerOptions)
	// The initial channels are subscribed here, on the handler's
	// goroutine, which ends when it returns: subscribing can run deep
	// (through the broker's client), and a goroutine keeps its grown stack
	// until GCs shrink it, by half each. The reader, kept for the
	// connection's life, then only ever reads. The client's first commands
	// wait in the socket meanwhile, so they still run after the initial
	// channels.
	if !sess.SubscribeInitial(context.Background()) {
		sess.Close(nil)
		c.w.Close()
		return
	}
	go c.readLoop()
}

// writerOptions frame envelopes as WebSocket text frames, several per frame
// separated by "\n", each frame's header written in front of its payload.
var writerOptions = wire.WriterOptions{HeaderRoom: maxHeader, MaxFrame: maxFrame, StickyDeadline: true}

// conn is one WebSocket connection: its reader goroutine runs the client's
// commands, its wire.Writer writes the queue.
//
// It holds no context of its own: a context with a Done channel would make
// every websocket Read arm a timer. Reads end when the websocket closes, and
// the session's calls end when its notify.Conn closes.
//
// Data frames are written by the writer straight to the hijacked
// connection, not through websocket.Conn.Write: the library's Write takes
// two channel-based locks (a select each) and copies the frame into its
// write buffer, a fifth of the server's CPU per delivery when every
// delivery is its own write. The library still writes its control frames
// (pongs, pings, close) through its own buffer. The two never interleave
// inside a frame: each of our frames is one Write call on the net.Conn,
// the library flushes each control frame (at most 127 bytes, within its
// buffer) in one Write call, and a net.Conn serializes Write calls whole
// (internal/poll holds the write lock for the whole buffer; crypto/tls
// does the same). TestRawFramesInterleaveWithControlFrames checks it.
type conn struct {
	w    *wire.Writer
	nc   net.Conn        // the hijacked connection; set by Accept, before the writer starts
	ws   *websocket.Conn // set before the writer starts
	sess *wire.Session   // set before the writer starts
}

var _ wire.Output = (*conn)(nil)
var _ wire.Prober = (*conn)(nil)

// Append implements wire.Output: envelopes separated by "\n".
func (c *conn) Append(frame []byte, e *notify.Envelope, n int) []byte {
	if n > 0 {
		frame = append(frame, '\n')
	}
	if e.Type == notify.TypeMessage {
		return append(frame, e.JSON()...) // the hub's encoding, shared by every connection
	}
	return e.AppendJSON(frame) // notices are per connection: encode in place
}

// WriteFrame implements wire.Output: it fills in the text frame's header in
// front of the payload and writes the frame in one Write.
func (c *conn) WriteFrame(frame []byte) error {
	start := putHeader(frame)
	_, err := c.nc.Write(frame[start:])
	return err
}

// SetWriteDeadline implements wire.Output.
func (c *conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// Probe implements wire.Prober: a ping, answered by a pong within timeout.
func (c *conn) Probe(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.ws.Ping(ctx)
}

// End implements wire.Output: it closes the websocket with the code for
// reason; the client leaving, or a failed write, closes it at once.
func (c *conn) End(reason error) {
	code, text, handshake := closeStatus(reason)
	if !handshake {
		_ = c.ws.CloseNow()
		return
	}
	// Close waits (bounded) for the client's close frame, which the
	// reader receives.
	go func() { _ = c.ws.Close(code, text) }()
}

// readLoop runs the client's commands until the connection ends.
func (c *conn) readLoop() {
	defer func() {
		c.sess.Close(nil)
		c.w.Close()
	}()
	ctx := context.Background()
	for {
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			c.sess.Close(nil)
			_ = c.ws.Close(websocket.StatusUnsupportedData, "commands are JSON text frames")
			return
		}
		for len(data) > 0 {
			line := data
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				line, data = data[:i], data[i+1:]
			} else {
				data = nil
			}
			if len(bytes.TrimSpace(line)) > 0 {
				c.sess.Handle(ctx, line)
			}
		}
	}
}
