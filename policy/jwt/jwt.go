// Package jwttoken is the `jwt` token source: the site signs a JWT (HS256
// or EdDSA) whose claims are sub (the userId), exp, jti and optionally
// topics, and the gateway lets exactly one connection redeem each jti. It
// owns the verification keys, the claim rules and the bounded table of
// redeemed jtis, which it keeps on disk (OpenState) so that a restart does
// not make a captured token good again.
//
// What a token must be, beyond a valid signature by an allowed algorithm:
//
//   - header "typ" absent, "JWT" or "portcullis+jwt" (ASCII case ignored,
//     with or without "application/"): a token typed for another use, such
//     as an OAuth access token ("at+jwt"), is refused even when the site
//     signs it with the same key;
//   - no "crit" header: this source understands no JWS extension, so any
//     listed one is unknown and the token is refused (RFC 7515 §4.1.11);
//   - sub a userId (topics.ValidUserID: one topic segment, never a ".");
//   - exp present, not past (with Leeway), at most MaxTTL (+ Leeway) ahead;
//     nbf and iat, when present, not in the future;
//   - jti present, at most MaxJTILen bytes, never redeemed by another
//     connection;
//   - with Options.Audience set, "aud" present and naming it (a string, or
//     an array containing it); with Options.Issuer set, "iss" equal to it;
//   - "topics", when present, a list of 1 to MaxTopics topic patterns. An
//     absent claim grants any topic the topic rules let a token holder
//     subscribe to, exactly as a store token minted without topics; it
//     never reaches a topic the rules deny or bind to another user.
//     "topics": [] and "topics": null are refused: a site that meant
//     "none" must not grant everything.
//
// Keys come from an environment variable or a file, never from the YAML;
// a secret file readable by group or others is refused; errors name where
// a key was looked for, never the key. The package imports nothing from
// gateway, audit or alerting.
package jwttoken

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// Algorithms this source can verify.
const (
	HS256 = "HS256"
	EdDSA = "EdDSA"
)

// Defaults for zero Options fields.
const (
	DefaultLeeway     = 30 * time.Second // clock skew allowed on exp, nbf and iat
	DefaultMaxTTL     = time.Hour        // furthest exp accepted, from now (config tokens.max_ttl)
	DefaultMaxEntries = 1_000_000        // jtis held in the replay table
)

// Claim and token caps.
const (
	MinSecretBytes = 32                 // HS256 secret: at least 256 bits
	MaxTokenLen    = schema.MaxTokenLen // bytes of a token, as the client schemas cap it; longer is refused unparsed
	MaxJTILen      = 256                // bytes of a jti
	MaxTopics      = 64                 // entries of the topics claim
	maxDetailQuote = 40                 // bytes of a token-supplied string quoted in a refusal detail
)

// Typ is the header "typ" a site may give its gateway tokens; "JWT" and an
// absent typ are accepted as well.
const Typ = "portcullis+jwt"

// DefaultAlgorithms is what an empty Options.Algorithms means.
var DefaultAlgorithms = []string{HS256}

// Keys are the verification keys. Only the key of each allowed algorithm
// is needed.
type Keys struct {
	HMACSecret  []byte            // HS256; at least MinSecretBytes
	EdPublicKey ed25519.PublicKey // EdDSA
}

// Options tune a Source. A zero field means its default.
type Options struct {
	Algorithms []string      // accepted "alg" values, from HS256 and EdDSA
	Leeway     time.Duration // clock skew allowed on exp, nbf and iat
	MaxTTL     time.Duration // a token whose exp lies further than now+MaxTTL+Leeway is refused
	MaxEntries int           // replay-table capacity, in jtis (about 190 B each)
	Audience   string        // when set, "aud" must name it; empty: aud is not checked
	Issuer     string        // when set, "iss" must equal it; empty: iss is not checked
	// TableAlarm, when set, is told when the replay table becomes full
	// (valid tokens are being refused) and when it has room again; see
	// TableEvent. It is called on the goroutine that redeemed or swept,
	// without locks held, and must not block.
	TableAlarm func(TableEvent)
}

// TableEvent is a change of the replay table's state: once when a valid
// token is first refused because the table is full, once when the table
// has drained below nine tenths of its capacity again.
type TableEvent struct {
	Full    bool      // true: the table just filled up; false: it has room again
	Held    int       // jtis held
	Max     int       // capacity (Options.MaxEntries)
	Refused uint64    // valid tokens refused for want of room, since start
	At      time.Time // the now of the call that saw the change
}

