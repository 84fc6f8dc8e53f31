package wamp

import (
	"crypto/rand"
	"encoding/binary"
	"hash/maphash"
	mrand "math/rand/v2"
)

// IDs derives the WAMP v2 ids of one server run. It is immutable after
// NewIDs and safe for simultaneous use by multiple goroutines.
//
//   - Session ids are a keyed bijection of the connection id onto
//     [1, 2^53]: they look random, yet the broker maps one back to its
//     connection (for exclude/eligible lists) without any table.
//   - Subscription ids are a keyed hash of the topic into [1, 2^53]: every
//     subscriber of a topic, on every event loop, gets the same id, so one
//     EVENT frame per publication serves all of them.
//   - Publication ids are random (NewPublicationID).
type IDs struct {
	seed maphash.Seed
	k    [3]uint64 // keys of the session bijection
}

// NewIDs returns ids keyed from crypto/rand.
func NewIDs() *IDs {
	var b [24]byte
	_, _ = rand.Read(b[:])
	x := &IDs{seed: maphash.MakeSeed()}
	for i := range x.k {
		x.k[i] = binary.LittleEndian.Uint64(b[8*i:]) & mask53
	}
	return x
}

const mask53 = 1<<53 - 1

// Two odd multipliers mod 2^53 and their inverses (m·inv ≡ 1 mod 2^53).
const (
	mul1 = 0x1f3d5b79a2c4e6b&mask53 | 1
	mul2 = 0x0b5ad4eceda1ce3&mask53 | 1
)

var inv1, inv2 = inverse(mul1), inverse(mul2)

// inverse returns the multiplicative inverse of odd a modulo 2^53
// (Newton's iteration doubles the correct low bits each step).
func inverse(a uint64) uint64 {
	x := a // correct to 3 bits for odd a
	for i := 0; i < 6; i++ {
		x *= 2 - a*x
	}
	return x & mask53
}

// Session maps a connection id onto a session id. Connection ids above
// 2^53-1 wrap (never reached: one per connection).
func (x *IDs) Session(conn uint64) ID {
	v := conn & mask53
	v ^= x.k[0]
	v = (v * mul1) & mask53
	v ^= v >> 26
	v ^= x.k[1]
	v = (v * mul2) & mask53
	v ^= v >> 29
	v ^= x.k[2]
	return ID(v + 1)
}

// Conn maps a session id back to the connection id it was made from.
func (x *IDs) Conn(session ID) (uint64, bool) {
	if !session.Valid() {
		return 0, false
	}
	v := uint64(session) - 1
	v ^= x.k[2]
	v = unxorshift(v, 29)
	v = (v * inv2) & mask53
	v ^= x.k[1]
	v = unxorshift(v, 26)
	v = (v * inv1) & mask53
	v ^= x.k[0]
	return v, true
}

// unxorshift inverts v ^= v >> s on 53 bits.
func unxorshift(v uint64, s uint) uint64 {
	r := v
	for i := s; i < 53; i += s {
		r = v ^ r>>s
	}
	return r & mask53
}

// Subscription is the subscription id of topic: the same for every
// subscriber of the topic during this run.
func (x *IDs) Subscription(topic string) ID {
	return ID(maphash.String(x.seed, topic)&mask53 + 1)
}

// NewPublicationID returns a random id in [1, 2^53].
func NewPublicationID() ID { return ID(mrand.Uint64N(MaxID) + 1) }
