//go:build race

package main

// stormClients is the reconnect storm's size: the race detector allows
// 8128 goroutines, each client costs about five in the test process, and
// `make test` must stay short on a shared 2-core machine.
// HERALD_STORM_CLIENTS overrides it (keep it under about 1,500 here).
const stormClients = 500