func (o Options) withDefaults() Options {
	if len(o.Algorithms) == 0 {
		o.Algorithms = DefaultAlgorithms
	}
	o.Algorithms = slices.Clone(o.Algorithms)
	if o.Leeway <= 0 {
		o.Leeway = DefaultLeeway
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	return o
}

// Config is the `tokens.jwt` configuration: options plus where the keys
// live.
type Config struct {
	Options
	SecretEnv     string // name of the environment variable holding the HS256 secret
	SecretFile    string // file holding the HS256 secret, mode 0600 or stricter; one trailing newline is dropped
	PublicKeyFile string // PEM file (PKIX "PUBLIC KEY") of the Ed25519 key for EdDSA
}

// Load reads the keys cfg names (getenv is os.Getenv outside tests) and
// returns a Source.
func Load(cfg Config, getenv func(string) string) (*Source, error) {
	opts := cfg.Options.withDefaults()
	var keys Keys
	for _, alg := range opts.Algorithms {
		switch alg {
		case HS256:
			secret, err := loadSecret(cfg, getenv)
			if err != nil {
				return nil, err
			}
			keys.HMACSecret = secret
		case EdDSA:
			if cfg.PublicKeyFile == "" {
				return nil, errors.New("load jwt keys: EdDSA needs public_key_file")
			}
			pem, err := os.ReadFile(cfg.PublicKeyFile)
			if err != nil {
				return nil, fmt.Errorf("load jwt public key: %w", err)
			}
			pub, err := jwt.ParseEdPublicKeyFromPEM(pem)
			if err != nil {
				return nil, fmt.Errorf("load jwt public key %s: %w", cfg.PublicKeyFile, err)
			}
			keys.EdPublicKey = pub.(ed25519.PublicKey)
		default:
			return nil, fmt.Errorf("load jwt keys: algorithm %q not supported (want %s or %s)", alg, HS256, EdDSA)
		}
	}
	return New(keys, opts)
}

func loadSecret(cfg Config, getenv func(string) string) ([]byte, error) {
	var secret []byte
	switch {
	case cfg.SecretEnv != "" && cfg.SecretFile != "":
		return nil, errors.New("load jwt secret: set secret_env or secret_file, not both")
	case cfg.SecretEnv != "":
		secret = []byte(getenv(cfg.SecretEnv))
		if len(secret) == 0 {
			return nil, fmt.Errorf("load jwt secret: environment variable %s is empty or unset", cfg.SecretEnv)
		}
	case cfg.SecretFile != "":
		st, err := os.Stat(cfg.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("load jwt secret: %w", err)
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			return nil, fmt.Errorf("load jwt secret: secret_file %s is readable by group or others (mode %04o): chmod 600 %s",
				cfg.SecretFile, perm, cfg.SecretFile)
		}
		b, err := os.ReadFile(cfg.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("load jwt secret: %w", err)
		}
		s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		secret = []byte(s)
	default:
		return nil, errors.New("load jwt secret: HS256 needs secret_env or secret_file (never the YAML)")
	}
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("load jwt secret: %d bytes, need at least %d", len(secret), MinSecretBytes)
	}
	return secret, nil
}

// Grant is what a redeemed token proves: the same type as the store
// source's, so the gateway treats both sources alike.
type Grant = tokens.Grant

// claims are the JWT claims this source reads.
type claims struct {
	jwt.RegisteredClaims
	Topics topicsClaim `json:"topics"`
}

// topicsClaim tells an absent "topics" (any topic the rules allow) from a
// null one (refused): a nil slice cannot.
type topicsClaim struct {
	present bool
	list    []string
}

// UnmarshalJSON records that the claim was present, even as null.
func (t *topicsClaim) UnmarshalJSON(b []byte) error {
	t.present = true
	if string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, &t.list)
}

// Source verifies JWTs and redeems each jti once. It is safe for
// simultaneous use by multiple goroutines.
type Source struct {
	opts   Options
	keys   Keys
	parser *jwt.Parser
	cache  replayCache
	state  *stateFile // nil: redeemed jtis live in memory only
}

// New returns a Source verifying with keys. Every allowed algorithm must
// have its key.
func New(keys Keys, opts Options) (*Source, error) {
	opts = opts.withDefaults()
	for _, alg := range opts.Algorithms {
		switch alg {
		case HS256:
			if len(keys.HMACSecret) < MinSecretBytes {
				return nil, fmt.Errorf("new jwt source: HS256 secret of %d bytes, need at least %d", len(keys.HMACSecret), MinSecretBytes)
			}
		case EdDSA:
			if len(keys.EdPublicKey) != ed25519.PublicKeySize {
				return nil, errors.New("new jwt source: EdDSA needs an Ed25519 public key")
			}
		default:
			return nil, fmt.Errorf("new jwt source: algorithm %q not supported (want %s or %s)", alg, HS256, EdDSA)
		}
	}
	s := &Source{
		opts: opts,
		keys: Keys{HMACSecret: slices.Clone(keys.HMACSecret), EdPublicKey: slices.Clone(keys.EdPublicKey)},
		// Claims are validated by Redeem against the caller's now; the
		// parser checks structure, algorithm and signature only.
		parser: jwt.NewParser(
			jwt.WithValidMethods(opts.Algorithms),
			jwt.WithoutClaimsValidation(),
			jwt.WithStrictDecoding(),
		),
	}
	s.cache.init(opts.MaxEntries)
	return s, nil
}

