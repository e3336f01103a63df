// Package bench is the engine of `herald bench`: it runs load scenarios
// against Herald servers — children it starts itself (a private
// redis-server and N `herald serve` instances) or servers already running —
// on every transport, with the same load, and reports latency, throughput,
// server cost and an exact count of lost, duplicated and reordered
// messages.
//
// It drives servers only through their public interfaces: the REST API
// (POST /v1/token, POST /v1/publish) and the reconnecting client of
// transports/client.
//
// # Method
//
// Publishing is open-loop: message k of a stream is scheduled at
// start + k/rate and carries its scheduled time and a per-channel sequence
// number in its data, so a slow server cannot slow the publisher down and
// hide its own latency (no coordinated omission). Latency is receive time
// minus scheduled time, recorded in an HdrHistogram for messages scheduled
// after the warm-up. Each subscriber checks the sequence numbers of every
// channel it reads: lost, duplicated and out-of-order deliveries are
// counted exactly.
//
// # Concurrency
//
// Run owns everything it starts: child processes, clients and publishers.
// Every child is killed and waited for before Run returns, whatever the
// outcome (and, on Linux, with the parent-death signal should the bench
// itself be killed).
package bench
