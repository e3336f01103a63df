//go:build !race

package main

// stormClients is the reconnect storm's size. 2,000 recovers in about a
// second; at 3,000 the drill's own clients (all in this process, behind the
// test balancer) never all receive the warm-up: not yet understood.
const stormClients = 2000
