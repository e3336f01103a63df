// Command herald is the Herald notification service.
//
//	herald serve     run a server (memory broker by default, --redis for Redis)
//	herald token     mint a connect token
//	herald publish   publish a message
//	herald listen    print the envelopes of a connection (ws, sse or h3)
//	herald bench     benchmark the transports and write a report
//
// Run `herald <command> --help` for a command's flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

const usage = `Herald — notifications over WebSocket, SSE and HTTP/3.

Usage:
  herald <command> [flags]

Commands:
  serve    run a server (embedded memory broker, or Redis with --redis)
  token    mint a connect token (from a server, or locally with the secret)
  publish  publish a message
  listen   connect over ws, sse or h3 and print every envelope
  bench    benchmark the transports: scenarios, latency, cost, losses

Run "herald <command> --help" for a command's flags and examples.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = runServe(args)
	case "token":
		err = runToken(args, os.Stdout)
	case "publish":
		err = runPublish(args, os.Stdout)
	case "listen":
		err = runListen(args, os.Stdout)
	case "bench":
		err = runBench(args, os.Stdout)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "herald: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "herald: %v\n", err)
		os.Exit(1)
	}
}
