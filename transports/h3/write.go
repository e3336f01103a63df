package h3

import (
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// maxWrite bounds one write; a batch larger than that is written in
// several.
const maxWrite = 128 << 10

// heartbeatLine is what keeps an idle HTTP/1.1 or HTTP/2 stream alive
// through proxies. HTTP/3 streams need none: QUIC keep-alive does it below
// the stream.
var heartbeatLine = []byte("\n")

var _ wire.Output = (*stream)(nil)

// The stream's framing: one envelope per line; over TCP a heartbeat line.
var (
	quicOptions = wire.WriterOptions{MaxFrame: maxWrite, FinalNotice: true}
	tcpOptions  = wire.WriterOptions{MaxFrame: maxWrite, FinalNotice: true, Heartbeat: heartbeatLine}
)

func (s *stream) writerOptions() *wire.WriterOptions {
	if s.r.ProtoMajor < 3 {
		return &tcpOptions
	}
	return &quicOptions
}

// Append implements wire.Output: NDJSON, a message's shared encoding
// copied, never re-encoded.
func (s *stream) Append(frame []byte, e *notify.Envelope, _ int) []byte {
	if e.Type == notify.TypeMessage {
		frame = append(frame, e.JSON()...)
	} else {
		frame = e.AppendJSON(frame)
	}
	return append(frame, '\n')
}

// WriteFrame implements wire.Output: write and flush (quic-go holds a
// response's first 4 KiB until a flush, HTTP/1.1 and HTTP/2 hold up to their
// buffer size).
func (s *stream) WriteFrame(frame []byte) error {
	if _, err := s.w.Write(frame); err != nil {
		return err
	}
	return s.rc.Flush()
}

// SetWriteDeadline implements wire.Output. A ResponseWriter wrapped by a
// middleware that hides its deadlines still streams; a client that stops
// reading then lags on its queue instead of on the write timeout.
func (s *stream) SetWriteDeadline(t time.Time) error { return s.rc.SetWriteDeadline(t) }

// End implements wire.Output: the stream ends when ServeHTTP returns.
func (*stream) End(error) {}
