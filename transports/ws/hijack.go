package ws

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
)

// Buffer sizes of an upgraded connection. net/http hands a hijacker 4 KiB
// for each direction, held for the connection's life: most of an idle
// connection's memory. Clients send small commands (a larger frame is read
// straight into its destination, past the buffer), and a typical notification
// frame fits the write buffer in one syscall; a larger coalesced frame costs
// one extra write.
const (
	readBufferSize  = 512
	writeBufferSize = 2048
)

// leanHijacker gives websocket.Accept smaller buffers than net/http's, and
// keeps the hijacked connection in *conn (for write deadlines).
type leanHijacker struct {
	http.ResponseWriter
	conn *net.Conn
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
	var r io.Reader = conn
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right after its request.
		b, _ := brw.Reader.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)
	}
	return conn, bufio.NewReadWriter(bufio.NewReaderSize(r, readBufferSize), bufio.NewWriterSize(conn, writeBufferSize)), nil
}
