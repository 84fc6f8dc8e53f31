package jwttoken

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/schema"
)

// signHeader signs c with HS256 and the extra header fields h.
func signHeader(t testing.TB, h map[string]any, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	for k, v := range h {
		if v == nil {
			delete(tok.Header, k)
			continue
		}
		tok.Header[k] = v
	}
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRedeemHardening: each way a validly signed token can still be wrong
// is token_invalid with a detail naming the check; the near misses pass.
func TestRedeemHardening(t *testing.T) {
	f := newFixture(t)
	plain := f.source(t, Options{})
	scoped := f.source(t, Options{Audience: "portcullis", Issuer: "https://site.example"})
	with := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := claimsAt(t0, "j")
		c["aud"], c["iss"] = "portcullis", "https://site.example"
		mod(c)
		return c
	}
	same := func(jwt.MapClaims) {}
	cases := []struct {
		name   string
		src    *Source
		token  string
		want   reason.Reason
		detail string
	}{
		{"aud string", scoped, signHeader(t, nil, with(same)), reason.None, ""},
		{"aud array containing it", scoped, signHeader(t, nil, with(func(c jwt.MapClaims) { c["aud"] = []string{"api", "portcullis"} })), reason.None, ""},
		{"aud other", scoped, signHeader(t, nil, with(func(c jwt.MapClaims) { c["aud"] = "api" })), reason.TokenInvalid, `aud ["api"] does not name tokens.jwt.audience`},
		{"aud array without it", scoped, signHeader(t, nil, with(func(c jwt.MapClaims) { c["aud"] = []string{"api", "billing"} })), reason.TokenInvalid, "does not name tokens.jwt.audience"},
		{"aud missing", scoped, signHeader(t, nil, with(func(c jwt.MapClaims) { delete(c, "aud") })), reason.TokenInvalid, "aud claim missing"},
		{"aud not a string", scoped, signHeader(t, nil, with(func(c jwt.MapClaims) { c["aud"] = 7 })), reason.TokenInvalid, "malformed token"},
		{"iss other", scoped, signHeader(t, nil, with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), reason.TokenInvalid, "is not tokens.jwt.issuer"},
		{"iss missing", scoped, signHeader(t, nil, with(func(c jwt.MapClaims) { delete(c, "iss") })), reason.TokenInvalid, "iss claim missing"},
		{"aud and iss unchecked when not configured", plain, signHeader(t, nil, with(func(c jwt.MapClaims) { c["aud"] = "api" })), reason.None, ""},
		{"typ absent", plain, signHeader(t, map[string]any{"typ": nil}, claimsAt(t0, "j")), reason.None, ""},
		{"typ jwt lowercase", plain, signHeader(t, map[string]any{"typ": "jwt"}, claimsAt(t0, "j")), reason.None, ""},
		{"typ portcullis+jwt", plain, signHeader(t, map[string]any{"typ": "portcullis+jwt"}, claimsAt(t0, "j")), reason.None, ""},
		{"typ application/portcullis+jwt", plain, signHeader(t, map[string]any{"typ": "application/Portcullis+JWT"}, claimsAt(t0, "j")), reason.None, ""},
		{"typ at+jwt", plain, signHeader(t, map[string]any{"typ": "at+jwt"}, claimsAt(t0, "j")), reason.TokenInvalid, `typ "at+jwt" names another use`},
		{"typ application/at+jwt", plain, signHeader(t, map[string]any{"typ": "application/at+jwt"}, claimsAt(t0, "j")), reason.TokenInvalid, "names another use"},
		{"typ empty", plain, signHeader(t, map[string]any{"typ": ""}, claimsAt(t0, "j")), reason.TokenInvalid, "names another use"},
		{"typ a number", plain, signHeader(t, map[string]any{"typ": 1}, claimsAt(t0, "j")), reason.TokenInvalid, "typ header not a string"},
		{"crit unknown", plain, signHeader(t, map[string]any{"crit": []string{"b64"}, "b64": false}, claimsAt(t0, "j")), reason.TokenInvalid, `crit header ["b64"]`},
		{"crit empty", plain, signHeader(t, map[string]any{"crit": []string{}}, claimsAt(t0, "j")), reason.TokenInvalid, "crit header"},
		{"topics null", plain, signHeader(t, nil, with(func(c jwt.MapClaims) { c["topics"] = nil })), reason.TokenInvalid, "topics claim is null"},
		{"topics empty", plain, signHeader(t, nil, with(func(c jwt.MapClaims) { c["topics"] = []string{} })), reason.TokenInvalid, "topics claim is empty"},
		{"topics bad", plain, signHeader(t, nil, with(func(c jwt.MapClaims) { c["topics"] = []string{"news", "a..b"} })), reason.TokenInvalid, `topics[1] "a..b"`},
		{"sub with the topic separator", plain, signHeader(t, nil, with(func(c jwt.MapClaims) { c["sub"] = "alice.smith" })), reason.TokenInvalid, `sub "alice.smith" is not a userId`},
		{"sub of 129 bytes", plain, signHeader(t, nil, with(func(c jwt.MapClaims) { c["sub"] = strings.Repeat("a", 129) })), reason.TokenInvalid, "is not a userId"},
		{"sub of 128 bytes", plain, signHeader(t, nil, with(func(c jwt.MapClaims) { c["sub"] = strings.Repeat("a", 128) })), reason.None, ""},
		{"exp beyond max ttl", plain, signHeader(t, nil, with(func(c jwt.MapClaims) { c["exp"] = t0.Add(3 * time.Hour).Unix() })), reason.TokenInvalid, "over tokens.max_ttl"},
		{"bad signature", plain, signHeader(t, nil, claimsAt(t0, "j"))[:40] + "x" + signHeader(t, nil, claimsAt(t0, "j"))[41:], reason.TokenInvalid, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh table per case: the cases share jtis.
			tok := tc.token
			g, r, d := redeemDetail(f.source(t, tc.src.opts), tok, uint64(i+1), t0)
			if r != tc.want {
				t.Fatalf("got %s (%s), want %s", r, d, tc.want)
			}
			if (g != nil) != (r == reason.None) {
				t.Fatalf("grant %v with %s", g, r)
			}
			if tc.want == reason.None {
				if d != "" {
					t.Fatalf("detail %q on success", d)
				}
				return
			}
			if d == "" || !strings.Contains(d, tc.detail) {
				t.Fatalf("detail %q, want it to contain %q", d, tc.detail)
			}
			if strings.Contains(d, string(secret)) || strings.Contains(d, tok) {
				t.Fatalf("detail %q reveals the key or the token", d)
			}
		})
	}
}

