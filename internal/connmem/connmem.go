// Package connmem measures a server's memory per idle connection: the
// server runs in a child process (the test binary re-executed), so that its
// figures hold only its own side and the file-descriptor limit of one process
// is not shared with the clients.
package connmem

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const childEnv = "HERALD_CONNMEM_CHILD"

// Stats are a process's memory figures after a GC.
type Stats struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
}

// Total is the Go memory a connection holds: heap and stacks.
func (s Stats) Total() uint64 { return s.HeapInuse + s.StackInuse }

// Read returns the calling process's Stats after a full GC.
func Read() Stats {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return Stats{HeapInuse: m.HeapInuse, StackInuse: m.StackInuse, RSS: rss(), Goroutines: runtime.NumGoroutine()}
}

func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// ServeChild is called from TestMain: in the child process it runs
// handler (an http.Handler for the transport, plus /connmem/stats) on a
// loopback listener, prints the address and serves until killed, and does
// not return. In the parent it returns at once.
func ServeChild(handler func() http.Handler) {
	if os.Getenv(childEnv) == "" {
		return
	}
	raiseFileLimit()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.Handle("/", handler())
	mux.HandleFunc("/connmem/stats", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(Read())
	})
	mux.HandleFunc("/connmem/heap", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		_ = pprof.Lookup("heap").WriteTo(w, 0)
	})
	fmt.Println("ADDR", ln.Addr().String())
	_ = http.Serve(ln, mux)
	os.Exit(0)
}

// Child is a running server child.
type Child struct {
	Addr string
	cmd  *exec.Cmd
}

// StartChild re-executes the test binary as a server child running the
// test whose TestMain calls ServeChild.
func StartChild(tb testing.TB) *Child {
	raiseFileLimit()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		tb.Fatalf("server child: %q %v", line, err)
	}
	return &Child{Addr: strings.TrimSpace(strings.TrimPrefix(line, "ADDR ")), cmd: cmd}
}

// HeapProfile writes the child's heap profile to path.
func (c *Child) HeapProfile(tb testing.TB, path string) {
	resp, err := http.Get("http://" + c.Addr + "/connmem/heap")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

// Stats asks the child for its Stats.
func (c *Child) Stats(tb testing.TB) Stats {
	resp, err := http.Get("http://" + c.Addr + "/connmem/stats")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var s Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		tb.Fatal(err)
	}
	return s
}

// Report is the memory per connection between two Stats.
type Report struct {
	Conns                     int
	GoBytesPerConn            float64 // heap + stacks
	RSSPerConn                float64
	GoroutinesPerConn         float64
	HeapPerConn, StackPerConn float64
}

// Per computes the per-connection figures of n connections.
func Per(before, after Stats, n int) Report {
	d := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	return Report{
		Conns:             n,
		GoBytesPerConn:    d(after.Total(), before.Total()),
		RSSPerConn:        d(after.RSS, before.RSS),
		HeapPerConn:       d(after.HeapInuse, before.HeapInuse),
		StackPerConn:      d(after.StackInuse, before.StackInuse),
		GoroutinesPerConn: float64(after.Goroutines-before.Goroutines) / float64(n),
	}
}

// ReportTo reports the server's figures as benchmark metrics and logs them.
func (r Report) ReportTo(b *testing.B) {
	b.ReportMetric(r.GoBytesPerConn, "bytes/conn")
	b.ReportMetric(r.RSSPerConn, "rss-bytes/conn")
	b.ReportMetric(r.GoroutinesPerConn, "goroutines/conn")
	b.Log(r)
}

func (r Report) String() string {
	return fmt.Sprintf("%d idle connections: %.1f KiB/conn (heap %.1f KiB + stacks %.1f KiB), RSS %.1f KiB/conn, %.2f goroutines/conn",
		r.Conns, r.GoBytesPerConn/1024, r.HeapPerConn/1024, r.StackPerConn/1024, r.RSSPerConn/1024, r.GoroutinesPerConn)
}

// raiseFileLimit lifts the soft open-file limit to the hard one.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// Settle waits for a child's connection count to be reached, polling fn.
func Settle(timeout time.Duration, fn func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !fn() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