// keyFor hands the parser the key of the token's algorithm, checking the
// method's type as well as its name so that no key can ever be used with
// another algorithm family (the HS256-with-a-public-key confusion).
func (s *Source) keyFor(t *jwt.Token) (any, error) {
	switch m := t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if m.Alg() == HS256 && slices.Contains(s.opts.Algorithms, HS256) {
			return s.keys.HMACSecret, nil
		}
	case *jwt.SigningMethodEd25519:
		if m.Alg() == EdDSA && slices.Contains(s.opts.Algorithms, EdDSA) {
			return s.keys.EdPublicKey, nil
		}
	}
	return nil, errors.New("algorithm not allowed")
}

// Redeem verifies token and redeems its jti for the connection p
// describes (p.Conn non-zero), remembering who redeemed it
// (tokens.Redemption: the connection, its client address and the time).
// The first connection that presents a valid token redeems it; the same
// connection may present the same token again. Any other connection — or
// another token carrying the same jti — finds it spent, also after a
// restart with OpenState: reason.TokenReplayed from the redeemer's counted
// address as the token's sub (an honest reconnect), reason.TokenTheft from
// another address or as another user (see tokens.Redemption.Again; a jti
// restored from a state file that did not record the redeemer's address
// is always a replay). Other outcomes: TokenMissing (empty), TokenExpired
// (exp + leeway passed), TokenInvalid (see the package documentation for
// what a token must be), Internal (p.Conn is zero, or the replay table is
// full — see replayCache). Result.Detail says why a token was refused; it
// may quote a few bytes of the token's header or claims, never the token
// or a key.
func (s *Source) Redeem(token string, p tokens.Presenter, now time.Time) tokens.Result {
	if token == "" {
		return refused(reason.TokenMissing, "no token")
	}
	if p.Conn == 0 {
		return refused(reason.Internal, "connection id 0")
	}
	if len(token) > MaxTokenLen {
		return refused(reason.TokenInvalid, fmt.Sprintf("token of %d bytes, over %d", len(token), MaxTokenLen))
	}
	var c claims
	t, err := s.parser.ParseWithClaims(token, &c, s.keyFor)
	if err != nil {
		return refused(reason.TokenInvalid, parseDetail(err))
	}
	if d := checkHeader(t.Header); d != "" {
		return refused(reason.TokenInvalid, d)
	}
	v := jwt.NewValidator(
		jwt.WithLeeway(s.opts.Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	if err := v.Validate(&c); err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			return refused(reason.TokenExpired, "exp passed")
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			return refused(reason.TokenInvalid, "exp claim missing")
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			return refused(reason.TokenInvalid, "nbf in the future")
		case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
			return refused(reason.TokenInvalid, "iat in the future")
		}
		return refused(reason.TokenInvalid, "time claims invalid")
	}
	exp := c.ExpiresAt.Time
	if exp.After(now.Add(s.opts.MaxTTL + s.opts.Leeway)) {
		return refused(reason.TokenInvalid, fmt.Sprintf("exp %s ahead, over tokens.max_ttl %s", exp.Sub(now).Round(time.Second), s.opts.MaxTTL))
	}
	if d := s.checkClaims(&c); d != "" {
		return refused(reason.TokenInvalid, d)
	}
	digest := sha256.Sum256([]byte(token))
	res, ev := s.cache.redeem(sha256.Sum256([]byte(c.ID)), digest, p, c.Subject, exp.Add(s.opts.Leeway), now)
	s.alarm(ev)
	switch res.Reason {
	case reason.None:
	case reason.TokenReplayed, reason.TokenTheft:
		res.Detail = "jti " + res.Detail
		return res
	case reason.Internal:
		return refused(reason.Internal, fmt.Sprintf("replay table full (%d jtis, tokens.max_entries)", s.opts.MaxEntries))
	default:
		return res
	}
	s.kick()
	return tokens.Result{Grant: tokens.NewGrant(c.Subject, c.Topics.list, exp, fingerprint(digest))}
}

