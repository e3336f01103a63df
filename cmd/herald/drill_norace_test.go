//go:build !race

package main

// stormClients is the reconnect storm's size (HERALD_STORM_CLIENTS
// overrides it). Every client costs this process three file descriptors
// (see lbtest.FilesPerConn): 3,000 need about 9,500 of the usual 20,000
// and recovered in 1.3–2.9s on a shared 2-core machine; 6,000 passed too,
// in about a minute.
const stormClients = 3000
