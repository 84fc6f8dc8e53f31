// Command portcullis-bench is the load generator of Portcullis benchmarks:
// it starts a gateway (the portcullis binary) as a child process, drives it
// with load-generator child processes (one process holds at most ~19,900
// sockets here), and reports server cost read from /proc: RSS per
// connection, CPU per delivered message, latency, set-ups per second.
// Clustered runs (fanout --nodes N, idle --cluster) also start a
// redis-server and N gateways on it (cluster.go).
//
// It is a command of its own so that the production binary does not link
// it. It talks to the gateway only over its public interfaces (WebSocket
// and the admin API) and imports nothing from gateway, policy or audit
// but gateway/reactor's Ring, with which the io_uring floor sends
// (floor.go): the floor is the mechanism alone, not the gateway.
// It runs on Linux only (it reads /proc).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // a bench or the gateway failed; the message says why
	exitUsage   = 2 // unknown command, flag or argument
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// runError is a failure of a bench or of the gateway (exit 1); any other
// error comes from cobra's parsing of the command line (exit 2).
type runError struct{ err error }

func (e runError) Error() string { return e.err.Error() }
func (e runError) Unwrap() error { return e.err }

// failing marks what f returns as a run failure.
func failing(f func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := f(cmd, args); err != nil {
			return runError{err}
		}
		return nil
	}
}

// run runs the command line with help and errors on stdout and stderr and
// returns the process exit code. The scenario commands locate the gateway
// binary first (see locateGateway) and print which one they use; a gateway
// built for the run is removed when it ends.
func run(args []string, stdout, stderr io.Writer) int {
	var gwFlag string
	var located gatewayBinary
	root := rootCommand(&gwFlag)
	locate := failing(func(cmd *cobra.Command, args []string) error {
		if cmd.Name() == "worker" || cmd.Name() == "floor-server" {
			return nil // a child of a bench: it never starts a gateway
		}
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own binary: %w", err)
		}
		wd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
		located, err = locateGateway(gwFlag, self, wd, stderr)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "portcullis-bench: gateway %s (%s): %s\n", located.path, located.how, located.version)
		gatewayExe = located.path
		return nil
	})
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if clientNice < 0 || clientNice > 19 {
			return fmt.Errorf("--client-nice %d: a nice value from 0 to 19", clientNice)
		}
		return locate(cmd, args)
	}
	for _, c := range root.Commands() {
		c.RunE = failing(c.RunE)
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	located.remove()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "portcullis-bench:", err)
	var re runError
	if errors.As(err, &re) {
		return exitFailure
	}
	return exitUsage
}

