//go:build !unix

package lbtest

import "testing"

// CheckFiles does nothing where there is no RLIMIT_NOFILE.
func CheckFiles(t testing.TB, conns, spare int) {}
