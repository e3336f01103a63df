package sse

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func setUserTimeout(raw syscall.RawConn, d time.Duration) error {
	var serr error
	err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}
