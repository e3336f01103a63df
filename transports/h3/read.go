package h3

import (
	"bytes"
	"errors"

	"github.com/heraldhq/herald/notify"
)

// readLoop is the stream's second goroutine. It subscribes the channels
// asked for at connect — which may wait for queue room while history
// replays, so it cannot be the writer — then, for POST, runs the client's
// commands, one per line of the request body.
//
// The end of the request body ends only this loop: the client has nothing
// more to say but goes on listening, and the stream lives until the client
// cancels it or the server ends it.
func (s *stream) readLoop() {
	defer close(s.readerDone)
	if !s.sess.SubscribeInitial(s.ctx) || !s.duplex {
		return
	}
	lines := lineReader{r: s.r.Body, max: s.h.cfg.MaxCommandSize}
	for {
		line, err := lines.next()
		if errors.Is(err, errLineTooLong) {
			s.tooLarge()
			continue
		}
		if err != nil {
			return // io.EOF, the handler's read deadline, a reset
		}
		if len(bytes.TrimSpace(line)) > 0 {
			s.sess.Handle(s.ctx, line)
		}
	}
}

// tooLarge answers an over-long command line; the stream stays usable.
func (s *stream) tooLarge() {
	if s.sess.Conn.Err() != nil || s.ctx.Err() != nil {
		return
	}
	err := notify.Errorf(notify.ErrTooLarge, "a command is at most %d bytes", s.h.cfg.MaxCommandSize)
	_ = s.sess.Conn.Send(s.ctx, notify.ErrorEnvelope(err, ""))
}
