package frame

import (
	"math/bits"
	"sync"
)

// Buffers for partial frames and open messages come from size-classed pools:
// powers of two from 256 B to 4 MiB. A buffer grows by moving to the next
// class as bytes actually arrive, so a header announcing 64 KiB followed by a
// trickle costs memory in proportion to the trickle, and doubling keeps the
// copies amortized. Larger buffers (only with limits above 4 MiB) are plain
// allocations left to the garbage collector.
const (
	minClassShift = 8  // 256 B
	maxClassShift = 22 // 4 MiB
)

var pools [maxClassShift - minClassShift + 1]sync.Pool

// classOf returns the index of the smallest class holding n bytes, or -1
// when n exceeds the largest class.
func classOf(n int) int {
	switch {
	case n <= 1<<minClassShift:
		return 0
	case n > 1<<maxClassShift:
		return -1
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// getBuf returns an empty buffer with capacity for at least n bytes.
func getBuf(n int) *[]byte {
	c := classOf(n)
	if c < 0 {
		b := make([]byte, 0, n)
		return &b
	}
	if v := pools[c].Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 0, 1<<(c+minClassShift))
	return &b
}

// putBuf returns b to its class; nil and off-class buffers are ignored.
func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	c := classOf(cap(*b))
	if c < 0 || cap(*b) != 1<<(c+minClassShift) {
		return
	}
	*b = (*b)[:0]
	pools[c].Put(b)
}

// appendBuf appends chunk to the pooled buffer b (nil for none), moving to a
// larger class when it is full, and returns the buffer now in use.
func appendBuf(b *[]byte, chunk []byte) *[]byte {
	if len(chunk) == 0 {
		return b
	}
	if b == nil {
		b = getBuf(len(chunk))
	} else if need := len(*b) + len(chunk); need > cap(*b) {
		nb := getBuf(max(need, min(2*cap(*b), need+need/2)))
		*nb = append(*nb, *b...)
		putBuf(b)
		b = nb
	}
	*b = append(*b, chunk...)
	return b
}
