//go:build !race

package main

// stormClients is the reconnect storm's size.
const stormClients = 3000
