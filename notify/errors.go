package notify

import (
	"errors"
	"fmt"
)

// Error is a protocol error: a stable machine-readable Code (sent to clients
// in error envelopes and mapped by transports to HTTP statuses and close
// codes) and a human-readable Message.
//
// errors.Is(err, ErrX) matches any *Error with ErrX's code, so callers test
// the kind of failure without depending on its message.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Is matches errors of the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// The error kinds of the core. Transports map each code to a status; see
// docs/protocol.md.
var (
	ErrInvalidChannel     = &Error{Code: "invalid_channel", Message: "invalid channel name"}
	ErrInvalidEvent       = &Error{Code: "invalid_event", Message: "invalid event name"}
	ErrInvalidData        = &Error{Code: "invalid_data", Message: "data is not valid JSON"}
	ErrTooLarge           = &Error{Code: "too_large", Message: "message too large"}
	ErrInvalidPosition    = &Error{Code: "invalid_position", Message: "invalid position"}
	ErrUnknownPosition    = &Error{Code: "unknown_position", Message: "position is after the channel's last message"}
	ErrInvalidCursor      = &Error{Code: "invalid_cursor", Message: "invalid presence cursor"}
	ErrAlreadySubscribed  = &Error{Code: "already_subscribed", Message: "already subscribed to the channel"}
	ErrNotSubscribed      = &Error{Code: "not_subscribed", Message: "not subscribed to the channel"}
	ErrTooManyChannels    = &Error{Code: "too_many_channels", Message: "too many channels on this connection"}
	ErrTooManyConnections = &Error{Code: "too_many_connections", Message: "too many connections for this user"}
	ErrInvalidUser        = &Error{Code: "invalid_user", Message: "invalid user ID"}
	ErrLagged             = &Error{Code: "lagged", Message: "connection fell too far behind; resume from the last position"}
	ErrClosed             = &Error{Code: "closed", Message: "connection closed"}
	ErrShutdown           = &Error{Code: "shutdown", Message: "server shutting down"}
	ErrUnavailable        = &Error{Code: "unavailable", Message: "broker unavailable"}
	ErrUnauthorized       = &Error{Code: "unauthorized", Message: "missing, invalid or expired credentials"}
	ErrForbidden          = &Error{Code: "forbidden", Message: "not allowed"}
	ErrInvalidCommand     = &Error{Code: "invalid_command", Message: "malformed command"}
	ErrRateLimited        = &Error{Code: "rate_limited", Message: "too many requests"}
	ErrTokenExpired       = &Error{Code: "token_expired", Message: "the connection's token expired and was not refreshed; reconnect with a new token"}
	ErrPresenceDisabled   = &Error{Code: "presence_disabled", Message: "presence is not enabled on this server"}
)

// Errorf returns an error of kind's code with a specific message, for
// packages that report the core's error kinds.
func Errorf(kind *Error, format string, args ...any) *Error { return errorf(kind, format, args...) }

// errorf returns an error of kind's code with a specific message.
func errorf(kind *Error, format string, args ...any) *Error {
	return &Error{Code: kind.Code, Message: fmt.Sprintf(format, args...)}
}

// Unavailable wraps a broker failure (Redis unreachable, timed out) as
// ErrUnavailable while keeping the cause for errors.Is/As and logs.
func Unavailable(op string, cause error) error {
	return &unavailableError{op: op, cause: cause}
}

type unavailableError struct {
	op    string
	cause error
}

func (e *unavailableError) Error() string {
	return ErrUnavailable.Code + ": " + e.op + ": " + e.cause.Error()
}
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }
func (e *unavailableError) Unwrap() error        { return e.cause }

func asError(err error, target **Error) bool { return errors.As(err, target) }

func isUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }
