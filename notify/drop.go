package notify

import "errors"

// DropReason says why the server ended a connection, more precisely than the
// error code its client is told: a client that fell behind learns "lagged"
// whether its queue overflowed or a write to it timed out, while an operator
// needs to tell the two apart. The hub counts connections closed for each
// reason (HubStats.Dropped), in the spirit of tailscale's derp dropReason
// counters.
type DropReason uint8

// The reasons. DropNone is a connection its client closed, or one that
// failed for a reason not listed.
const (
	DropNone DropReason = iota
	// DropQueueOverflow: the connection's queue was full when a message
	// came (the client reads slower than it is sent to). Code lagged.
	DropQueueOverflow
	// DropWriteTimeout: a write to the client did not complete within the
	// transport's write timeout. Code lagged.
	DropWriteTimeout
	// DropHeartbeatTimeout: the client did not answer a heartbeat in time
	// (a dead peer). Code closed.
	DropHeartbeatTimeout
	// DropReconnectAdvice: the connection was told to reconnect elsewhere
	// (a drain) and ended once the advice was written. Code shutdown.
	DropReconnectAdvice
	// DropShutdown: the hub closed, or a drain could not queue its advice.
	// Code shutdown.
	DropShutdown
	// DropUnavailable: the broker failed while the connection was being
	// served. Code unavailable.
	DropUnavailable
	// DropTokenExpired: the connection's token expired and no refresh
	// came within the grace period. Code token_expired.
	DropTokenExpired

	dropReasons // the number of reasons
)

var dropNames = [dropReasons]string{
	DropNone:             "none",
	DropQueueOverflow:    "queue_overflow",
	DropWriteTimeout:     "write_timeout",
	DropHeartbeatTimeout: "heartbeat_timeout",
	DropReconnectAdvice:  "reconnect_advice",
	DropShutdown:         "shutdown",
	DropUnavailable:      "unavailable",
	DropTokenExpired:     "token_expired",
}

// DropReasons lists every reason but DropNone, in order.
func DropReasons() []DropReason {
	rs := make([]DropReason, 0, dropReasons-1)
	for r := DropNone + 1; r < dropReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// String returns the reason's metric label, e.g. "queue_overflow".
func (r DropReason) String() string {
	if r >= dropReasons {
		return "unknown"
	}
	return dropNames[r]
}

// dropError is the error a connection dropped for a reason closes with. It
// unwraps to the protocol error the client is told, so errors.Is(err,
// ErrLagged) and ErrorEnvelope see the code.
type dropError struct {
	reason DropReason
	kind   *Error
}

func (e *dropError) Error() string { return e.kind.Error() + " (" + e.reason.String() + ")" }
func (e *dropError) Unwrap() error { return e.kind }

var drops = [dropReasons]*dropError{
	DropQueueOverflow:    {DropQueueOverflow, ErrLagged},
	DropWriteTimeout:     {DropWriteTimeout, ErrLagged},
	DropHeartbeatTimeout: {DropHeartbeatTimeout, &Error{Code: ErrClosed.Code, Message: "no answer to the heartbeat in time"}},
	DropReconnectAdvice:  {DropReconnectAdvice, ErrShutdown},
	DropShutdown:         {DropShutdown, ErrShutdown},
	DropUnavailable:      {DropUnavailable, ErrUnavailable},
	DropTokenExpired:     {DropTokenExpired, ErrTokenExpired},
}

// Dropped returns the error that closes a connection for reason r (see
// Conn.Close). It is ErrClosed for DropNone or an unknown reason.
func Dropped(r DropReason) error {
	if r == DropNone || r >= dropReasons {
		return ErrClosed
	}
	return drops[r]
}

// ReasonOf returns the drop reason of a connection's closing error: the one
// given to Dropped, else the reason its code implies (shutdown, unavailable),
// else DropNone. A bare ErrLagged is DropNone: which of the two ways of
// lagging it was is not known.
func ReasonOf(err error) DropReason {
	var d *dropError
	switch {
	case err == nil:
		return DropNone
	case errors.As(err, &d):
		return d.reason
	case errors.Is(err, ErrShutdown):
		return DropShutdown
	case errors.Is(err, ErrUnavailable):
		return DropUnavailable
	}
	return DropNone
}
