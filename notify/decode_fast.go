package notify

import (
	"math"
	"strings"
	"unicode/utf8"
)

// The fast envelope decoder.
//
// Every client decodes every envelope it receives, and encoding/json (which
// validates the whole input, then decodes it again by reflection) made that
// the bulk of a client's CPU time. parseEnvelopeFast decodes the envelopes
// servers send in a single pass, with at most three allocations: the
// Envelope, one string holding all of its strings (well-known types are
// constants), and the copy of its data and presence.
//
// It must decode exactly as parseEnvelopeJSON does, so it handles only what
// it can handle simply and gives up (ok == false; ParseEnvelope then decodes
// with parseEnvelopeJSON) on everything else, including every error: errors
// therefore stay those of encoding/json and ParseID. It reproduces these
// rules of encoding/json for a struct:
//
//   - The input is one object, with optional whitespace (space, tab, CR,
//     LF) around tokens, and nothing but whitespace after it.
//   - Keys match field names exactly. encoding/json also matches keys
//     case-insensitively ("TYPE", "Channel", and even Unicode folds such as
//     "ſince"), so a key that is not a field name but folds to one, or that
//     contains an escape or a non-ASCII byte, is given up on.
//   - When a key repeats, the last value wins.
//   - Unknown keys are ignored, but their values must be valid JSON.
//   - null leaves a string or integer field unchanged.
//   - String values: strings without escapes whose bytes are valid UTF-8
//     are taken verbatim, as encoding/json does. Escapes and invalid UTF-8
//     (which encoding/json replaces with U+FFFD) are given up on, as is any
//     value of another type (a type error).
//   - ts and delay: JSON integers within int64; fractions, exponents and
//     overflows are given up on.
//   - data and presence are json.RawMessage: the exact bytes of any valid
//     value, "null" included (a RawMessage receives null as its raw
//     bytes), copied (both into one allocation).
//
// Then, as parseEnvelopeJSON does, an envelope without a type is an error,
// and non-empty id and since must parse as IDs (parseIDBytes accepts exactly
// what ParseID does): both are given up on when they fail.
//
// FuzzParseEnvelopeMatchesEncodingJSON checks the two decoders agree.

// span is the position b[start:end] of a value in the decoder's input.
type span struct{ start, end int }

func (s span) len() int { return s.end - s.start }

// maxSkipDepth bounds the nesting of the values the decoder skips, the
// envelope object counting as depth 1. Deeper values are left to
// encoding/json, which has its own limit (10000).
const maxSkipDepth = 100

