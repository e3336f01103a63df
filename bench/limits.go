package bench

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// raiseFileLimit raises RLIMIT_NOFILE to its hard limit.
func raiseFileLimit() {
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &l)
	}
}

func fileLimit() uint64 {
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) != nil {
		return 0
	}
	return l.Cur
}

// pinSelf pins every thread of this process to the CPU list (e.g. "1" or
// "1-3"); threads created later inherit it from their creator.
func pinSelf(cpus string) error {
	var set unix.CPUSet
	n, err := parseCPUList(cpus, &set)
	if err != nil {
		return err
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return fmt.Errorf("sched_setaffinity: %w", err)
		}
	}
	runtime.GOMAXPROCS(n)
	return nil
}

func parseCPUList(s string, set *unix.CPUSet) (int, error) {
	set.Zero()
	n := 0
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("CPU list %q: %v", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("CPU list %q: %v", s, err)
			}
		}
		for c := a; c <= b; c++ {
			set.Set(c)
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("CPU list %q is empty", s)
	}
	return n, nil
}

// CPUCount is the number of CPUs this process may run on.
func CPUCount() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil {
		return runtime.NumCPU()
	}
	return set.Count()
}
