package wire

import (
	"bytes"
	"errors"
	"io"
)

// ErrLineTooLong reports a line over the limit; the reader then skips to
// the next newline and goes on.
var ErrLineTooLong = errors.New("wire: line too long")

const (
	minLineBuf  = 512     // first buffer; most commands and envelopes fit
	keepLineBuf = 4 << 10 // a larger buffer is dropped once emptied
)

// LineReader splits a stream into newline-terminated lines of at most max
// bytes. Unlike bufio.Reader it grows its buffer only as long lines need
// and drops a grown buffer when it is empty again, so a quiet stream holds
// minLineBuf bytes at most.
//
// A LineReader is owned by one goroutine.
type LineReader struct {
	r   io.Reader
	max int // longest line, without its newline

	buf        []byte // buf[start:end] is read and not yet returned
	start, end int
	scanned    int   // buf[start:scanned] holds no newline
	skipping   bool  // dropping the rest of an over-long line
	err        error // the read error to return once buf is used up
}

// NewLineReader returns a LineReader of r's lines of at most max bytes.
func NewLineReader(r io.Reader, max int) LineReader { return LineReader{r: r, max: max} }

// Max is the longest line the reader returns.
func (l *LineReader) Max() int { return l.max }

// Next returns the next line without its "\n". The bytes are valid until
// the next call. A line over max yields ErrLineTooLong once; the next call
// returns the line after it. A last line without "\n" is returned before
// the read error (io.EOF at a clean end).
func (l *LineReader) Next() ([]byte, error) {
	if l.start == l.end {
		l.start, l.end, l.scanned = 0, 0, 0
		if len(l.buf) > keepLineBuf {
			l.buf = nil
		}
	}
	for {
		if i := bytes.IndexByte(l.buf[l.scanned:l.end], '\n'); i >= 0 {
			nl := l.scanned + i
			line := l.buf[l.start:nl]
			l.start, l.scanned = nl+1, nl+1
			if l.skipping {
				l.skipping = false
				continue
			}
			return line, nil
		}
		l.scanned = l.end
		if l.skipping {
			l.start, l.end, l.scanned = 0, 0, 0 // nothing worth keeping
		} else if l.end-l.start > l.max {
			l.skipping = true
			l.start, l.end, l.scanned = 0, 0, 0
			return nil, ErrLineTooLong
		}
		if l.err != nil {
			if l.start < l.end && !l.skipping {
				line := l.buf[l.start:l.end]
				l.start = l.end
				return line, nil
			}
			return nil, l.err
		}
		l.fill()
	}
}

// fill reads once into the free end of the buffer, making room first.
func (l *LineReader) fill() {
	if l.start > 0 {
		n := copy(l.buf, l.buf[l.start:l.end])
		l.scanned -= l.start
		l.start, l.end = 0, n
	}
	if l.end == len(l.buf) {
		// Room for max bytes and the newline, so that a line of exactly
		// max bytes is read whole.
		size := min(max(2*len(l.buf), minLineBuf), l.max+1)
		buf := make([]byte, size)
		copy(buf, l.buf[:l.end])
		l.buf = buf
	}
	n, err := l.r.Read(l.buf[l.end:])
	l.end += n
	if err != nil {
		l.err = err
	}
}