// parseEnvelopeFast decodes the envelope b, or reports ok == false when b
// must be decoded by parseEnvelopeJSON: it does not handle b simply, or b is
// malformed.
func parseEnvelopeFast(b []byte) (*Envelope, bool) {
	// The last value seen for each field: the contents of strings, the raw
	// bytes of data.
	var (
		typ, channel, id, event, data, since, ref, code, message, presence span
		ts, delay                                                          int64
		ok                                                                 bool
	)

	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil, false // {}: an envelope without a type
	}
	for {
		if i == len(b) || b[i] != '"' {
			return nil, false
		}
		var end int
		if end, ok = scanASCIIString(b, i+1); !ok {
			return nil, false
		}
		key := b[i+1 : end]
		i = skipSpace(b, end+1)
		if i == len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)

		switch string(key) { // compiled without converting key to a string
		case "type":
			i, ok = stringValue(b, i, &typ)
		case "channel":
			i, ok = stringValue(b, i, &channel)
		case "id":
			i, ok = stringValue(b, i, &id)
		case "event":
			i, ok = stringValue(b, i, &event)
		case "data":
			data.start = i
			i, ok = skipValue(b, i, 1)
			data.end = i
		case "ts":
			i, ok = intValue(b, i, &ts)
		case "since":
			i, ok = stringValue(b, i, &since)
		case "ref":
			i, ok = stringValue(b, i, &ref)
		case "code":
			i, ok = stringValue(b, i, &code)
		case "message":
			i, ok = stringValue(b, i, &message)
		case "delay":
			i, ok = intValue(b, i, &delay)
		case "presence":
			presence.start = i
			i, ok = skipValue(b, i, 1)
			presence.end = i
		default:
			if foldsToField(key) {
				return nil, false // encoding/json would set the field
			}
			i, ok = skipValue(b, i, 1)
		}
		if !ok {
			return nil, false
		}

		i = skipSpace(b, i)
		if i == len(b) {
			return nil, false
		}
		if b[i] == '}' {
			break
		}
		if b[i] != ',' {
			return nil, false
		}
		i = skipSpace(b, i+1)
	}
	if skipSpace(b, i+1) != len(b) {
		return nil, false // something after the object
	}

	if typ.len() == 0 {
		return nil, false // an envelope without a type
	}
	var msgID, sinceID ID
	if id.len() > 0 {
		if msgID, ok = parseIDBytes(b[id.start:id.end]); !ok {
			return nil, false
		}
	}
	if since.len() > 0 {
		if sinceID, ok = parseIDBytes(b[since.start:since.end]); !ok {
			return nil, false
		}
	}

	// The strings are cut from one string holding them all, but for a
	// well-known type, which is a constant.
	typeName := wellKnownType(b[typ.start:typ.end])
	if typeName != "" {
		typ = span{}
	}
	strs := [...]span{typ, channel, event, ref, code, message}
	n := 0
	for _, s := range strs {
		n += s.len()
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, s := range strs {
		sb.Write(b[s.start:s.end])
	}
	all := sb.String()
	var cut [len(strs)]string
	for k, s := range strs {
		cut[k], all = all[:s.len()], all[s.len():]
	}
	if typeName == "" {
		typeName = cut[0]
	}

	var dataCopy, presenceCopy []byte
	if n := data.len() + presence.len(); n > 0 {
		raw := make([]byte, n)
		copy(raw, b[data.start:data.end])
		copy(raw[data.len():], b[presence.start:presence.end])
		if data.len() > 0 {
			dataCopy = raw[:data.len():data.len()]
		}
		if presence.len() > 0 {
			presenceCopy = raw[data.len():]
		}
	}
	e := &Envelope{
		Type:    typeName,
		Channel: cut[1],
		ID:      msgID,
		Event:   cut[2],
		Data:    dataCopy,
		TS:      ts,
		Since:   sinceID,
		Ref:     cut[3],
		Code:    cut[4],
		Message: cut[5],
		Delay:   delay,

		Presence: presenceCopy,
	}
	return e, true
}

// wellKnownType returns the constant for the envelope type t, or "" if t is
// not one of the types servers send.
func wellKnownType(t []byte) string {
	switch string(t) {
	case TypeMessage:
		return TypeMessage
	case TypeSubscribed:
		return TypeSubscribed
	case TypeUnsubscribed:
		return TypeUnsubscribed
	case TypeGap:
		return TypeGap
	case TypeAck:
		return TypeAck
	case TypeError:
		return TypeError
	case TypePong:
		return TypePong
	case TypeReconnect:
		return TypeReconnect
	case TypeRefreshed:
		return TypeRefreshed
	case TypeExpiring:
		return TypeExpiring
	case TypePresence:
		return TypePresence
	}
	return ""
}

// envelopeKeys are the JSON names of wireEnvelope's fields.
var envelopeKeys = [...]string{"type", "channel", "id", "event", "data", "ts", "since", "ref", "code", "message", "delay", "presence"}

// foldsToField reports whether encoding/json matches the ASCII key to a
// field of wireEnvelope case-insensitively.
func foldsToField(key []byte) bool {
	for _, k := range envelopeKeys {
		if len(key) == len(k) && equalFoldLower(key, k) {
			return true
		}
	}
	return false
}

