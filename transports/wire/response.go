package wire

import (
	"net/http"
	"time"
)

// Response is the writing half of an Output on a streamed HTTP response
// (HTTP/2, HTTP/3): a frame is one Write and a Flush (quic-go holds a
// response's first 4 KiB until a flush, HTTP/1.1 and HTTP/2 hold up to
// their buffer size), deadlines go through the ResponseController, and the
// stream ends when the handler returns. A transport embeds it and adds
// Append.
type Response struct {
	W  http.ResponseWriter
	RC *http.ResponseController
}

// NewResponse returns the Response writing to w.
func NewResponse(w http.ResponseWriter) Response {
	return Response{W: w, RC: http.NewResponseController(w)}
}

// WriteFrame implements Output: write and flush.
func (r Response) WriteFrame(frame []byte) error {
	if _, err := r.W.Write(frame); err != nil {
		return err
	}
	return r.RC.Flush()
}

// SetWriteDeadline implements Output. A ResponseWriter wrapped by a
// middleware that hides its deadlines still streams; a client that stops
// reading then lags on its queue instead of on the write timeout.
func (r Response) SetWriteDeadline(t time.Time) error { return r.RC.SetWriteDeadline(t) }

// End implements Output: the stream ends when the handler returns.
func (Response) End(error) {}
