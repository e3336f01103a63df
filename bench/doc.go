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
// # Against a peer
//
// RunPeer (`herald bench peer`) runs one fan-out workload against Herald and
// against a Centrifugo binary, a fresh server process per run, with the
// same load client: raw WebSocket subscribers (coder/websocket) that parse
// the same payload out of either server's envelope, and publishers that
// POST the same body to each server's HTTP API. It talks to Herald through
// its public REST API and WebSocket endpoint, to Centrifugo through its
// HTTP API and JSON client protocol (peer_servers.go).
//
// # Concurrency
//
// Run owns everything it starts: child processes, clients and publishers.
// Every child is killed and waited for before Run returns, whatever the
// outcome (and, on Linux, with the parent-death signal should the bench
// itself be killed). RunPeer runs one server at a time and kills it, after
// closing every client of the run, before it starts the next.
package bench
