package client

import (
	"errors"

	"github.com/heraldhq/herald/notify"
)

var (
	// ErrClosed is returned once Close has been called.
	ErrClosed = errors.New("client: closed")
	// ErrOneWay is returned by Publish on the SSE transport, which only
	// carries messages from the server.
	ErrOneWay = errors.New("client: the sse transport cannot publish; use ws or h3, or POST /v1/publish")
	// ErrUnconfirmed is returned by Publish when the connection ended
	// after the command was sent and before its ack: the message may or
	// may not have been published. The client does not resend it, since
	// that could publish it twice.
	ErrUnconfirmed = errors.New("client: connection lost before the publish was acknowledged")
)

// Causes of a reconnection that are not failures; they appear in
// State.Err.
var (
	errResubscribe = errors.New("client: the channel set changed (sse reconnects to change it)")
	errOverflow    = errors.New("client: buffer full while a reply was awaited; resuming when read")
)

// permanentCodes are the refusals that retrying with the same request
// cannot fix: a connection refused with one of them stops the client, a
// channel refused with one is dropped and reported (see Run).
var permanentCodes = map[string]bool{
	notify.ErrForbidden.Code:       true,
	notify.ErrInvalidChannel.Code:  true,
	notify.ErrInvalidPosition.Code: true,
	notify.ErrUnknownPosition.Code: true,
	notify.ErrInvalidUser.Code:     true,
	notify.ErrInvalidCommand.Code:  true,
	notify.ErrInvalidEvent.Code:    true,
	notify.ErrInvalidData.Code:     true,
	notify.ErrTooLarge.Code:        true,
	notify.ErrTooManyChannels.Code: true,
	// No Herald endpoint there (a wrong URL or path): wire.ResponseError
	// keeps the status of a refusal without a JSON error.
	"http_404": true,
	"http_405": true,
}

// permanent reports whether err is a server refusal that retrying cannot
// fix. unauthorized is not one: the next attempt has a fresh token.
func permanent(err error) bool {
	var e *notify.Error
	return errors.As(err, &e) && permanentCodes[e.Code]
}

// errorIs reports whether err is a protocol error with code.
func errorIs(err error, code string) bool {
	var e *notify.Error
	return errors.As(err, &e) && e.Code == code
}
