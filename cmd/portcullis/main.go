// Command portcullis is the Portcullis WebSocket gateway: one binary for the
// server, its admin clients and the audit tools. The server (serve) runs on
// Linux only; the audit tools and admin clients also build for other
// systems, so a trail can be verified on a laptop. The load generator is
// a separate command, portcullis-bench.
package main

import "os"

func main() { os.Exit(Main(os.Args[1:])) }
