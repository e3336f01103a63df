package wt

import (
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/transports/wire"
)

// maxWrite bounds one write; a batch larger than that is written in
// several.
const maxWrite = 128 << 10

// options: NDJSON, the last line says why the server ends the session, no
// heartbeat (QUIC keep-alive does it below the session).
var options = wire.WriterOptions{MaxFrame: maxWrite, FinalNotice: true}

var _ wire.Output = (*session)(nil)

// Append implements wire.Output: one envelope per line.
func (s *session) Append(frame []byte, e *notify.Envelope, _ int) []byte {
	return wire.AppendNDJSON(frame, e)
}

// WriteFrame implements wire.Output: QUIC sends what a stream write
// takes without a flush.
func (s *session) WriteFrame(frame []byte) error {
	_, err := s.str.Write(frame)
	return err
}

// SetWriteDeadline implements wire.Output.
func (s *session) SetWriteDeadline(t time.Time) error { return s.str.SetWriteDeadline(t) }

// End implements wire.Output: the handler closes the session once the
// writer returns (closeSession), with the reason kept here.
func (s *session) End(reason error) { s.ended = reason }