// TestTopicsAbsentGrantsAny: an absent topics claim is a grant for any
// topic (the topic rules still decide); a present one limits it.
func TestTopicsAbsentGrantsAny(t *testing.T) {
	f := newFixture(t)
	s := f.source(t, Options{})
	g, r := redeemOn(s, signHeader(t, nil, claimsAt(t0, "any")), 1, t0)
	if r != reason.None || !g.Allows("anything.at.all", "42") {
		t.Fatalf("absent topics: %s %v", r, g)
	}
	c := claimsAt(t0, "some")
	c["topics"] = []string{"news"}
	g, r = redeemOn(s, signHeader(t, nil, c), 1, t0)
	if r != reason.None || !g.Allows("news", "42") || g.Allows("sport", "42") {
		t.Fatalf("topics [news]: %s %v", r, g)
	}
}

// TestTokenLengthIsTheSchemas: one limit for the client schema and this
// source; a token one byte over it is refused unparsed.
func TestTokenLengthIsTheSchemas(t *testing.T) {
	var mine, schemas = MaxTokenLen, schema.MaxTokenLen
	if mine != schemas {
		t.Fatalf("MaxTokenLen %d, schema %d", mine, schemas)
	}
	s := newFixture(t).source(t, Options{})
	c := claimsAt(t0, "long")
	c["pad"] = strings.Repeat("p", MaxTokenLen)
	tok := signHeader(t, nil, c)
	if _, r, d := redeemDetail(s, tok, 1, t0); r != reason.TokenInvalid || !strings.Contains(d, "over 2048") {
		t.Fatalf("%d-byte token: %s %q", len(tok), r, d)
	}
}

