package wt

import (
	"errors"
	"time"

	"github.com/heraldhq/herald/notify"
	"github.com/quic-go/webtransport-go"
)

// Session error codes: the code of the WT_CLOSE_SESSION capsule with which
// the server ends a session, its message the error code (lagged, shutdown…).
// They are WebSocket's close codes (see package ws), so that one table
// serves both; docs/protocol.md lists them.
const (
	CodeNormal          webtransport.SessionErrorCode = 0    // the client left
	CodeGoingAway       webtransport.SessionErrorCode = 1001 // drain or shutdown
	CodeInternal        webtransport.SessionErrorCode = 1011
	CodeTryAgainLater   webtransport.SessionErrorCode = 1013 // broker unavailable
	CodeLagged          webtransport.SessionErrorCode = 4000 // resume from the last position
	CodeNoAnswer        webtransport.SessionErrorCode = 4001 // dead peer (reserved: QUIC's idle timeout closes the connection instead)
	CodeTokenExpired    webtransport.SessionErrorCode = 4002 // reconnect with a new token
	CodeNoStream        webtransport.SessionErrorCode = 4003 // the client opened no stream within the write timeout
	codeNoStreamMessage                               = "no_stream"
)

// closeLinger bounds how long a session the server ends waits, after its
// last line and the end of its stream, for the client to close it, before
// the server closes it: closing a session resets its streams, and a reset
// stream loses what the client has not received yet (the reason notice, a
// drain's advice).
const closeLinger = 2 * time.Second

// closeCode maps the reason a session ends to its session error code and
// message.
func closeCode(err error) (webtransport.SessionErrorCode, string) {
	switch {
	case err == nil, errors.Is(err, notify.ErrClosed) && notify.ReasonOf(err) != notify.DropHeartbeatTimeout:
		return CodeNormal, ""
	case errors.Is(err, errNoStream):
		return CodeNoStream, codeNoStreamMessage
	case notify.ReasonOf(err) == notify.DropHeartbeatTimeout:
		return CodeNoAnswer, notify.ErrClosed.Code
	case errors.Is(err, notify.ErrTokenExpired):
		return CodeTokenExpired, notify.ErrTokenExpired.Code
	case errors.Is(err, notify.ErrLagged):
		return CodeLagged, notify.ErrLagged.Code
	case errors.Is(err, notify.ErrShutdown):
		return CodeGoingAway, notify.ErrShutdown.Code
	case errors.Is(err, notify.ErrUnavailable):
		return CodeTryAgainLater, notify.ErrUnavailable.Code
	}
	return CodeInternal, "internal"
}

// closeError is the error a client reports for a session the server closed
// with code and message: the notify error of that code (errors.Is matches
// notify.ErrLagged and the like), nil for a normal close.
func closeError(code webtransport.SessionErrorCode, message string) error {
	switch code {
	case CodeNormal:
		return nil
	case CodeGoingAway:
		return notify.ErrShutdown
	case CodeTryAgainLater:
		return notify.ErrUnavailable
	case CodeLagged:
		return notify.ErrLagged
	case CodeTokenExpired:
		return notify.ErrTokenExpired
	}
	if message == "" {
		message = "session closed"
	}
	return &notify.Error{Code: message, Message: "webtransport: the server closed the session (" + message + ")"}
}

// closeSession ends the WebTransport session, unless the client did or the
// connection is gone. When the server ends it for a reason and its last
// frame went out, the stream's end follows that frame and the session
// waits up to closeLinger for the client to close it, so that nothing
// written is reset; a session whose write failed (the client does not
// read) is closed at once.
func (s *session) closeSession() {
	if s.wt.Context().Err() != nil {
		return
	}
	reason := s.ended
	graceful := reason != nil && s.str != nil
	if reason == nil {
		reason = s.sess.Conn.Err()
	}
	code, msg := closeCode(reason)
	if graceful && code != CodeNormal {
		_ = s.str.Close()
		t := time.NewTimer(closeLinger)
		select {
		case <-s.wt.Context().Done():
		case <-t.C:
		}
		t.Stop()
	}
	_ = s.wt.CloseWithError(code, msg)
}
