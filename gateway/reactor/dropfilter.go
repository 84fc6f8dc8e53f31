package reactor

import (
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// MaxDropPrefixes bounds the prefixes one drop filter holds (a classic BPF
// program has at most 4,096 instructions; an IPv6 prefix takes up to 13).
const MaxDropPrefixes = 256

// skfNetOff is SKF_NET_OFF: BPF loads relative to the network header.
const skfNetOff = -0x100000

// DropFilter builds a classic BPF socket filter that drops every packet
// whose source address is inside one of prefixes (IPv4 and IPv6, IPv4-mapped
// prefixes as IPv4) and accepts everything else. Attached to a listening
// TCP socket it drops the SYNs of those sources in the kernel, before a
// connection exists: the sender gets no answer at all. At most
// MaxDropPrefixes prefixes are used.
func DropFilter(prefixes []netip.Prefix) []unix.SockFilter {
	var v4, v6 []netip.Prefix
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if len(v4)+len(v6) >= MaxDropPrefixes {
			break
		}
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	const (
		ldB   = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
		ldW   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		rsh   = unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K
		and   = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ja    = unix.BPF_JMP | unix.BPF_JA
		ret   = unix.BPF_RET | unix.BPF_K
		tax   = unix.BPF_MISC | unix.BPF_TAX
		txa   = unix.BPF_MISC | unix.BPF_TXA
		net   = uint32(skfNetOff & 0xffffffff)
		keep  = 0xffffffff
		drop  = 0
		jump1 = 1
	)
	ins := func(code uint16, jt, jf uint8, k uint32) unix.SockFilter {
		return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
	}
	var prog []unix.SockFilter
	version := []unix.SockFilter{ins(ldB, 0, 0, net), ins(rsh, 0, 0, 4)}

	// IPv4: the source address at network offset 12, kept in X.
	prog = append(prog, version...)
	prog = append(prog, ins(jeq, jump1, 0, 4)) // IPv4: skip the jump over this block
	skip4 := len(prog)
	prog = append(prog, ins(ja, 0, 0, 0)) // patched below
	prog = append(prog, ins(ldW, 0, 0, net+12), ins(tax, 0, 0, 0))
	for _, p := range v4 {
		a := p.Addr().As4()
		val := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		mask := uint32(0)
		if p.Bits() > 0 {
			mask = ^uint32(0) << (32 - p.Bits())
		}
		prog = append(prog, ins(txa, 0, 0, 0), ins(and, 0, 0, mask), ins(jeq, 0, jump1, val), ins(ret, 0, 0, drop))
	}
	prog = append(prog, ins(ret, 0, 0, keep))
	prog[skip4].K = uint32(len(prog) - skip4 - 1)

	// IPv6: the source address at network offset 8, four words.
	prog = append(prog, version...)
	prog = append(prog, ins(jeq, jump1, 0, 6))
	prog = append(prog, ins(ret, 0, 0, keep))
	for _, p := range v6 {
		a := p.Addr().As16()
		var block []unix.SockFilter
		for w := 0; w < 4 && w*32 < p.Bits(); w++ {
			val := uint32(a[4*w])<<24 | uint32(a[4*w+1])<<16 | uint32(a[4*w+2])<<8 | uint32(a[4*w+3])
			mask := ^uint32(0)
			if rest := p.Bits() - w*32; rest < 32 {
				mask = ^uint32(0) << (32 - rest)
			}
			block = append(block, ins(ldW, 0, 0, net+8+uint32(4*w)))
			if mask != ^uint32(0) {
				block = append(block, ins(and, 0, 0, mask))
			}
			block = append(block, ins(jeq, 0, 0, val&mask)) // jf patched: to the next prefix
		}
		block = append(block, ins(ret, 0, 0, drop))
		for i := range block {
			if block[i].Code == jeq {
				block[i].Jf = uint8(len(block) - i - 1)
			}
		}
		prog = append(prog, block...)
	}
	return append(prog, ins(ret, 0, 0, keep))
}

// AttachDropFilter installs prog (from DropFilter) on a listening socket,
// replacing any filter it had; an empty prog removes the filter.
func AttachDropFilter(fd int, prog []unix.SockFilter) error {
	if len(prog) == 0 {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil // none attached
		}
		return err
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
}
