package ws

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
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
// connection lives on in its reader goroutine.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !wire.OriginAllowed(r, h.cfg.AllowedOrigins) {
		wire.WriteError(w, notify.Errorf(notify.ErrForbidden, "origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	c := &conn{h: h}
	sess, err := wire.Open(r, &h.cfg, "", c.wake)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	ws, err := websocket.Accept(leanHijacker{ResponseWriter: w, conn: &c.nc}, r, &websocket.AcceptOptions{
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
	c.mu.Lock()
	c.ws, c.sess = ws, sess
	c.heartbeat = time.AfterFunc(h.cfg.Heartbeat, c.beat)
	c.mu.Unlock()
	c.wake() // flush anything queued before the upgrade (a drain's advice)
	go c.readLoop()
}

// conn is one WebSocket connection.
//
// It holds no context of its own: a context with a Done channel would make
// every websocket Read arm a timer. Reads end when the websocket closes, and
// the session's calls end when its notify.Conn closes.
type conn struct {
	h         *Handler
	heartbeat *time.Timer
	nc        net.Conn // the hijacked connection; set by Accept, before the writer runs

	mu      sync.Mutex
	ws      *websocket.Conn // nil until the upgrade; guarded by mu
	sess    *wire.Session   // guarded by mu
	writing bool            // a writer goroutine runs; guarded by mu
	again   bool            // woken while writing: drain once more; guarded by mu
	ended   bool            // the websocket is closed; guarded by mu
}

// wake is the notify.Conn's wake-up: it starts the writer unless one runs.
func (c *conn) wake() {
	c.mu.Lock()
	if c.writing || c.ws == nil || c.ended {
		c.again = true
		c.mu.Unlock()
		return
	}
	c.writing, c.again = true, false
	c.mu.Unlock()
	go c.writeLoop()
}

var bufPool = sync.Pool{New: func() any { return new(writeBuf) }}

type writeBuf struct {
	batch []*notify.Envelope
	frame []byte
}

// writeLoop drains the queue into frames until it is empty, then exits.
func (c *conn) writeLoop() {
	buf := bufPool.Get().(*writeBuf)
	defer bufPool.Put(buf)
	for {
		buf.batch = c.sess.Conn.Drain(buf.batch[:0])
		if len(buf.batch) > 0 && !c.writeBatch(buf) {
			return
		}
		clear(buf.batch)
		select {
		case <-c.sess.Conn.Done():
			c.end(c.sess.Conn.Err())
			return
		default:
		}
		c.mu.Lock()
		if !c.again {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.again = false
		c.mu.Unlock()
	}
}

// writeBatch writes the envelopes in as few frames as possible. It reports
// false once the connection has ended.
func (c *conn) writeBatch(buf *writeBuf) bool {
	frame := buf.frame[:0]
	ends := false
	for i, e := range buf.batch {
		raw := e.JSON()
		full := i > 0 && c.h.cfg.MaxBatch > 0 && i%c.h.cfg.MaxBatch == 0
		if len(frame) > 0 && (full || len(frame)+1+len(raw) > maxFrame) {
			if !c.write(frame) {
				return false
			}
			frame = frame[:0]
		}
		if len(frame) > 0 {
			frame = append(frame, '\n')
		}
		frame = append(frame, raw...)
		ends = ends || wire.EndsConnection(e)
	}
	ok := c.write(frame)
	if ok {
		c.sess.Wrote(buf.batch)
	}
	if cap(frame) <= maxFrame {
		buf.frame = frame[:0]
	}
	if ok && ends {
		c.sess.Close(notify.ErrShutdown)
		c.end(notify.ErrShutdown)
		return false
	}
	return ok
}

// write writes one frame within the write timeout. The timeout is a
// deadline on the connection, cleared after the write (other writers — the
// heartbeat's ping, the library's pongs — bound their own): a context with
// a timeout costs a timer, an allocation and an AfterFunc per write.
func (c *conn) write(frame []byte) bool {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
	err := c.ws.Write(context.Background(), websocket.MessageText, frame)
	_ = c.nc.SetWriteDeadline(time.Time{})
	if err != nil {
		// A write that timed out: the client does not read. Other
		// errors: the client is gone.
		reason := notify.ErrClosed
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
			reason = notify.ErrLagged
		}
		c.sess.Close(reason)
		c.end(nil)
		return false
	}
	return true
}

// end closes the websocket with the code for reason (nil: already closed
// by the failed I/O) and releases the connection. Idempotent.
func (c *conn) end(reason error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	c.mu.Unlock()
	c.heartbeat.Stop()
	if reason != nil {
		code, text := closeStatus(reason)
		// Close waits (bounded) for the client's close frame, which the
		// reader receives.
		go func() { _ = c.ws.Close(code, text) }()
	} else {
		_ = c.ws.CloseNow()
	}
}

// readLoop subscribes the initial channels, then runs the client's
// commands until the connection ends.
func (c *conn) readLoop() {
	defer func() {
		c.sess.Close(nil)
		c.end(nil)
	}()
	ctx := context.Background()
	if !c.sess.SubscribeInitial(ctx) {
		return
	}
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

// beat pings the client; no pong within the write timeout ends the
// connection. It re-arms itself.
func (c *conn) beat() {
	ctx, cancel := context.WithTimeout(context.Background(), c.h.cfg.WriteTimeout)
	err := c.ws.Ping(ctx)
	cancel()
	if err != nil {
		c.mu.Lock()
		ended := c.ended
		c.mu.Unlock()
		if !ended {
			c.sess.Close(errHeartbeat)
			c.end(errHeartbeat)
		}
		return
	}
	c.mu.Lock()
	if !c.ended {
		c.heartbeat.Reset(c.h.cfg.Heartbeat)
	}
	c.mu.Unlock()
}
