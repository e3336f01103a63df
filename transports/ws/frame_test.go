package ws

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// putHeader at every length boundary: a final, unmasked text frame with the
// shortest length encoding (RFC 6455 section 5.2; clients may refuse a
// longer one). Real clients read these frames in the conformance suite and
// TestRawFramesInterleaveWithControlFrames.
func TestPutHeader(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 200000} {
		frame := make([]byte, maxHeader+n)
		for i := range frame[maxHeader:] {
			frame[maxHeader+i] = 'a' + byte(i%26)
		}
		raw := frame[putHeader(frame):]
		if raw[0] != 0x81 || raw[1]&0x80 != 0 {
			t.Fatalf("%d bytes: header %x; want FIN, text, unmasked", n, raw[:2])
		}
		length, hdr := uint64(raw[1]&0x7f), 2
		switch length {
		case 126:
			length, hdr = uint64(binary.BigEndian.Uint16(raw[2:])), 4
			if length < 126 {
				t.Fatalf("%d bytes: 16-bit length for a short payload", n)
			}
		case 127:
			length, hdr = binary.BigEndian.Uint64(raw[2:]), 10
			if length <= 0xffff {
				t.Fatalf("%d bytes: 64-bit length for a payload that fits 16 bits", n)
			}
		}
		if length != uint64(n) || !bytes.Equal(raw[hdr:], frame[maxHeader:]) {
			t.Fatalf("%d bytes: header says %d, payload %d bytes", n, length, len(raw)-hdr)
		}
	}
}