// TestTableAlarm: a full table raises one alarm per episode, still
// refuses with Internal, and calls the episode over once lapsed entries
// have drained it below nine tenths.
func TestTableAlarm(t *testing.T) {
	var evs []TableEvent
	s := newFixture(t).source(t, Options{MaxEntries: 10, TableAlarm: func(e TableEvent) { evs = append(evs, e) }})
	// Ten tokens expiring at t0+1m, lapsing at t0+1m30s.
	for i := range 10 {
		if _, r := redeemOn(s, signHeader(t, nil, claimsAt(t0, "fill"+string(rune('a'+i)))), uint64(i+1), t0); r != reason.None {
			t.Fatal(r)
		}
	}
	late := t0.Add(time.Minute)
	for i := range 3 {
		if _, r, d := redeemDetail(s, signHeader(t, nil, claimsAt(late, "new"+string(rune('a'+i)))), 99, late); r != reason.Internal || !strings.Contains(d, "replay table full") {
			t.Fatalf("on a full table: %s %q", r, d)
		}
	}
	if len(evs) != 1 || !evs[0].Full || evs[0].Held != 10 || evs[0].Max != 10 || evs[0].Refused != 1 || !evs[0].At.Equal(late) {
		t.Fatalf("alarms %+v, want one Full", evs)
	}
	lapse := t0.Add(time.Minute + DefaultLeeway)
	if n := s.Sweep(lapse); n != 10 {
		t.Fatalf("swept %d", n)
	}
	if len(evs) != 2 || evs[1].Full || evs[1].Held != 0 || evs[1].Refused != 3 {
		t.Fatalf("alarms %+v, want Full then room", evs)
	}
	if _, r := redeemOn(s, signHeader(t, nil, claimsAt(late, "newa")), 99, lapse); r != reason.None {
		t.Fatalf("once drained: %s", r)
	}
	if len(evs) != 2 {
		t.Fatalf("alarms %+v after recovery", evs)
	}
}

// TestStateSurvivesRestart: a jti redeemed before a restart is a replay
// after it, on any connection (connection ids start again at 1); lapsed
// entries are deleted from the file.
func TestStateSurvivesRestart(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "jti.db")
	tok := signHeader(t, nil, claimsAt(t0, "persist"))
	short := claimsAt(t0, "short")
	short["exp"] = t0.Add(10 * time.Second).Unix()
	shortTok := signHeader(t, nil, short)

	s1 := f.source(t, Options{})
	if err := s1.OpenState(path, t0); err != nil {
		t.Fatal(err)
	}
	for _, tk := range []string{tok, shortTok} {
		if _, r := redeemOn(s1, tk, 1, t0); r != reason.None {
			t.Fatal(r)
		}
	}
	if err := s1.Close(t0); err != nil {
		t.Fatal(err)
	}

	s2 := f.source(t, Options{})
	if err := s2.OpenState(path, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := s2.StateStats(); st.Restored != 2 || st.Path != path {
		t.Fatalf("stats %+v", st)
	}
	if _, r, d := redeemDetail(s2, tok, 1, t0.Add(time.Second)); r != reason.TokenReplayed || d == "" {
		t.Fatalf("after restart, connection 1: %s %q", r, d)
	}
	if err := s2.Close(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}

	// 50 s later the short token has lapsed (exp 10 s + leeway 30 s).
	later := t0.Add(50 * time.Second)
	s3 := f.source(t, Options{})
	if err := s3.OpenState(path, later); err != nil {
		t.Fatal(err)
	}
	if s3.Len() != 1 {
		t.Fatalf("%d jtis restored, want 1", s3.Len())
	}
	if n := bucketLen(t, s3); n != 1 {
		t.Fatalf("%d entries in the file, want the lapsed one deleted", n)
	}
	if _, r := redeemOn(s3, tok, 5, later); r != reason.TokenReplayed {
		t.Fatalf("third run: %s", r)
	}
	if err := s3.Close(later); err != nil {
		t.Fatal(err)
	}
}

// TestStateWrittenWithoutClose: the writer stores a redemption by itself
// (a crash after that point loses nothing).
func TestStateWrittenWithoutClose(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	s := f.source(t, Options{})
	if err := s.OpenState(filepath.Join(t.TempDir(), "jti.db"), now); err != nil {
		t.Fatal(err)
	}
	defer s.Close(now)
	for i := range 50 {
		if _, r := redeemOn(s, signHeader(t, nil, claimsAt(now, "w"+string(rune('A'+i)))), 1, now); r != reason.None {
			t.Fatal(r)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for bucketLen(t, s) != 50 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 50 jtis written after 10 s; stats %+v", bucketLen(t, s), s.StateStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func bucketLen(t *testing.T, s *Source) int {
	t.Helper()
	n := 0
	if err := s.state.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketJTIs).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSecretFileMode: a secret file readable by group or others is
// refused, naming the file and the mode.
func TestSecretFileMode(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		p := filepath.Join(dir, "secret")
		if err := os.WriteFile(p, secret, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(Config{SecretFile: p}, os.Getenv)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), fmt.Sprintf("mode %04o", mode)) {
			t.Fatalf("mode %04o: %v", mode, err)
		}
		if strings.Contains(err.Error(), string(secret)) {
			t.Fatalf("error reveals the secret: %v", err)
		}
	}
	p := filepath.Join(dir, "secret")
	if err := os.Chmod(p, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(Config{SecretFile: p}, os.Getenv); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}
