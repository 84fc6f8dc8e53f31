package reactor

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// Listen opens a non-blocking listening TCP socket on addr ("host:port",
// host may be empty for every address) with SO_REUSEPORT, so each loop can
// hold its own socket for the same port and the kernel spreads connections
// across them. Go's netpoller never sees these fds.
func Listen(addr string, backlog int) (fd int, bound netip.AddrPort, err error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return -1, bound, fmt.Errorf("listen %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return -1, bound, fmt.Errorf("listen %q: bad port: %w", addr, err)
	}
	var ip netip.Addr
	switch host {
	case "", "::", "[::]":
		ip = netip.IPv6Unspecified()
	case "localhost":
		ip = netip.MustParseAddr("127.0.0.1")
	default:
		ip, err = netip.ParseAddr(host)
		if err != nil {
			return -1, bound, fmt.Errorf("listen %q: host must be an IP address: %w", addr, err)
		}
	}
	ip = ip.Unmap()
	family := unix.AF_INET6
	if ip.Is4() {
		family = unix.AF_INET
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, bound, fmt.Errorf("listen %q: socket: %w", addr, err)
	}
	fail := func(what string, e error) (int, netip.AddrPort, error) {
		unix.Close(fd)
		return -1, netip.AddrPort{}, fmt.Errorf("listen %q: %s: %w", addr, what, e)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail("SO_REUSEPORT", err)
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(port), Addr: ip.As4()}
	} else {
		if ip.IsUnspecified() {
			_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
		}
		sa = &unix.SockaddrInet6{Port: int(port), Addr: ip.As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail("listen", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	return fd, sockaddrToAddrPort(got), nil
}

// sockaddrToAddrPort converts a socket address; IPv4-mapped IPv6 addresses
// are unmapped so that one client has one spelling.
func sockaddrToAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}
