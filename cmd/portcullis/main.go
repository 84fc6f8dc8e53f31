// Command portcullis is the Portcullis WebSocket gateway: one binary for the
// server, its admin clients, the audit tools and the load generator.
package main

import "os"

func main() { os.Exit(Main(os.Args[1:])) }
