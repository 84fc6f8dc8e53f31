package jwttoken

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// redeemDetail redeems tok on connection conn, its address unknown.
func redeemDetail(s *Source, tok string, conn uint64, now time.Time) (*Grant, reason.Reason, string) {
	res := s.Redeem(tok, tokens.Presenter{Conn: conn}, now)
	if (res.Reason == reason.None) != (res.Grant != nil) || (res.Reason == reason.None) != (res.Detail == "") {
		panic("Result: grant, reason and detail disagree")
	}
	return res.Grant, res.Reason, res.Detail
}

// redeemOn is redeemDetail without the detail.
func redeemOn(s *Source, tok string, conn uint64, now time.Time) (*Grant, reason.Reason) {
	g, r, _ := redeemDetail(s, tok, conn, now)
	return g, r
}

// from is a presenter on connection conn from addr (counted per /64 for
// IPv6, as by default) claiming user.
func from(conn uint64, addr, user string) tokens.Presenter {
	a := netip.MustParseAddr(addr)
	return tokens.Presenter{Conn: conn, Addr: a, Counted: clientip.Key(a, 64), UserID: user}
}

type presentation struct {
	name   string
	p      tokens.Presenter
	reason reason.Reason
	detail string // the Result.Detail wanted, after "jti "
}

// check presents tok as each case at now and checks the verdict, the
// detail and who the Result says redeemed it.
func check(t *testing.T, s *Source, tok string, now time.Time, by netip.Addr, at time.Time, cases []presentation) {
	t.Helper()
	for _, tc := range cases {
		res := s.Redeem(tok, tc.p, now)
		if res.Reason != tc.reason {
			t.Errorf("%s: %v (%q), want %v", tc.name, res.Reason, res.Detail, tc.reason)
			continue
		}
		if tc.reason == reason.None {
			if res.Grant == nil || res.Grant.UserID() != "42" || res.Detail != "" || res.Spent != (tokens.Spent{}) {
				t.Errorf("%s: %+v", tc.name, res)
			}
			continue
		}
		if res.Grant != nil || res.Detail != "jti "+tc.detail || strings.Contains(res.Detail, tok) {
			t.Errorf("%s: grant %v detail %q, want %q", tc.name, res.Grant, res.Detail, "jti "+tc.detail)
		}
		if res.Spent.By != by || !res.Spent.At.Equal(at) {
			t.Errorf("%s: spent %+v, want by %v at %v", tc.name, res.Spent, by, at)
		}
	}
}

// A spent JWT from the redeemer's counted address as its sub is a
// reconnect (token_replayed, every time); from another address, or as
// another user, it is token_theft_suspected.
func TestReplayOrTheft(t *testing.T) {
	f := newFixture(t)
	s := f.source(t, Options{})
	tok := signHeader(t, nil, claimsAt(t0, "theft"))
	at := t0.Add(time.Second)
	if res := s.Redeem(tok, from(1, "192.0.2.10", "42"), at); res.Reason != reason.None || res.Grant == nil {
		t.Fatalf("first redemption: %+v", res)
	}
	by := netip.MustParseAddr("192.0.2.10")
	check(t, s, tok, at.Add(time.Second), by, at, []presentation{
		{"same connection", from(1, "192.0.2.10", "42"), reason.None, ""},
		{"reconnect", from(2, "192.0.2.10", "42"), reason.TokenReplayed, tokens.DetailReconnect},
		{"second reconnect", from(3, "192.0.2.10", "42"), reason.TokenReplayed, tokens.DetailReconnect},
		{"mapped form of the same address", from(4, "::ffff:192.0.2.10", "42"), reason.TokenReplayed, tokens.DetailReconnect},
		{"other address", from(5, "192.0.2.11", "42"), reason.TokenTheft, tokens.DetailOtherAddress},
		{"other user", from(6, "192.0.2.10", "43"), reason.TokenTheft, tokens.DetailOtherUser},
		{"other address and user", from(7, "198.51.100.1", "43"), reason.TokenTheft, tokens.DetailOtherBoth},
		{"address unknown", tokens.Presenter{Conn: 8, UserID: "42"}, reason.TokenReplayed, tokens.DetailUnknownSide},
	})
	// Another token carrying the spent jti: on the redeeming connection a
	// replay, elsewhere judged like the token itself.
	c := claimsAt(t0, "theft")
	c["iat"] = t0.Add(time.Second).Unix()
	twin := signHeader(t, nil, c)
	check(t, s, twin, at.Add(2*time.Second), by, at, []presentation{
		{"twin on the redeeming connection", from(1, "192.0.2.10", "42"), reason.TokenReplayed, tokens.DetailSameConnOther},
		{"twin from elsewhere", from(9, "192.0.2.99", "42"), reason.TokenTheft, tokens.DetailOtherAddress},
	})
}

