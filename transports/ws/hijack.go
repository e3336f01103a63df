package ws

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Buffer sizes of an upgraded connection. net/http hands a hijacker 4 KiB
// for each direction, held for the connection's life: most of an idle
// connection's memory. Clients send small commands (a larger frame is read
// straight into its destination, past the buffer). The write buffer is
// coder/websocket's, for its control frames only (at most 2 + 125 bytes, so
// each goes out in one Write): data frames are written by the writer
// straight to the connection (see conn).
const (
	readBufferSize  = 256
	writeBufferSize = 128
)

// leanHijacker gives websocket.Accept smaller buffers than net/http's, and
// keeps the hijacked connection in *conn (for write deadlines). The library
// writes its control frames through a controlWriter with writeTimeout.
type leanHijacker struct {
	http.ResponseWriter
	conn         *net.Conn
	writeTimeout time.Duration
}

func (l leanHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(l.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if l.conn != nil {
		*l.conn = conn
	}
	if err := brw.Writer.Flush(); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	r, err := readerOver(conn, brw.Reader)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(controlWriter{conn, l.writeTimeout}, writeBufferSize)), nil
}

// controlWriter is where coder/websocket's buffer writes its control
// frames (pongs, pings, close): it sets a deadline of its own before each
// write, since the data writer leaves its sticky deadline set while idle
// (wire.WriterOptions.StickyDeadline), long past by the time an idle
// connection answers a client's ping. now+timeout is never earlier than
// the deadline the data writer last set, so a data write in flight keeps
// at least its bound. Control frames are rare: one deadline update each
// costs nothing that matters.
type controlWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (c controlWriter) Write(p []byte) (int, error) {
	if c.timeout > 0 {
		_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	return c.conn.Write(p)
}

// readerOver returns a small reader of conn that already holds, buffered,
// the bytes net/http read ahead into br: what the client sent right after
// its request (a first frame sent in the same write), or the byte of
// net/http's background read, which Hijack puts into br (a frame sent as
// soon as the response arrived, before the hijack stopped that read).
//
// They must be buffered, not merely queued in the reader's source:
// websocket.Accept keeps only what the reader buffers (it does
// r.Reset(io.MultiReader(bytes.NewReader(r.Peek(r.Buffered())), conn))), so
// a fresh reader of MultiReader(bytes, conn) lost them (issue #11: a
// pipelined first frame never seen; under load, a few upgrades in 10,000
// closed with "unexpected rsv bits", the frame's first byte gone).
// Peek(n) fills the buffer, sized to hold n, from the bytes.Reader in one
// read, without touching conn. Accept's Reset then refills the buffer from
// buf[0:n] onto itself, or hands the n bytes straight to a read of at least
// the buffer's size; either way they come first, then conn. The bytes need
// no copy of their own: they are in our buffer before Hijack returns. br is
// dropped, so net/http's 4 KiB are freed; only a client that sent more than
// readBufferSize before the response keeps a larger read buffer.
func readerOver(conn net.Conn, br *bufio.Reader) (*bufio.Reader, error) {
	n := br.Buffered()
	if n == 0 {
		return bufio.NewReaderSize(conn, readBufferSize), nil
	}
	early, _ := br.Peek(n) // already buffered: cannot fail
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(early), conn), max(readBufferSize, n))
	if _, err := r.Peek(n); err != nil {
		// Cannot happen (a bytes.Reader hands over its n bytes in one
		// read); were it to, refusing beats losing the client's bytes.
		return nil, fmt.Errorf("buffering %d early bytes: %w", n, err)
	}
	return r, nil
}
