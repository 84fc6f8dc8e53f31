package tokens

import (
	"net/netip"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// A spent token presented again is one of two things. A browser that lost
// its connection reconnects with the token it has (AutobahnJS 0.8 does),
// from the same address and as the same user: reason.TokenReplayed, a
// light strike, every time it happens. The same token from another address
// — or as another user — is what a stolen token looks like:
// reason.TokenTheft, critical in the audit trail and heavy enough to ban the
// presenting address at once. "The same address" is the counted address
// (an IPv4 address, an IPv6 /64 by default): the unit strikes and bans
// count, so that a reconnect over IPv6 privacy addresses is not theft.
// Both are refused: a token serves only the connection that redeemed it.

// Presenter is who presents a token: a connection, its client address and
// the user it claims to be.
type Presenter struct {
	Conn    uint64       // connection id, non-zero
	Addr    netip.Addr   // client address; invalid when unknown
	Counted netip.Prefix // the prefix Addr is counted and banned under (clientip.Key); invalid: Addr alone
	UserID  string       // the user the client claims (a message's userId, a WAMP authid)
}

// sameAddress reports whether a falls in p's counted address.
func (p Presenter) sameAddress(a netip.Addr) bool {
	if p.Counted.IsValid() {
		return p.Counted.Contains(a)
	}
	return p.Addr.Unmap().WithZone("") == a
}

// Spent says who redeemed a token that was presented again elsewhere. The
// zero value means nothing was spent.
type Spent struct {
	By netip.Addr // client address of the connection that redeemed it; invalid when not known
	At time.Time  // when it was redeemed
}

// Redemption records who redeemed a token, in 32 bytes so that a token
// source can keep one per redeemed token: the connection, its client
// address and the time. Token sources share it so that every source judges
// a spent token alike.
type Redemption struct {
	conn uint64
	at   int64    // Unix nanoseconds
	addr [16]byte // client address in its 16-byte form; all zero when unknown
}

// NewRedemption records that p redeemed a token at now.
func NewRedemption(p Presenter, now time.Time) Redemption {
	r := Redemption{conn: p.Conn, at: now.UnixNano()}
	if p.Addr.IsValid() {
		r.addr = p.Addr.WithZone("").As16()
	}
	return r
}

// By is the client address of the redeeming connection (invalid when it
// was not known).
func (r *Redemption) By() netip.Addr {
	if r.addr == ([16]byte{}) {
		return netip.Addr{}
	}
	return netip.AddrFrom16(r.addr).Unmap()
}

// At is when the token was redeemed.
func (r *Redemption) At() time.Time { return time.Unix(0, r.at) }

// RestoredRedemption records a redemption read back from disk after a
// restart: by the client address by (invalid when not recorded) at at, on
// no connection, so that every presentation is judged by Again as a spent
// token.
func RestoredRedemption(by netip.Addr, at time.Time) Redemption {
	r := Redemption{at: at.UnixNano()}
	if by.IsValid() {
		r.addr = by.WithZone("").As16()
	}
	return r
}

// Details of a refused spent token in Result.Detail.
const (
	DetailReconnect     = "already redeemed by another connection from the same address as the same user"
	DetailUnknownSide   = "already redeemed by another connection; one of the two addresses is unknown"
	DetailOtherAddress  = "already redeemed by a connection from another address"
	DetailOtherUser     = "already redeemed by a connection from the same address, presented as another user"
	DetailOtherBoth     = "already redeemed by a connection from another address, presented as another user"
	DetailSameConnOther = "another token with the same id was redeemed on this connection"
)

// Again judges a new presentation by p of the token r records, which was
// minted for tokenUser. On the redeeming connection it returns a zero
// Result (reason.None). Elsewhere the token is spent: reason.TokenReplayed
// when p comes from the redeemer's counted address and claims tokenUser —
// or when either address is unknown, as nothing then tells a thief apart —
// and reason.TokenTheft otherwise. Result.Spent names the redeemer and
// Result.Detail says which case it is (one of the Detail constants).
func (r *Redemption) Again(p Presenter, tokenUser string) Result {
	if p.Conn == r.conn {
		return Result{}
	}
	by := r.By()
	res := Result{Spent: Spent{By: by, At: r.At()}, Reason: reason.TokenReplayed}
	if !by.IsValid() || !p.Addr.IsValid() {
		res.Detail = DetailUnknownSide
		return res
	}
	sameAddr, sameUser := p.sameAddress(by), p.UserID == tokenUser
	switch {
	case sameAddr && sameUser:
		res.Detail = DetailReconnect
		return res
	case sameAddr:
		res.Detail = DetailOtherUser
	case sameUser:
		res.Detail = DetailOtherAddress
	default:
		res.Detail = DetailOtherBoth
	}
	res.Reason = reason.TokenTheft
	return res
}

// Result is what presenting a token to a token source gives: the grant
// when it is accepted; otherwise the reason, a short detail for the audit
// trail and, for a spent token, who redeemed it. The detail names the
// failed check; it never contains the token or a key, and it is not for
// the client, who must not learn why authentication failed.
type Result struct {
	Grant  *Grant        // the token's grant; nil unless Reason is reason.None
	Spent  Spent         // who redeemed a spent token (reason.TokenReplayed, reason.TokenTheft); zero otherwise
	Reason reason.Reason // reason.None when accepted
	Detail string        // why it was refused, for the audit trail; "" when accepted
}

// refused is the Result of a refusal for r with detail.
func refused(r reason.Reason, detail string) Result { return Result{Reason: r, Detail: detail} }