// equalFoldLower reports whether the ASCII b equals the lower-case ASCII s
// but for case. len(b) must be len(s).
func equalFoldLower(b []byte, s string) bool {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// stringValue decodes the value at b[i] of a string field: a string sets *s
// to its contents; null leaves *s unchanged. It returns the index after the
// value, or false for anything it leaves to encoding/json.
func stringValue(b []byte, i int, s *span) (int, bool) {
	if i < len(b) && b[i] == '"' {
		end, ok := scanPlainString(b, i+1)
		if !ok {
			return 0, false
		}
		*s = span{i + 1, end}
		return end + 1, true
	}
	return skipLiteral(b, i, "null")
}

// intValue decodes the value at b[i] of an int64 field: an integer within
// int64 sets *v; null leaves *v unchanged. It returns the index after the
// value, or false for anything it leaves to encoding/json, which accepts
// the numbers strconv.ParseInt accepts: no fraction, no exponent.
func intValue(b []byte, i int, v *int64) (int, bool) {
	if i < len(b) && b[i] == 'n' {
		return skipLiteral(b, i, "null")
	}
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	u, n := leadingDigits(b[i:])
	switch {
	case n == 0 || n > 19: // no digits, or too many for an int64
		return 0, false
	case b[i] == '0' && n > 1: // a leading zero: not JSON
		return 0, false
	case neg && u > 1<<63, !neg && u > math.MaxInt64:
		return 0, false
	}
	i += n
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return 0, false // a fraction or an exponent
	}
	if neg {
		*v = -int64(u) // -(1<<63) wraps to itself: math.MinInt64
	} else {
		*v = int64(u)
	}
	return i, true
}

// parseIDBytes is ParseID for bytes, without its error: it accepts exactly
// the IDs ParseID accepts, "<ms>-<seq>" where both are decimal digits
// (leading zeros allowed) within a uint64, 41 bytes at most.
func parseIDBytes(s []byte) (ID, bool) {
	if len(s) > 41 {
		return ID{}, false
	}
	ms, n := leadingDigits(s)
	if n == 0 || n == len(s) || s[n] != '-' || n > 19 && !fitsUint64(s[:n]) {
		return ID{}, false
	}
	s = s[n+1:]
	seq, n := leadingDigits(s)
	if n == 0 || n != len(s) || n > 19 && !fitsUint64(s) {
		return ID{}, false
	}
	return ID{Ms: ms, Seq: seq}, true
}

// leadingDigits returns the number of decimal digits s starts with, and
// their value modulo 2^64: their value if it fits in a uint64, as it always
// does for 19 digits or fewer.
func leadingDigits(s []byte) (v uint64, n int) {
	for n < len(s) {
		d := s[n] - '0'
		if d > 9 {
			break
		}
		v = v*10 + uint64(d)
		n++
	}
	return v, n
}