// refused is the Result of a refusal for r with detail.
func refused(r reason.Reason, detail string) tokens.Result {
	return tokens.Result{Reason: r, Detail: detail}
}

// parseDetail names what the parser refused: structure, algorithm or
// signature.
func parseDetail(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "signature invalid"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "algorithm not allowed"
	}
	return "token unverifiable"
}

// checkHeader refuses a token typed for another use and any critical
// extension; "" means the header is acceptable.
func checkHeader(h map[string]any) string {
	if crit, ok := h["crit"]; ok {
		return fmt.Sprintf("crit header %.*s: no extension is understood", maxDetailQuote, quote(crit))
	}
	typ, ok := h["typ"]
	if !ok {
		return ""
	}
	ts, isString := typ.(string)
	if !isString {
		return "typ header not a string"
	}
	// RFC 7515 §4.1.9: "application/" may be omitted; media types ignore
	// ASCII case.
	if len(ts) > len("application/") && strings.EqualFold(ts[:len("application/")], "application/") {
		ts = ts[len("application/"):]
	}
	if strings.EqualFold(ts, "JWT") || strings.EqualFold(ts, Typ) {
		return ""
	}
	return fmt.Sprintf("typ %.*s names another use (want absent, JWT or %s)", maxDetailQuote, quote(typ), Typ)
}

// checkClaims checks the claims beyond time: sub, jti, aud, iss, topics.
func (s *Source) checkClaims(c *claims) string {
	switch {
	case c.Subject == "":
		return "sub claim missing"
	case !topics.ValidUserID(c.Subject):
		return fmt.Sprintf("sub %.*s is not a userId (1-%d bytes of [A-Za-z0-9_:@-], no \".\")", maxDetailQuote, quote(c.Subject), topics.MaxUserIDLen)
	case c.ID == "":
		return "jti claim missing"
	case len(c.ID) > MaxJTILen:
		return fmt.Sprintf("jti of %d bytes, over %d", len(c.ID), MaxJTILen)
	}
	if s.opts.Audience != "" {
		if len(c.Audience) == 0 {
			return "aud claim missing (tokens.jwt.audience is set)"
		}
		if !slices.Contains(c.Audience, s.opts.Audience) {
			return fmt.Sprintf("aud %.*s does not name tokens.jwt.audience", maxDetailQuote, quote([]string(c.Audience)))
		}
	}
	if s.opts.Issuer != "" {
		if c.Issuer == "" {
			return "iss claim missing (tokens.jwt.issuer is set)"
		}
		if c.Issuer != s.opts.Issuer {
			return fmt.Sprintf("iss %.*s is not tokens.jwt.issuer", maxDetailQuote, quote(c.Issuer))
		}
	}
	if !c.Topics.present {
		return ""
	}
	ts := c.Topics.list
	switch {
	case ts == nil:
		return "topics claim is null (omit it to grant every topic the rules allow)"
	case len(ts) == 0:
		return "topics claim is empty (omit it to grant every topic the rules allow)"
	case len(ts) > MaxTopics:
		return fmt.Sprintf("topics claim lists %d entries, over %d", len(ts), MaxTopics)
	}
	for i, t := range ts {
		if !topics.ValidPattern(t) {
			return fmt.Sprintf("topics[%d] %.*s is not a topic pattern", i, maxDetailQuote, quote(t))
		}
	}
	return ""
}

// quote renders a token-supplied value as JSON, for a detail.
func quote(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "?"
	}
	return string(b)
}

// alarm reports a change of the replay table's state, if any.
func (s *Source) alarm(ev *TableEvent) {
	if ev != nil && s.opts.TableAlarm != nil {
		s.opts.TableAlarm(*ev)
	}
}

// Sweep drops the jtis whose tokens can no longer be valid and returns how
// many it dropped. Redeem sweeps as it goes; Sweep is for an idle timer.
func (s *Source) Sweep(now time.Time) int {
	n, ev := s.cache.sweep(now)
	s.alarm(ev)
	return n
}

// Len returns the number of jtis held.
func (s *Source) Len() int { return s.cache.len() }

// Refused returns how many valid tokens were refused because the replay
// table was full (for metrics and alerting).
func (s *Source) Refused() uint64 { return s.cache.refused.Load() }

const hexdigits = "0123456789abcdef"

// fingerprint is the first 8 hex digits of the token's SHA-256, as
// audit.TokenFP computes it.
func fingerprint(d [sha256.Size]byte) string {
	var b [8]byte
	for i := 0; i < 4; i++ {
		b[2*i] = hexdigits[d[i]>>4]
		b[2*i+1] = hexdigits[d[i]&0xf]
	}
	return string(b[:])
}
