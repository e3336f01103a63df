package ws

import "encoding/binary"

// maxHeader is the longest header of a server frame: unmasked, with a
// 64-bit length (RFC 6455 section 5.2).
const maxHeader = 10

// putHeader writes the header of a final text frame in front of the payload
// frame[maxHeader:], ending at frame[maxHeader], and returns where it
// starts.
func putHeader(frame []byte) int {
	n := len(frame) - maxHeader
	switch {
	case n <= 125:
		frame[8], frame[9] = 0x81, byte(n)
		return 8
	case n <= 0xffff:
		frame[6], frame[7] = 0x81, 126
		binary.BigEndian.PutUint16(frame[8:], uint16(n))
		return 6
	default:
		frame[0], frame[1] = 0x81, 127
		binary.BigEndian.PutUint64(frame[2:], uint64(n))
		return 0
	}
}
