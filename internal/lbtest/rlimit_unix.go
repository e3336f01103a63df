//go:build unix

package lbtest

import (
	"syscall"
	"testing"
)

// CheckFiles fails t unless this process may open the descriptors that
// conns client connections through a balancer need (FilesPerConn each)
// plus spare. Go raises the soft limit to the hard one at startup; the hard
// one (ulimit -Hn) is what counts.
func CheckFiles(t testing.TB, conns, spare int) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if need := uint64(conns*FilesPerConn + spare); lim.Cur < need {
		t.Fatalf("%d connections through the balancer need about %d file descriptors in this process; the limit is %d (ulimit -n; hard limit %d)",
			conns, need, lim.Cur, lim.Max)
	}
}