// The state file keeps who redeemed each jti: after a restart a reconnect
// is still a replay and another address still a theft. IPv6 addresses
// are judged by their /64.
func TestTheftAfterRestart(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "jti.db")
	v4 := signHeader(t, nil, claimsAt(t0, "v4"))
	v6 := signHeader(t, nil, claimsAt(t0, "v6"))
	s1 := f.source(t, Options{})
	if err := s1.OpenState(path, t0); err != nil {
		t.Fatal(err)
	}
	if res := s1.Redeem(v4, from(1, "192.0.2.10", "42"), t0); res.Reason != reason.None {
		t.Fatal(res.Reason)
	}
	if res := s1.Redeem(v6, from(2, "2001:db8:1:2::10", "42"), t0); res.Reason != reason.None {
		t.Fatal(res.Reason)
	}
	if err := s1.Close(t0); err != nil {
		t.Fatal(err)
	}

	now := t0.Add(5 * time.Second)
	s2 := f.source(t, Options{})
	if err := s2.OpenState(path, now); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s2.Close(now); err != nil {
			t.Error(err)
		}
	}()
	// Connection ids start again at 1 after a restart: even the old
	// redeemer's id finds the jti spent.
	check(t, s2, v4, now, netip.MustParseAddr("192.0.2.10"), t0, []presentation{
		{"reconnect, old connection id", from(1, "192.0.2.10", "42"), reason.TokenReplayed, tokens.DetailReconnect},
		{"other address", from(3, "192.0.2.11", "42"), reason.TokenTheft, tokens.DetailOtherAddress},
		{"other user", from(4, "192.0.2.10", "7"), reason.TokenTheft, tokens.DetailOtherUser},
	})
	check(t, s2, v6, now, netip.MustParseAddr("2001:db8:1:2::10"), t0, []presentation{
		{"same /64", from(5, "2001:db8:1:2:aaaa::1", "42"), reason.TokenReplayed, tokens.DetailReconnect},
		{"other /64", from(6, "2001:db8:1:3::10", "42"), reason.TokenTheft, tokens.DetailOtherAddress},
	})
}

// A state file written before the redeemer's address was recorded (8-byte
// values) still refuses its jtis after a restart, as replays: nothing
// tells a thief apart.
func TestOldStateValuesAreReplays(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "jti.db")
	s1 := f.source(t, Options{})
	if err := s1.OpenState(path, t0); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(t0); err != nil {
		t.Fatal(err)
	}
	tok := signHeader(t, nil, claimsAt(t0, "old"))
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	jti := sha256.Sum256([]byte("old"))
	k := binary.BigEndian.AppendUint64(nil, uint64(t0.Add(time.Minute+DefaultLeeway).UnixNano()))
	k = append(k, jti[:]...)
	v := binary.BigEndian.AppendUint64(nil, uint64(t0.UnixNano()))
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketJTIs).Put(k, v) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	now := t0.Add(time.Second)
	s2 := f.source(t, Options{})
	if err := s2.OpenState(path, now); err != nil {
		t.Fatal(err)
	}
	defer s2.Close(now)
	if st := s2.StateStats(); st.Restored != 1 {
		t.Fatalf("stats %+v", st)
	}
	check(t, s2, tok, now, netip.Addr{}, t0, []presentation{
		{"any address", from(1, "192.0.2.10", "42"), reason.TokenReplayed, tokens.DetailUnknownSide},
		{"another", from(2, "198.51.100.7", "43"), reason.TokenReplayed, tokens.DetailUnknownSide},
	})
}

// A refusal's detail says which check failed, for the audit trail.
func TestRefusalDetail(t *testing.T) {
	f := newFixture(t)
	s := f.source(t, Options{Audience: "portcullis"})
	c := claimsAt(t0, "aud")
	c["aud"] = []string{"api"}
	res := s.Redeem(signHeader(t, nil, c), from(1, "192.0.2.10", "42"), t0)
	if res.Reason != reason.TokenInvalid || res.Detail != `aud ["api"] does not name tokens.jwt.audience` || res.Grant != nil {
		t.Fatalf("%+v", res)
	}
}
