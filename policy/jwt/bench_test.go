package jwttoken

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// BenchmarkRedeem measures one presentation of an already redeemed token on
// its own connection: parse, signature, claims and the cache lookup — the
// work of every subscribe carrying a JWT.
func BenchmarkRedeem(b *testing.B) {
	f := newFixture(b)
	for _, alg := range []string{HS256, EdDSA} {
		b.Run(alg, func(b *testing.B) {
			s := f.source(b, Options{Algorithms: []string{HS256, EdDSA}})
			tok := sign(b, jwt.SigningMethodHS256, secret, claimsAt(t0, "bench"))
			if alg == EdDSA {
				tok = sign(b, jwt.SigningMethodEdDSA, f.edPriv, claimsAt(t0, "bench"))
			}
			b.ReportAllocs()
			for b.Loop() {
				if res := s.Redeem(tok, tokens.Presenter{Conn: 1}, t0); res.Reason != reason.None {
					b.Fatal(res.Reason)
				}
			}
		})
	}
}
