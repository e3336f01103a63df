package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress is the live status line on a terminal; silent otherwise.
type progress struct {
	w    io.Writer // nil: silent
	mu   sync.Mutex
	last time.Time // guarded by mu
	line string    // guarded by mu
}

func newProgress(w io.Writer) *progress {
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
			w = nil // not a terminal: quiet
		}
	}
	return &progress{w: w}
}

func (p *progress) set(format string, args ...any) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.line = fmt.Sprintf(format, args...)
	if len(p.line) > 110 {
		p.line = p.line[:110]
	}
	fmt.Fprintf(p.w, "\r\033[K%s", p.line)
}

func (p *progress) clear() {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.line != "" {
		fmt.Fprint(p.w, "\r\033[K")
		p.line = ""
	}
}

func (p *progress) done() { p.clear() }
