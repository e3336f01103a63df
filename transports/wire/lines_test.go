package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// chunkReader returns its data in reads of the given sizes, cycling.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(r.sizes) > 0 {
		n = min(n, r.sizes[r.i%len(r.sizes)])
		r.i++
	}
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data = r.data[n:]
	return n, nil
}

// readAll returns each line, "!" for a too-long one, and the final error.
func readAll(l *LineReader) ([]string, error) {
	var got []string
	for {
		line, err := l.Next()
		switch {
		case errors.Is(err, ErrLineTooLong):
			got = append(got, "!")
		case err != nil:
			return got, err
		default:
			got = append(got, string(line))
		}
	}
}

// reference splits data as LineReader must.
func reference(data string, max int) []string {
	var want []string
	parts := strings.Split(data, "\n")
	if parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	for _, p := range parts {
		if len(p) > max {
			want = append(want, "!")
		} else {
			want = append(want, p)
		}
	}
	return want
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 3000)
	for _, tc := range []struct {
		name, data string
		max        int
		sizes      []int
	}{
		{"lines", "a\nbb\n\nccc\n", 10, nil},
		{"one byte reads", "a\nbb\n\nccc\n", 10, []int{1}},
		{"last line without newline", "a\nbc", 10, []int{1}},
		{"exactly max", "0123456789\nx\n", 10, []int{3}},
		{"max plus one", "0123456789a\nx\n", 10, []int{3}},
		{"long line skipped, next kept", "a\n" + long + "\nb\n", 100, []int{7, 1000}},
		{"long last line", "a\n" + long, 100, nil},
		{"grows past the first buffer", long + "\n" + long + "\n", 4096, []int{100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &LineReader{r: &chunkReader{data: []byte(tc.data), sizes: tc.sizes}, max: tc.max}
			got, err := readAll(l)
			if err != io.EOF {
				t.Fatalf("end: %v", err)
			}
			want := reference(tc.data, tc.max)
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("got %q\nwant %q", got, want)
			}
		})
	}
}

// TestLineReaderDropsBuffer: after a long line the grown buffer goes, so a
// quiet stream keeps a small one.
func TestLineReaderDropsBuffer(t *testing.T) {
	data := strings.Repeat("y", 20000) + "\n" + "z\n"
	l := &LineReader{r: &chunkReader{data: []byte(data), sizes: []int{30000, 1}}, max: 1 << 20}
	if line, err := l.Next(); err != nil || len(line) != 20000 {
		t.Fatalf("first line: %d bytes, %v", len(line), err)
	}
	if line, err := l.Next(); err != nil || string(line) != "z" {
		t.Fatalf("second line %q, %v", line, err)
	}
	if _, err := l.Next(); err != io.EOF {
		t.Fatal(err)
	}
	if len(l.buf) > keepLineBuf {
		t.Fatalf("buffer of %d bytes kept", len(l.buf))
	}
}

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), uint8(3), uint8(1), uint8(2))
	f.Add([]byte(strings.Repeat("q", 700)+"\nz\n"), uint8(100), uint8(9), uint8(200))
	f.Fuzz(func(t *testing.T, data []byte, max, s1, s2 uint8) {
		sizes := []int{int(s1) + 1, int(s2) + 1}
		l := &LineReader{r: &chunkReader{data: bytes.Clone(data), sizes: sizes}, max: int(max)}
		got, err := readAll(l)
		if err != io.EOF {
			t.Fatalf("end: %v", err)
		}
		want := reference(string(data), int(max))
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("max %d, reads %v:\ngot  %q\nwant %q", max, sizes, got, want)
		}
	})
}