// rootCommand is portcullis-bench and its benches. gw receives the
// --gateway flag.
func rootCommand(gw *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "portcullis-bench",
		Short: "load generator for Portcullis benchmarks (loopback only, Linux)",
		Long: `portcullis-bench starts a Portcullis gateway (the portcullis binary) as a
child process, drives it from load-generator child processes over loopback,
and reports the server's cost read from /proc.

The gateway binary is, in this order: --gateway PATH; portcullis next to
this executable; built with go build from the source tree when run inside
it (so ` + "`go run ./cmd/portcullis-bench`" + ` measures the code checked out); portcullis
on PATH. The one used is printed with its version.

fanout --nodes N (N > 1) and idle --cluster start a redis-server (on PATH
or /usr/bin) on a free loopback port and run the gateways as a cluster on
it; docs/CLUSTER.md explains the rows they add.

Environment: PORTCULLIS_BENCH_CPUPROFILE=FILE writes the gateway's CPU
profile; PORTCULLIS_BENCH_MEMPROFILE=FILE its heap profile (idle bench).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.CompletionOptions.DisableDefaultCmd = true
	cmd.PersistentFlags().StringVar(gw, "gateway", "",
		"portcullis binary to start (default: next to portcullis-bench, else built from the source tree, else on PATH)")
	cmd.PersistentFlags().IntVar(&clientNice, "client-nice", defaultClientNice,
		"nice value (0-19) of the load-generator processes that stand in for clients on other machines: fanout's subscribers and the write floor's readers, stall's closing and reconnecting connections")
	cmd.PersistentFlags().StringVar(&serverCPUs, "server-cpus", "",
		"run the servers (gateway, Centrifugo) on these CPUs only (taskset -c LIST, e.g. 1); run the bench itself under taskset -c for the others, so that the load generator does not take the servers' cores")
	cmd.PersistentFlags().BoolVar(&noIOURing, "no-io-uring", false,
		"start the gateway with io_uring: false, so that its loops send with write(2) and writev(2)")
	// Each command has its own variables: flags bound to one variable
	// would all take the default registered last.
	var conns, hsConns, subs, count int
	var fanoutProto string
	var rate float64
	var hold time.Duration
	var useTLS bool
	var peer, peerBin string
	var nodes int
	var idleCluster bool
	peerFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&peer, "peer", "", "also run the scenario against this peer and print the ratio (centrifugo)")
		c.Flags().StringVar(&peerBin, "centrifugo-bin", "", "Centrifugo v6 binary (default: installed with go install into the user cache)")
	}
	idle := &cobra.Command{
		Use:   "idle [--conns 15000] [--hold 5s] [--tls] [--cluster] [--peer centrifugo]",
		Short: "hold idle subscribed connections; report server RSS per connection and goroutines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			scheme := "ws://"
			if useTLS {
				c, err := newBenchCert()
				if err != nil {
					return fmt.Errorf("--tls: %w", err)
				}
				defer c.remove()
				benchTLS, scheme = c, "wss://"
			}
			starts, err := columns(peer, peerBin, 1, nil)
			if err != nil {
				return err
			}
			title := fmt.Sprintf("idle: %d subscribed %s connections", conns, scheme)
			if idleCluster {
				r, err := startRedis()
				if err != nil {
					return err
				}
				defer r.stop()
				clustered := func() (target, error) { return startGatewayNodes(1, r) }
				starts = append([]starter{clustered}, starts...)
				title += "; portcullis×1 is a one-node cluster on redis-server, beside a gateway without a cluster"
			}
			return compare(title, starts, idleScenario(conns, hold))
		},
	}
	idle.Flags().IntVar(&conns, "conns", 15000, "connections")
	idle.Flags().DurationVar(&hold, "hold", 5*time.Second, "settle time before measuring")
	idle.Flags().BoolVar(&useTLS, "tls", false, "serve wss:// from both servers (a self-signed certificate generated for the run)")
	idle.Flags().BoolVar(&idleCluster, "cluster", false,
		"also run the gateway as a one-node cluster on a redis-server started for the run, in the first column (the ratio is clustered / single)")
	peerFlags(idle)
	fanout := &cobra.Command{
		Use:   "fanout [--subs 5000] [--rate 5] [--count 100] [--proto native|wamp1|wamp2] [--nodes 1] [--peer centrifugo]",
		Short: "publish to many subscribers; report server CPU per delivered message and latency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch fanoutProto {
			case "native":
				gatewayProto = "portcullis"
			case "wamp1", "wamp2":
				gatewayProto = fanoutProto
			default:
				return fmt.Errorf("--proto %q: native, wamp1 or wamp2", fanoutProto)
			}
			if nodes < 1 {
				return fmt.Errorf("--nodes %d: at least 1", nodes)
			}
			title := fmt.Sprintf("fanout (%s): %d subscribers × %d messages at %.0f/s", fanoutProto, subs, count, rate)
			var redis *redisServer
			if nodes > 1 {
				r, err := startRedis()
				if err != nil {
					return err
				}
				defer r.stop()
				redis = r
				title += fmt.Sprintf(", %d nodes on one redis-server, subscribers round robin, published through node 1", nodes)
			}
			starts, err := columns(peer, peerBin, nodes, redis)
			if err != nil {
				return err
			}
			return compare(title, starts, fanoutScenario(subs, rate, count))
		},
	}
	fanout.Flags().StringVar(&fanoutProto, "proto", "native", "protocol the Portcullis subscribers speak: native, wamp1 (seed topic) or wamp2 (ticket auth)")
	fanout.Flags().IntVar(&subs, "subs", 5000, "subscribers")
	fanout.Flags().Float64Var(&rate, "rate", 5, "publications per second")
	fanout.Flags().IntVar(&count, "count", 100, "publications")
	fanout.Flags().IntVar(&nodes, "nodes", 1,
		"servers per column: above 1, a cluster of that many on a redis-server started for the run (Centrifugo with its Redis engine)")
	peerFlags(fanout)
	handshake := &cobra.Command{
		Use:   "handshake [--conns 5000] [--peer centrifugo]",
		Short: "connect + token + subscribe as fast as possible; report set-ups/s and server CPU per set-up",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			starts, err := columns(peer, peerBin, 1, nil)
			if err != nil {
				return err
			}
			return compare(fmt.Sprintf("handshake: %d connect+token+subscribe set-ups", hsConns), starts, handshakeScenario(hsConns))
		},
	}
	handshake.Flags().IntVar(&hsConns, "conns", 5000, "connections")
	peerFlags(handshake)
	var fs floodSettings
	flood := &cobra.Command{
		Use:   "flood [--subs 2000] [--rate 10] [--count 100] [--flood 5000]",
		Short: "flood from a banned prefix; report server CPU per refused connection and subscribers' p99 under the flood",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if fs.rate <= 0 || fs.count <= 0 || fs.subs <= 0 || fs.flood <= 0 || fs.flooders <= 0 || fs.addrs <= 0 {
				return errors.New("--subs, --rate, --count, --flood, --flooders and --flood-addrs must be positive")
			}
			g, err := startGateway()
			if err != nil {
				return err
			}
			r, err := floodScenario(fs)(g)
			g.stop()
			if err != nil {
				return err
			}
			printResults(fmt.Sprintf("flood: %d subscribers × %d messages at %.0f/s, baseline then under %.0f connection attempts/s from banned %s",
				fs.subs, fs.count, fs.rate, fs.flood, floodPrefix), []string{"portcullis"}, []result{r})
			floodBars(r)
			return nil
		},
	}
	flood.Flags().IntVar(&fs.subs, "subs", 2000, "subscribers")
	flood.Flags().Float64Var(&fs.rate, "rate", 10, "publications per second (each phase)")
	flood.Flags().IntVar(&fs.count, "count", 100, "publications (each phase)")
	flood.Flags().Float64Var(&fs.flood, "flood", 5000, "connection attempts per second from the banned prefix")
	flood.Flags().DurationVar(&fs.window, "window", 5*time.Second, "flood-only window that measures server CPU per refused connection")
	flood.Flags().IntVar(&fs.flooders, "flooders", 2, "flooding processes")
	flood.Flags().IntVar(&fs.addrs, "flood-addrs", floodAddrsPerProc, "source addresses per flooding process (of 65,024 in the prefix)")
	var ss stallSettings
	var withFloor bool
	stall := &cobra.Command{
		Use:   "stall [--conns 15000] [--bystanders 100] [--rounds 1] [--peer centrifugo] [--floor]",
		Short: "close many connections at once and reconnect them; report bystanders' ping→pong and the loop turns",
		Long: `stall connects --bystanders connections that ping the server every 10 ms
(one ping in flight each) and --conns subscribed ones, then closes the
--conns all at once (their load-generator processes are killed, so the
kernel closes every socket: a client-side network drop), waits until the
server holds none of them, and reconnects them with tokens minted
beforehand until all are subscribed; --rounds times. It reports the
bystanders' ping→pong round trips over that episode, the time of the
close and of the reconnect, the server's CPU time and how long its
threads waited for a core (runnable, on a run queue), and the gateway's
loop-turn distribution (/v1/stats "loop_turns"; n/a from a gateway
without it).

--floor adds a last column: the same episode against the stall floor, a
server in this executable that does only the socket work the episode
needs (accept, upgrade, answer the subscribe and the pings, close), so
that its round trips and its loop turns are what the machine imposes on
any server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ss.conns <= 0 || ss.bystanders <= 0 || ss.rounds <= 0 {
				return errors.New("--conns, --bystanders and --rounds must be positive")
			}
			if ss.bystanders > perWorker {
				return fmt.Errorf("--bystanders %d: at most %d", ss.bystanders, perWorker)
			}
			starts, err := columns(peer, peerBin, 1, nil)
			if err != nil {
				return err
			}
			if withFloor {
				starts = append(starts, func() (target, error) { return startFloor() })
			}
			return compare(fmt.Sprintf("stall: %d connections closed at once and reconnected (%d round(s)), %d bystanders pinging every %s",
				ss.conns, ss.rounds, ss.bystanders, pingInterval), starts, stallScenario(ss))
		},
	}
	stall.Flags().IntVar(&ss.conns, "conns", 15000, "connections closed at once and reconnected")
	stall.Flags().IntVar(&ss.bystanders, "bystanders", 100, "connections that ping throughout and time the pongs")
	stall.Flags().IntVar(&ss.rounds, "rounds", 1, "close + reconnect episodes")
	stall.Flags().BoolVar(&withFloor, "floor", false, "also run the episode against the stall floor (a server doing only the socket work) in a last column")
	peerFlags(stall)
	var floorPort int
	floorServer := &cobra.Command{
		Use:    "floor-server --port N",
		Short:  "the stall floor's server (started by stall --floor)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFloorServer(floorPort, os.Stdin, os.Stdout)
		},
	}
	floorServer.Flags().IntVar(&floorPort, "port", 0, "loopback port to serve")
	worker := &cobra.Command{
		Use:    "worker",
		Short:  "one load-generator child process (started by the benches)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWorker(os.Stdin, os.Stdout)
		},
	}
	cmd.AddCommand(idle, fanout, handshake, flood, stall, worker, floorServer)
	return cmd
}
