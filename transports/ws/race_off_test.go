//go:build !race

package ws_test

// raceEnabled: the race detector slows everything ~10×; stress tests do less.
const raceEnabled = false
