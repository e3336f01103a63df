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
)

// closeStatus maps the reason a notify.Conn closed to a close code.
func closeStatus(err error) (websocket.StatusCode, string) {
	switch {
	case err == nil, errors.Is(err, notify.ErrClosed):
		return websocket.StatusNormalClosure, ""
	case errors.Is(err, notify.ErrLagged):
		return StatusLagged, notify.ErrLagged.Code
	case errors.Is(err, notify.ErrShutdown):
		return websocket.StatusGoingAway, notify.ErrShutdown.Code
	case errors.Is(err, notify.ErrUnavailable):
		return websocket.StatusTryAgainLater, notify.ErrUnavailable.Code
	case errors.Is(err, errHeartbeat):
		return StatusHeartbeatTimeout, "heartbeat timeout"
	}
	return websocket.StatusInternalError, "internal error"
}

var errHeartbeat = errors.New("ws: no pong within the write timeout")
