package gateway

import (
	"fmt"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/gateway/reactor"
)

// listenBacklog is each listening socket's accept queue.
const listenBacklog = 4096

// Listeners are the public listening sockets, one per event loop, all on
// one port through SO_REUSEPORT. Binding them is separate from Start so
// that a process learns the port is taken before it writes anything (the
// audit trail, the run marker); until Start hands them to the loops,
// connections wait in the kernel's accept queue.
type Listeners struct {
	fds  []int
	addr netip.AddrPort
}

// Bind opens n listening sockets on addr ("host:port"; port 0 lets the
// kernel choose one, which every further socket then shares).
func Bind(addr string, n int) (*Listeners, error) {
	if n <= 0 {
		return nil, fmt.Errorf("gateway: bind %s: %d sockets", addr, n)
	}
	l := &Listeners{}
	listen := addr
	for i := 0; i < n; i++ {
		fd, bound, err := reactor.Listen(listen, listenBacklog)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		l.fds = append(l.fds, fd)
		if i == 0 {
			l.addr = bound
			// Every further socket binds the port the first one got, so
			// that ":0" still means one port shared by SO_REUSEPORT.
			host := addr[:len(addr)-len(portOf(addr))]
			listen = host + strconv.Itoa(int(bound.Port()))
		}
	}
	return l, nil
}

// Addr is the address the sockets are bound to.
func (l *Listeners) Addr() netip.AddrPort { return l.addr }

// Close closes the sockets Start has not taken over; a no-op after Start.
func (l *Listeners) Close() { l.closeFrom(0) }

func (l *Listeners) closeFrom(i int) {
	if i < len(l.fds) {
		for _, fd := range l.fds[i:] {
			if fd >= 0 { // -1: handed to the TLS front
				_ = unix.Close(fd)
			}
		}
	}
	l.fds = nil
}
