package ws

import (
	"errors"

	"github.com/coder/websocket"
	"github.com/heraldhq/herald/notify"
)

// Close codes Herald uses besides the standard ones (1000 normal, 1001 going
// away on drain or shutdown, 1003 binary frame, 1009 frame too big, 1011
// internal error, 1013 broker unavailable).
const (
	// StatusLagged: the client fell too far behind; resume from the last
	// position.
	StatusLagged websocket.StatusCode = 4000
	// StatusHeartbeatTimeout: no pong to a ping within the write timeout.
	StatusHeartbeatTimeout websocket.StatusCode = 4001
	// StatusTokenExpired: the connection's token expired and no refresh
	// came within the grace period; reconnect with a new token and resume.
	StatusTokenExpired websocket.StatusCode = 4002
)

// closeStatus maps the reason a connection ends to a close code. handshake
// is false when there is nothing to say (the client left, or a write
// failed): the connection is then closed at once.
func closeStatus(err error) (code websocket.StatusCode, text string, handshake bool) {
	switch {
	case notify.ReasonOf(err) == notify.DropHeartbeatTimeout:
		return StatusHeartbeatTimeout, "heartbeat timeout", true
	case err == nil, errors.Is(err, notify.ErrClosed):
		return websocket.StatusNormalClosure, "", false
	case errors.Is(err, notify.ErrTokenExpired):
		return StatusTokenExpired, notify.ErrTokenExpired.Code, true
	case errors.Is(err, notify.ErrLagged):
		return StatusLagged, notify.ErrLagged.Code, true
	case errors.Is(err, notify.ErrShutdown):
		return websocket.StatusGoingAway, notify.ErrShutdown.Code, true
	case errors.Is(err, notify.ErrUnavailable):
		return websocket.StatusTryAgainLater, notify.ErrUnavailable.Code, true
	}
	return websocket.StatusInternalError, "internal error", true
}
