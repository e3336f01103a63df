// Package freeport picks loopback TCP ports for servers that must restart
// on the same port (Redis in tests and in the bench).
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// BusOffset is the distance of a Redis Cluster node's bus port from its
// client port.
const BusOffset = 10000

// BelowEphemeral returns a free loopback port below the kernel's ephemeral
// range whose bus port (+BusOffset, for Redis Cluster) is free and below it
// too, and that neither equals nor is a bus port of any port in taken. A
// port the kernel hands out for outgoing connections (what listening on :0
// returns) can be taken by a client socket while its server is down, and
// then a restart on the same port fails.
func BelowEphemeral(taken ...int) (int, error) {
	lo, hi := 10000, ephemeralLow()-BusOffset
	if hi <= lo {
		return 0, fmt.Errorf("no port range below the ephemeral ports (%d)", ephemeralLow())
	}
next:
	for attempt := 0; attempt < 200; attempt++ {
		port := lo + rand.IntN(hi-lo)
		for _, t := range taken {
			if d := port - t; d == 0 || d == BusOffset || d == -BusOffset {
				continue next
			}
		}
		if free(port) && free(port+BusOffset) {
			return port, nil
		}
	}
	return 0, errors.New("no free port pair below the ephemeral range")
}

func free(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return 32768
}
