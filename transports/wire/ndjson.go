package wire

import (
	"bytes"
	"context"
	"errors"
	"io"

	"github.com/heraldhq/herald/notify"
)

// AppendNDJSON appends e to frame as one NDJSON line, the framing of the
// HTTP/3 stream and the WebTransport stream: a message's shared encoding
// copied, never re-encoded.
func AppendNDJSON(frame []byte, e *notify.Envelope) []byte {
	if e.Type == notify.TypeMessage {
		frame = append(frame, e.JSON()...)
	} else {
		frame = e.AppendJSON(frame)
	}
	return append(frame, '\n')
}

// ReadCommands runs the client's commands, one per line of r, until r
// ends or fails (its io.EOF, a read deadline, a reset). Empty lines are
// skipped. A line longer than Config.MaxCommandSize is answered with a
// too_large error notice and skipped up to its newline; the stream stays
// usable. Call it from the connection's one reader goroutine.
func (s *Session) ReadCommands(ctx context.Context, r io.Reader) {
	lines := NewLineReader(r, s.cfg.MaxCommandSize)
	for {
		line, err := lines.Next()
		if errors.Is(err, ErrLineTooLong) {
			s.tooLarge(ctx)
			continue
		}
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(line)) > 0 {
			s.Handle(ctx, line)
		}
	}
}

// tooLarge answers an over-long command line.
func (s *Session) tooLarge(ctx context.Context) {
	if s.Conn.Err() != nil || ctx.Err() != nil {
		return
	}
	err := notify.Errorf(notify.ErrTooLarge, "a command is at most %d bytes", s.cfg.MaxCommandSize)
	_ = s.Conn.Send(ctx, notify.ErrorEnvelope(err, ""))
}
