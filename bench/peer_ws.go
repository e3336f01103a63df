package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rawWS is the peer bench's WebSocket client connection: a plain TCP
// connection that speaks just enough RFC 6455 for a subscriber (read text
// frames, answer pings, say why the server closed; write small masked text
// frames), so that reading costs the load generator as little as possible
// and the same for both servers. A general client (coder/websocket) costs
// about 5 µs of load-generator CPU per frame, which made the load generator,
// not the server, the limit of the measurement.
//
// Reads belong to one goroutine; writes are serialized by mu.
type rawWS struct {
	nc net.Conn
	br *bufio.Reader

	mu   sync.Mutex // guards writes
	wbuf []byte     // guarded by mu
}

// wsCloseError is the server's close frame.
type wsCloseError struct {
	Code   int
	Reason string
}

func (e *wsCloseError) Error() string {
	return "websocket closed: " + strconv.Itoa(e.Code) + " " + e.Reason
}

// dialRawWS opens a WebSocket connection to rawURL (ws://host:port/path?…)
// from the local address laddr (nil: any).
func dialRawWS(ctx context.Context, rawURL string, laddr net.Addr) (*rawWS, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("peer client: %q: only ws:// URLs", rawURL)
	}
	d := net.Dialer{LocalAddr: laddr}
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	c, err := handshake(nc, u)
	if err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

func handshake(nc net.Conn, u *url.URL) (*rawWS, error) {
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	path := u.RequestURI()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + k + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("upgrade refused: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, errors.New("upgrade: bad Sec-WebSocket-Accept")
	}
	return &rawWS{nc: nc, br: br}, nil
}

// readMessage reads the next text message into b (reused, grown as
// needed), answering pings on the way. A close frame is returned as a
// *wsCloseError.
func (c *rawWS) readMessage(b []byte) ([]byte, error) {
	b = b[:0]
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return b, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0f
		if h[1]&0x80 != 0 {
			return b, errors.New("peer client: masked server frame")
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var x [2]byte
			if _, err := io.ReadFull(c.br, x[:]); err != nil {
				return b, err
			}
			n = uint64(binary.BigEndian.Uint16(x[:]))
		case 127:
			var x [8]byte
			if _, err := io.ReadFull(c.br, x[:]); err != nil {
				return b, err
			}
			n = binary.BigEndian.Uint64(x[:])
		}
		if n > 64<<20 {
			return b, fmt.Errorf("peer client: %d-byte frame", n)
		}
		if op >= 8 { // control frame: at most 125 bytes
			var p [125]byte
			if n > 125 {
				return b, errors.New("peer client: long control frame")
			}
			if _, err := io.ReadFull(c.br, p[:n]); err != nil {
				return b, err
			}
			switch op {
			case 8:
				ce := &wsCloseError{Code: 1005}
				if n >= 2 {
					ce.Code, ce.Reason = int(binary.BigEndian.Uint16(p[:2])), string(p[2:n])
				}
				return b, ce
			case 9:
				if err := c.write(0xA, p[:n]); err != nil {
					return b, err
				}
			}
			continue
		}
		start := len(b)
		b = append(b, make([]byte, n)...)
		if _, err := io.ReadFull(c.br, b[start:]); err != nil {
			return b, err
		}
		if fin {
			return b, nil
		}
	}
}

// writeText sends p as one masked text frame.
func (c *rawWS) writeText(p []byte) error { return c.write(0x1, p) }

func (c *rawWS) write(op byte, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := append(c.wbuf[:0], 0x80|op)
	switch n := len(p); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, p...)
	for i := range b[start:] {
		b[start+i] ^= mask[i%4]
	}
	c.wbuf = b
	_, err := c.nc.Write(b)
	return err
}

// close closes the connection at once.
func (c *rawWS) close() { _ = c.nc.Close() }