// fitsUint64 reports whether the decimal digits s are at most
// math.MaxUint64, whatever their leading zeros.
func fitsUint64(s []byte) bool {
	var v uint64
	for _, c := range s {
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return false
		}
		v = v*10 + d
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// Byte classes of string contents, for the scanning loops.
var (
	// plainASCII: the bytes that stand for themselves in a JSON string
	// and are ASCII.
	plainASCII = byteClass(func(c byte) bool { return c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' })
	// stringByte: the bytes that a JSON string may contain unescaped
	// (encoding/json does not check UTF-8 when validating).
	stringByte = byteClass(func(c byte) bool { return c >= 0x20 && c != '"' && c != '\\' })
)

func byteClass(in func(c byte) bool) (t [256]bool) {
	for c := range t {
		t[c] = in(byte(c))
	}
	return t
}

// scanASCIIString returns the index of the quote closing the string whose
// contents start at b[i], or false unless they are printable ASCII without
// escapes.
func scanASCIIString(b []byte, i int) (int, bool) {
	for k, c := range b[i:] {
		if !plainASCII[c] {
			return i + k, c == '"'
		}
	}
	return 0, false
}

// scanPlainString returns the index of the quote closing the string whose
// contents start at b[i], or false unless they are valid UTF-8 without
// escapes: contents encoding/json decodes as they are.
func scanPlainString(b []byte, i int) (int, bool) {
	for k, c := range b[i:] {
		if !plainASCII[c] {
			if c < utf8.RuneSelf {
				return i + k, c == '"' // else a control character or a backslash
			}
			return scanUTF8String(b, i+k)
		}
	}
	return 0, false
}

// scanUTF8String is scanPlainString past ASCII.
func scanUTF8String(b []byte, i int) (int, bool) {
	for i < len(b) {
		c := b[i]
		switch {
		case plainASCII[c]:
			i++
		case c == '"':
			return i, true
		case c < utf8.RuneSelf: // a control character or a backslash
			return 0, false
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return 0, false // invalid UTF-8
			}
			i += n
		}
	}
	return 0, false
}

// skipValue returns the index after the JSON value starting at b[i], or
// false if it is not valid JSON or nests deeper than maxSkipDepth. depth is
// the number of objects and arrays around the value.
func skipValue(b []byte, i, depth int) (int, bool) {
	if i == len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '{':
		return skipObject(b, i, depth+1)
	case c == '[':
		return skipArray(b, i, depth+1)
	case c == '"':
		return skipString(b, i)
	case c == '-' || isDigit(c):
		return skipNumber(b, i)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	}
	return 0, false
}

// skipObject skips the object starting at b[i], at the given depth.
func skipObject(b []byte, i, depth int) (int, bool) {
	if depth > maxSkipDepth {
		return 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		if i == len(b) || b[i] != '"' {
			return 0, false
		}
		var ok bool
		if i, ok = skipString(b, i); !ok {
			return 0, false
		}
		i = skipSpace(b, i)
		if i == len(b) || b[i] != ':' {
			return 0, false
		}
		if i, ok = skipValue(b, skipSpace(b, i+1), depth); !ok {
			return 0, false
		}
		i = skipSpace(b, i)
		if i == len(b) {
			return 0, false
		}
		switch b[i] {
		case '}':
			return i + 1, true
		case ',':
			i = skipSpace(b, i+1)
		default:
			return 0, false
		}
	}
}

// skipArray skips the array starting at b[i], at the given depth.
func skipArray(b []byte, i, depth int) (int, bool) {
	if depth > maxSkipDepth {
		return 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = skipValue(b, i, depth); !ok {
			return 0, false
		}
		i = skipSpace(b, i)
		if i == len(b) {
			return 0, false
		}
		switch b[i] {
		case ']':
			return i + 1, true
		case ',':
			i = skipSpace(b, i+1)
		default:
			return 0, false
		}
	}
}

// skipString skips the string starting at b[i], checking its escapes.
func skipString(b []byte, i int) (int, bool) {
	i++ // the opening quote
	for k, c := range b[i:] {
		if !stringByte[c] {
			if c == '"' {
				return i + k + 1, true
			}
			return skipEscapedString(b, i+k)
		}
	}
	return 0, false
}

// skipEscapedString is skipString from its first byte that is not plain.
func skipEscapedString(b []byte, i int) (int, bool) {
	for i < len(b) {
		c := b[i]
		switch {
		case stringByte[c]:
			i++
		case c == '"':
			return i + 1, true
		case c == '\\':
			if i+1 == len(b) {
				return 0, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return 0, false
				}
				i += 6
			default:
				return 0, false
			}
		default: // a control character
			return 0, false
		}
	}
	return 0, false
}

func isHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

// skipNumber skips the number starting at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i == len(b):
		return 0, false
	case b[i] == '0':
		i++
	case isDigit(b[i]):
		i = skipDigits(b, i+1)
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i
}

// skipLiteral skips the literal lit (true, false or null) at b[i]. The
// caller checks what follows, as for any value.
func skipLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit), true
	}
	return 0, false
}
