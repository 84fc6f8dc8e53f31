// Package jwttoken is the `jwt` token source of SPEC §6: the site signs a
// JWT (HS256 or EdDSA) whose claims are sub (the userId), exp, jti and
// optionally topics, and the gateway lets exactly one connection redeem
// each jti. It owns the verification keys, the claim rules and the bounded
// replay cache of redeemed jtis.
//
// Keys come from an environment variable or a file, never from the YAML;
// errors name where a key was looked for, never the key. The package
// imports nothing from gateway, audit or alerting.
package jwttoken

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portcullis-gw/portcullis/policy/reason"
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
	DefaultMaxTTL     = time.Hour        // furthest exp accepted, from now (SPEC tokens.max_ttl)
	DefaultMaxEntries = 1_000_000        // jtis held in the replay cache
)

// Claim and token caps.
const (
	MinSecretBytes = 32   // HS256 secret: at least 256 bits
	MaxTokenLen    = 4096 // bytes of a token; longer is refused unparsed
	MaxJTILen      = 256  // bytes of a jti
	MaxTopics      = 64   // entries of the topics claim
	maxUserIDLen   = 128  // bytes of sub, as for a userId (SPEC §5.1)
)

// DefaultAlgorithms is what an empty Options.Algorithms means (SPEC §12).
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
	MaxEntries int           // replay-cache capacity, in jtis (about 150 B each)
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
	SecretFile    string // file holding the HS256 secret; one trailing newline is dropped
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
	Topics []string `json:"topics,omitempty"`
}

// Source verifies JWTs and redeems each jti once. It is safe for
// simultaneous use by multiple goroutines.
type Source struct {
	opts   Options
	keys   Keys
	parser *jwt.Parser
	cache  replayCache
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

// Redeem verifies token and redeems its jti for connection conn (non-zero).
// The first connection that presents a valid token redeems it; the same
// connection may present the same token again; any other connection, or
// another token carrying the same jti, gets reason.TokenReplayed. Other
// outcomes: TokenMissing (empty), TokenExpired (exp + leeway passed),
// TokenInvalid (malformed, algorithm not allowed, bad signature, a claim
// missing or out of bounds, nbf or iat in the future), Internal (conn is
// zero, or the replay cache is full — see replayCache).
func (s *Source) Redeem(token string, conn uint64, now time.Time) (*Grant, reason.Reason) {
	if token == "" {
		return nil, reason.TokenMissing
	}
	if conn == 0 {
		return nil, reason.Internal
	}
	if len(token) > MaxTokenLen {
		return nil, reason.TokenInvalid
	}
	var c claims
	if _, err := s.parser.ParseWithClaims(token, &c, s.keyFor); err != nil {
		return nil, reason.TokenInvalid
	}
	v := jwt.NewValidator(
		jwt.WithLeeway(s.opts.Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	if err := v.Validate(&c); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, reason.TokenExpired
		}
		return nil, reason.TokenInvalid
	}
	exp := c.ExpiresAt.Time
	if exp.After(now.Add(s.opts.MaxTTL + s.opts.Leeway)) {
		return nil, reason.TokenInvalid
	}
	if !validUserID(c.Subject) || c.ID == "" || len(c.ID) > MaxJTILen || !validTopics(c.Topics) {
		return nil, reason.TokenInvalid
	}
	digest := sha256.Sum256([]byte(token))
	if r := s.cache.redeem(sha256.Sum256([]byte(c.ID)), digest, conn, exp.Add(s.opts.Leeway), now); r != reason.None {
		return nil, r
	}
	return tokens.NewGrant(c.Subject, c.Topics, exp, fingerprint(digest)), reason.None
}

// Sweep drops the jtis whose tokens can no longer be valid and returns how
// many it dropped. Redeem sweeps as it goes; Sweep is for an idle timer.
func (s *Source) Sweep(now time.Time) int { return s.cache.sweep(now) }

// Len returns the number of jtis held.
func (s *Source) Len() int { return s.cache.len() }

// Refused returns how many valid tokens were refused because the replay
// cache was full (for metrics and alerting).
func (s *Source) Refused() uint64 { return s.cache.refused.Load() }

// validUserID: sub must be a userId a client can present (SPEC §5.1).
func validUserID(s string) bool {
	if s == "" || len(s) > maxUserIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-.@:", c) >= 0) {
			return false
		}
	}
	return true
}

// validTopics: an absent claim means any topic; a present one must list 1
// to MaxTopics valid topics or patterns ("topics": [] is refused rather
// than read as "any": a site that meant "none" must not grant everything).
func validTopics(ts []string) bool {
	if ts == nil {
		return true
	}
	if len(ts) == 0 || len(ts) > MaxTopics {
		return false
	}
	for _, t := range ts {
		if !topics.ValidPattern(t) {
			return false
		}
	}
	return true
}

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
