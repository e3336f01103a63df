package notify

import (
	"strconv"
	"strings"
)

// ID identifies a message within its channel. IDs are assigned by the broker
// and strictly increase per channel. On the wire an ID is the opaque string
// "<ms>-<seq>" (the Redis Stream entry ID format, which the memory broker
// imitates), so the same client position works with either broker.
type ID struct {
	Ms  uint64 // milliseconds part, usually the broker's clock at publish
	Seq uint64 // sequence within the millisecond
}

// IsZero reports whether id is the zero ID "0-0", which precedes every
// message.
func (id ID) IsZero() bool { return id.Ms == 0 && id.Seq == 0 }

// Compare returns -1, 0 or +1 as id is before, equal to or after o.
func (id ID) Compare(o ID) int {
	switch {
	case id.Ms < o.Ms:
		return -1
	case id.Ms > o.Ms:
		return 1
	case id.Seq < o.Seq:
		return -1
	case id.Seq > o.Seq:
		return 1
	}
	return 0
}

// After reports whether id comes strictly after o.
func (id ID) After(o ID) bool { return id.Compare(o) > 0 }

// Next returns the ID a broker assigns after last when its clock reads nowMs:
// the clock if it moved forward, else the next sequence in last's millisecond.
func (id ID) Next(nowMs uint64) ID {
	if nowMs > id.Ms {
		return ID{Ms: nowMs}
	}
	return ID{Ms: id.Ms, Seq: id.Seq + 1}
}

// String returns the wire form "<ms>-<seq>".
func (id ID) String() string { return string(id.AppendTo(make([]byte, 0, 24))) }

// AppendTo appends the wire form of id to b.
func (id ID) AppendTo(b []byte) []byte {
	b = strconv.AppendUint(b, id.Ms, 10)
	b = append(b, '-')
	return strconv.AppendUint(b, id.Seq, 10)
}

// ParseID parses the wire form "<ms>-<seq>". A bare "<ms>" is not accepted:
// positions come from IDs the server sent, never from guesses.
func ParseID(s string) (ID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok || ms == "" || seq == "" || len(s) > 41 {
		return ID{}, errorf(ErrInvalidPosition, "position %q is not an ID of the form <ms>-<seq>", truncate(s))
	}
	m, err1 := parseDecimal(ms)
	q, err2 := parseDecimal(seq)
	if err1 != nil || err2 != nil {
		return ID{}, errorf(ErrInvalidPosition, "position %q is not an ID of the form <ms>-<seq>", truncate(s))
	}
	return ID{Ms: m, Seq: q}, nil
}

// parseDecimal accepts only plain decimal digits: no sign, no spaces, no
// leading "+", so that every ID has exactly one spelling.
func parseDecimal(s string) (uint64, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// truncate keeps error messages short when echoing client input.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
