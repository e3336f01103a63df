package wire

import (
	"sync"

	"github.com/heraldhq/herald/notify"
)

var bufPool = sync.Pool{New: func() any { return new(writeBuf) }}

// A writeBuf is held only while a batch is written, so that an idle
// connection keeps none.
type writeBuf struct {
	batch []*notify.Envelope
	frame []byte
}

// WriteBatch frames batch with out and writes it in as few frames as the
// options allow, exactly as a Writer does but with no deadline, observer or
// session: the writer's framing, for a transport's benchmarks and tests of
// its Output. frame is a buffer to reuse; the grown one is returned.
func WriteBatch(out Output, opts *WriterOptions, maxBatch int, batch []*notify.Envelope, frame []byte) ([]byte, error) {
	var err error
	frame, _, _ = writeFrames(out, opts, maxBatch, batch, frame, func(f []byte) bool {
		err = out.WriteFrame(f)
		return err == nil
	})
	return frame, err
}

// writeFrames frames batch into frame and writes each frame with write, a
// new frame when the next envelope would take the frame past MaxFrame or
// past maxBatch envelopes. ends reports a drain's advice in the batch.
func writeFrames(out Output, opts *WriterOptions, maxBatch int, batch []*notify.Envelope, frame []byte, write func([]byte) bool) (_ []byte, ok, ends bool) {
	room, maxFrame := opts.HeaderRoom, opts.maxFrame()
	frame = append(frame[:0], make([]byte, room)...)
	n := 0
	for _, e := range batch {
		full := maxBatch > 0 && n == maxBatch
		if n > 0 && (full || len(frame)-room+1+envelopeSize(e) > maxFrame) {
			if !write(frame) {
				return frame, false, ends
			}
			frame, n = frame[:room], 0
		}
		frame = out.Append(frame, e, n)
		n++
		ends = ends || EndsConnection(e)
	}
	return frame, write(frame), ends
}

// envelopeSize is about how many bytes e takes in a frame.
func envelopeSize(e *notify.Envelope) int {
	if e.Type == notify.TypeMessage {
		return len(e.JSON()) // the shared encoding: no allocation
	}
	return 256 // a notice; MaxFrame is a bound on buffers, not a limit
}
