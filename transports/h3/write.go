package h3

import (
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
	return wire.AppendNDJSON(frame, e)
}
