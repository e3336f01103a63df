package notify

// ring is a FIFO of envelopes that grows on demand. Idle connections hold no
// buffer: it is allocated on the first push and released again when a large
// one drains empty. The caller bounds its length.
type ring struct {
	buf  []*Envelope
	head int
	n    int
}

const (
	ringMinCap  = 8
	ringKeepCap = 64 // a drained buffer up to this size is kept for reuse
)

func (r *ring) len() int { return r.n }

func (r *ring) push(e *Envelope) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
}

func (r *ring) grow() {
	buf := make([]*Envelope, max(ringMinCap, 2*len(r.buf)))
	for i := 0; i < r.n; i++ {
		buf[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = buf, 0
}

// popAll appends every queued envelope to dst, oldest first, and empties the
// ring.
func (r *ring) popAll(dst []*Envelope) []*Envelope {
	for i := 0; i < r.n; i++ {
		j := (r.head + i) % len(r.buf)
		dst = append(dst, r.buf[j])
		r.buf[j] = nil
	}
	r.head, r.n = 0, 0
	if len(r.buf) > ringKeepCap {
		r.buf = nil
	}
	return dst
}
