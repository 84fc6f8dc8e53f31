package jwttoken

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

var (
	t0     = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	secret = []byte("0123456789abcdef0123456789abcdef-test-secret")
)

type fixture struct {
	edPub  ed25519.PublicKey
	edPriv ed25519.PrivateKey
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{edPub: pub, edPriv: priv}
}

func (f fixture) source(t testing.TB, opts Options) *Source {
	t.Helper()
	s, err := New(Keys{HMACSecret: secret, EdPublicKey: f.edPub}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// claimsAt are valid claims issued at now, living a minute.
func claimsAt(now time.Time, jti string) jwt.MapClaims {
	return jwt.MapClaims{"sub": "42", "jti": jti, "exp": now.Add(time.Minute).Unix(), "iat": now.Unix()}
}

func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

func TestRedeemValid(t *testing.T) {
	f := newFixture(t)
	s := f.source(t, Options{Algorithms: []string{HS256, EdDSA}})

	hs := sign(t, jwt.SigningMethodHS256, secret, claimsAt(t0, "j-hs"))
	g, r := redeemOn(s, hs, 1, t0)
	if r != reason.None {
		t.Fatalf("HS256: %s", r)
	}
	sum := sha256.Sum256([]byte(hs))
	if g.UserID() != "42" || g.Bound() || g.Expires != t0.Add(time.Minute).UnixNano() || g.FP() != hex.EncodeToString(sum[:4]) {
		t.Fatalf("HS256 grant %+v", g)
	}

	c := claimsAt(t0, "j-ed")
	c["topics"] = []string{"news", "user.{userId}.**"}
	ed := sign(t, jwt.SigningMethodEdDSA, f.edPriv, c)
	g, r = redeemOn(s, ed, 2, t0)
	if r != reason.None {
		t.Fatalf("EdDSA: %s", r)
	}
	if got := slices.Collect(g.Topics()); len(got) != 2 || got[0] != "news" || got[1] != "user.{userId}.**" {
		t.Fatalf("EdDSA grant %+v", g)
	}
}

func TestRedeemRefuses(t *testing.T) {
	f := newFixture(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edOnly := f.source(t, Options{Algorithms: []string{EdDSA}})
	both := f.source(t, Options{Algorithms: []string{HS256, EdDSA}})
	hsOnly := f.source(t, Options{})

	with := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := claimsAt(t0, "j")
		mod(c)
		return c
	}
	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsAt(t0, "j"))
	hsValid := sign(t, jwt.SigningMethodHS256, secret, claimsAt(t0, "j"))
	parts := strings.Split(hsValid, ".")

	cases := []struct {
		name  string
		src   *Source
		token string
		now   time.Time
		want  reason.Reason
	}{
		{"empty", hsOnly, "", t0, reason.TokenMissing},
		{"garbage", hsOnly, "not-a-jwt", t0, reason.TokenInvalid},
		{"too long", hsOnly, hsValid + strings.Repeat("A", MaxTokenLen), t0, reason.TokenInvalid},
		{"alg none", hsOnly, noneTok, t0, reason.TokenInvalid},
		{"alg none, EdDSA source", edOnly, noneTok, t0, reason.TokenInvalid},
		{"alg none header on a signed token", hsOnly, base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2], t0, reason.TokenInvalid},
		{"HS256 signed with the Ed25519 public key, EdDSA source", edOnly, sign(t, jwt.SigningMethodHS256, []byte(f.edPub), claimsAt(t0, "j")), t0, reason.TokenInvalid},
		{"HS256 signed with the Ed25519 public key, both", both, sign(t, jwt.SigningMethodHS256, []byte(f.edPub), claimsAt(t0, "j")), t0, reason.TokenInvalid},
		{"HS256 token, EdDSA-only source", edOnly, hsValid, t0, reason.TokenInvalid},
		{"EdDSA token, HS256-only source", hsOnly, sign(t, jwt.SigningMethodEdDSA, f.edPriv, claimsAt(t0, "j")), t0, reason.TokenInvalid},
		{"HS512 with the right secret", hsOnly, sign(t, jwt.SigningMethodHS512, secret, claimsAt(t0, "j")), t0, reason.TokenInvalid},
		{"HS384 with the right secret", both, sign(t, jwt.SigningMethodHS384, secret, claimsAt(t0, "j")), t0, reason.TokenInvalid},
		{"RS256", both, sign(t, jwt.SigningMethodRS256, rsaKey, claimsAt(t0, "j")), t0, reason.TokenInvalid},
		{"PS256", both, sign(t, jwt.SigningMethodPS256, rsaKey, claimsAt(t0, "j")), t0, reason.TokenInvalid},
		{"ES256", both, sign(t, jwt.SigningMethodES256, ecKey, claimsAt(t0, "j")), t0, reason.TokenInvalid},
		{"wrong secret", hsOnly, sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), claimsAt(t0, "j")), t0, reason.TokenInvalid},
		{"tampered claims", hsOnly, parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"1","jti":"j","exp":1900000000}`)) + "." + parts[2], t0, reason.TokenInvalid},
		{"signature stripped", hsOnly, parts[0] + "." + parts[1] + ".", t0, reason.TokenInvalid},
		{"expired", hsOnly, hsValid, t0.Add(time.Minute + 31*time.Second), reason.TokenExpired},
		{"expired long ago", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["exp"] = t0.Add(-time.Hour).Unix() })), t0, reason.TokenExpired},
		{"not yet valid (nbf)", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["nbf"] = t0.Add(31 * time.Second).Unix() })), t0, reason.TokenInvalid},
		{"issued in the future (iat)", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["iat"] = t0.Add(time.Minute).Unix() })), t0, reason.TokenInvalid},
		{"missing jti", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { delete(c, "jti") })), t0, reason.TokenInvalid},
		{"empty jti", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["jti"] = "" })), t0, reason.TokenInvalid},
		{"jti too long", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["jti"] = strings.Repeat("j", MaxJTILen+1) })), t0, reason.TokenInvalid},
		{"missing sub", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { delete(c, "sub") })), t0, reason.TokenInvalid},
		{"sub not a userId", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["sub"] = "a b" })), t0, reason.TokenInvalid},
		{"sub a number", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["sub"] = 42 })), t0, reason.TokenInvalid},
		{"missing exp", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { delete(c, "exp") })), t0, reason.TokenInvalid},
		{"exp a string", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["exp"] = "tomorrow" })), t0, reason.TokenInvalid},
		{"exp beyond max ttl", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["exp"] = t0.Add(2 * time.Hour).Unix() })), t0, reason.TokenInvalid},
		{"topics empty", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["topics"] = []string{} })), t0, reason.TokenInvalid},
		{"topics not strings", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["topics"] = []int{1} })), t0, reason.TokenInvalid},
		{"topics bad pattern", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["topics"] = []string{"a..b"} })), t0, reason.TokenInvalid},
		{"too many topics", hsOnly, sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["topics"] = make([]string, MaxTopics+1) })), t0, reason.TokenInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, r := redeemOn(tc.src, tc.token, 1, tc.now)
			if r != tc.want {
				t.Fatalf("got %s, want %s", r, tc.want)
			}
			if g != nil {
				t.Fatalf("refusal carries a grant: %+v", g)
			}
		})
	}
	if n := hsOnly.Len() + edOnly.Len() + both.Len(); n != 0 {
		t.Fatalf("refused tokens left %d jtis in the caches", n)
	}
}

func TestLeeway(t *testing.T) {
	f := newFixture(t)
	s := f.source(t, Options{})
	tok := sign(t, jwt.SigningMethodHS256, secret, claimsAt(t0, "j"))
	exp := t0.Add(time.Minute)
	if _, r := redeemOn(s, tok, 1, exp.Add(29*time.Second)); r != reason.None {
		t.Fatalf("29 s after exp: %s", r)
	}
	if _, r := redeemOn(s, tok, 1, exp.Add(30*time.Second)); r != reason.TokenExpired {
		t.Fatalf("30 s after exp: %s", r)
	}
	nbf := claimsAt(t0, "k")
	nbf["nbf"] = t0.Add(29 * time.Second).Unix()
	if _, r := redeemOn(s, sign(t, jwt.SigningMethodHS256, secret, nbf), 1, t0); r != reason.None {
		t.Fatalf("nbf 29 s ahead: %s", r)
	}
	far := claimsAt(t0, "m")
	far["exp"] = t0.Add(time.Hour + 29*time.Second).Unix()
	if _, r := redeemOn(s, sign(t, jwt.SigningMethodHS256, secret, far), 1, t0); r != reason.None {
		t.Fatalf("exp at max ttl + 29 s: %s", r)
	}
}

func TestOneUse(t *testing.T) {
	f := newFixture(t)
	s := f.source(t, Options{})
	tok := sign(t, jwt.SigningMethodHS256, secret, claimsAt(t0, "once"))
	if _, r := redeemOn(s, tok, 7, t0); r != reason.None {
		t.Fatalf("first: %s", r)
	}
	if _, r := redeemOn(s, tok, 7, t0.Add(10*time.Second)); r != reason.None {
		t.Fatalf("same connection again: %s", r)
	}
	if _, r := redeemOn(s, tok, 8, t0.Add(10*time.Second)); r != reason.TokenReplayed {
		t.Fatalf("another connection: %s", r)
	}
	// Another token carrying the same jti is a replay even on the same
	// connection: the jti is spent.
	c := claimsAt(t0, "once")
	c["topics"] = []string{"admin.**"}
	if _, r := redeemOn(s, sign(t, jwt.SigningMethodHS256, secret, c), 7, t0); r != reason.TokenReplayed {
		t.Fatalf("same jti, other token: %s", r)
	}
	// The jti stays spent until the token is dead, then it is forgotten.
	lapse := t0.Add(time.Minute + DefaultLeeway)
	if _, r := redeemOn(s, tok, 8, lapse.Add(-time.Nanosecond)); r != reason.TokenReplayed {
		t.Fatalf("just before lapse: %s", r)
	}
	if _, r := redeemOn(s, tok, 8, lapse); r != reason.TokenExpired {
		t.Fatalf("at lapse: %s", r)
	}
	if n := s.Sweep(lapse); n != 1 || s.Len() != 0 {
		t.Fatalf("sweep dropped %d, %d left", n, s.Len())
	}
	if _, r := redeemOn(s, tok, 0, t0); r != reason.Internal {
		t.Fatalf("connection id 0: %s", r)
	}
}

// TestCacheFullRefuses: a full cache refuses new jtis, keeps serving those
// it holds, and takes new ones once old ones lapse.
func TestCacheFullRefuses(t *testing.T) {
	f := newFixture(t)
	s := f.source(t, Options{MaxEntries: 2})
	a := sign(t, jwt.SigningMethodHS256, secret, claimsAt(t0, "a"))
	b := sign(t, jwt.SigningMethodHS256, secret, claimsAt(t0.Add(20*time.Second), "b"))
	c := sign(t, jwt.SigningMethodHS256, secret, claimsAt(t0.Add(20*time.Second), "c"))
	for i, tok := range []string{a, b} {
		if _, r := redeemOn(s, tok, 1, t0.Add(20*time.Second)); r != reason.None {
			t.Fatalf("token %d: %s", i, r)
		}
	}
	if _, r := redeemOn(s, c, 2, t0.Add(20*time.Second)); r != reason.Internal {
		t.Fatalf("full cache: %s", r)
	}
	if s.Refused() != 1 {
		t.Fatalf("refused counter %d", s.Refused())
	}
	if _, r := redeemOn(s, a, 2, t0.Add(20*time.Second)); r != reason.TokenReplayed {
		t.Fatalf("held jti on a full cache: %s", r)
	}
	// a lapses at t0+1m30s, making room; c (exp t0+1m20s, lapsing at
	// t0+1m50s) is still valid then and gets the slot.
	now := t0.Add(time.Minute + DefaultLeeway)
	if _, r := redeemOn(s, c, 2, now.Add(-time.Nanosecond)); r != reason.Internal {
		t.Fatalf("c just before a lapses: %s", r)
	}
	if _, r := redeemOn(s, c, 2, now); r != reason.None {
		t.Fatalf("c once a lapsed: %s", r)
	}
	if s.Len() != 2 || s.Refused() != 2 {
		t.Fatalf("len %d refused %d", s.Len(), s.Refused())
	}
	d := sign(t, jwt.SigningMethodHS256, secret, claimsAt(now, "d"))
	if _, r := redeemOn(s, d, 3, now); r != reason.Internal {
		t.Fatalf("d on a full cache: %s", r)
	}
}

// TestConcurrentRedeem: 100 connections present one token at once;
// exactly one wins.
func TestConcurrentRedeem(t *testing.T) {
	f := newFixture(t)
	for _, alg := range []string{HS256, EdDSA} {
		s := f.source(t, Options{Algorithms: []string{HS256, EdDSA}})
		var tok string
		if alg == HS256 {
			tok = sign(t, jwt.SigningMethodHS256, secret, claimsAt(t0, "race"))
		} else {
			tok = sign(t, jwt.SigningMethodEdDSA, f.edPriv, claimsAt(t0, "race"))
		}
		var wg sync.WaitGroup
		results := make([]reason.Reason, 100)
		start := make(chan struct{})
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, results[i] = redeemOn(s, tok, uint64(i+1), t0)
			}()
		}
		close(start)
		wg.Wait()
		ok, replayed := 0, 0
		for _, r := range results {
			switch r {
			case reason.None:
				ok++
			case reason.TokenReplayed:
				replayed++
			}
		}
		if ok != 1 || replayed != 99 {
			t.Fatalf("%s: %d succeeded, %d replayed, want 1 and 99", alg, ok, replayed)
		}
	}
}

func TestNewRefusesBadKeys(t *testing.T) {
	f := newFixture(t)
	cases := map[string]struct {
		keys Keys
		opts Options
	}{
		"short secret":      {Keys{HMACSecret: []byte("short")}, Options{}},
		"no secret":         {Keys{EdPublicKey: f.edPub}, Options{}},
		"no Ed25519 key":    {Keys{HMACSecret: secret}, Options{Algorithms: []string{EdDSA}}},
		"alg none":          {Keys{HMACSecret: secret}, Options{Algorithms: []string{"none"}}},
		"RS256":             {Keys{HMACSecret: secret}, Options{Algorithms: []string{"RS256"}}},
		"HS512":             {Keys{HMACSecret: secret}, Options{Algorithms: []string{"HS512"}}},
		"truncated Ed25519": {Keys{EdPublicKey: f.edPub[:16]}, Options{Algorithms: []string{EdDSA}}},
	}
	for name, tc := range cases {
		if _, err := New(tc.keys, tc.opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLoad(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	der, err := x509.MarshalPKIXPublicKey(f.edPub)
	if err != nil {
		t.Fatal(err)
	}
	pubFile := write("ed.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	secretFile := write("secret", append(append([]byte(nil), secret...), '\n'))
	const mk = "MARKERsecret"
	shortFile := write("short", []byte(mk))
	env := map[string]string{"PC_JWT": string(secret), "PC_SHORT": mk}
	getenv := func(k string) string { return env[k] }

	hs := sign(t, jwt.SigningMethodHS256, secret, claimsAt(t0, "l1"))
	ed := sign(t, jwt.SigningMethodEdDSA, f.edPriv, claimsAt(t0, "l2"))
	good := []struct {
		name string
		cfg  Config
		tok  string
	}{
		{"secret from env", Config{SecretEnv: "PC_JWT"}, hs},
		{"secret from file, newline dropped", Config{SecretFile: secretFile}, hs},
		{"EdDSA from PEM", Config{Options: Options{Algorithms: []string{EdDSA}}, PublicKeyFile: pubFile}, ed},
	}
	for _, tc := range good {
		s, err := Load(tc.cfg, getenv)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if _, r := redeemOn(s, tc.tok, 1, t0); r != reason.None {
			t.Fatalf("%s: redeem %s", tc.name, r)
		}
	}
	bad := map[string]Config{
		"no secret source":  {},
		"env and file":      {SecretEnv: "PC_JWT", SecretFile: secretFile},
		"env unset":         {SecretEnv: "PC_NOPE"},
		"env short":         {SecretEnv: "PC_SHORT"},
		"file short":        {SecretFile: shortFile},
		"file absent":       {SecretFile: filepath.Join(dir, "absent")},
		"EdDSA without PEM": {Options: Options{Algorithms: []string{EdDSA}}},
		"EdDSA bad PEM":     {Options: Options{Algorithms: []string{EdDSA}}, PublicKeyFile: secretFile},
		"alg none":          {Options: Options{Algorithms: []string{"none"}}, SecretEnv: "PC_JWT"},
	}
	for name, cfg := range bad {
		_, err := Load(cfg, getenv)
		if err == nil {
			t.Errorf("%s: loaded", name)
			continue
		}
		if strings.Contains(err.Error(), mk) || strings.Contains(err.Error(), string(secret)) {
			t.Errorf("%s: error reveals the secret: %v", name, err)
		}
	}
}
