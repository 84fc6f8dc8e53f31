// Package topics owns the topic rules of docs/CONFIG.md: which topic names are
// valid, which client may subscribe or publish to which topic, the per-topic
// slow-consumer policy, schema and feed, and the pattern syntax shared by
// rules and by tokens bound to topics.
//
// # Topic names
//
// A topic is one or more segments separated by '.', each segment one or
// more of [A-Za-z0-9_:@-], at most MaxLen bytes in all ("news",
// "user.42.inbox", "chat.room-7", "tenant:acme.orders"). The charset leaves
// out everything that could be confused with pattern syntax ('*', '{', '}'),
// a path or a URL ('/', '?', '#', '%'), a log or header separator
// (whitespace, control bytes, quotes, ',', ';') or another script
// (non-ASCII), so a topic prints safely anywhere and compares byte-wise.
//
// # Patterns
//
// A pattern is a topic whose segments may also be:
//
//   - "*": exactly one segment;
//   - "**": one or more segments — only as the last segment ("chat.**"
//     matches "chat.a" and "chat.a.b", not "chat");
//   - "{userId}": one segment that must equal the user the token was issued
//     to (at most one per pattern).
//
// A "**" right after "{userId}" also matches nothing: "user.{userId}.**"
// matches "user.bob" as well as "user.bob.inbox", so a user namespace
// protects its own root topic — without it, "user.bob" would fall to a
// later rule or to the default, and under default: token every token
// holder could read it. Set.Warnings reports the user namespaces whose
// topics still reach a rule or default that does not check the user.
//
// # User ids
//
// A user id is exactly one topic segment (ValidUserID: [A-Za-z0-9_:@-],
// 1 to MaxUserIDLen bytes, never "."). Minting, JWT claims and the client
// schema all hold to it, and a {userId} segment grants nothing to a user
// id outside it, so "user.{userId}.**" cannot be stretched across another
// user's id: "alice.smith" can never be a user, and "user.alice.smith.inbox"
// is alice's topic.
//
// # Rules
//
// Rules are tried in config order and the first match decides: a
// {userId} segment matches any segment for that purpose, and a rule whose
// {userId} names another user refuses (TopicOtherUser) instead of letting a
// later rule decide — so nobody reads another user's user.{userId}.**
// topics, whatever token they hold. Compile refuses rules that can never
// match because an earlier rule covers them, which also catches the
// classic mistake of a public "user.**" placed before "user.{userId}.**".
//
// It imports only audit/reason from the project and must never import
// gateway/ or the rest of audit/.
package topics

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// MaxLen is the longest topic name or pattern, in bytes.
const MaxLen = 200

// UserIDSegment is the pattern segment that must equal the token's user.
const UserIDSegment = "{userId}"

// Access says what a client needs to subscribe or publish. It is a string
// so that it reads straight from YAML; Compile refuses any value but the
// constants below, and the empty value takes the documented default.
type Access string

// Access levels.
const (
	Token  Access = "token"  // a valid token for the topic
	Public Access = "public" // anyone, no token (subscribe only)
	Deny   Access = "deny"   // nobody
)

// String returns the config spelling of a.
func (a Access) String() string { return string(a) }

// ParseAccess returns the Access spelled s ("token", "public", "deny").
func ParseAccess(s string) (Access, error) {
	switch a := Access(s); a {
	case Token, Public, Deny:
		return a, nil
	}
	return "", fmt.Errorf("%q is not token, public or deny", s)
}

// Policy says what happens to a subscriber that cannot keep up with a topic.
type Policy string

// Slow-consumer policies.
const (
	Disconnect Policy = "disconnect"  // close the connection (the default)
	DropOldest Policy = "drop_oldest" // drop the oldest queued events of the topic
	KeepLatest Policy = "keep_latest" // keep only the newest event of the topic
)

// String returns the config spelling of p.
func (p Policy) String() string { return string(p) }

// ParsePolicy returns the Policy spelled s ("disconnect", "drop_oldest",
// "keep_latest").
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case Disconnect, DropOldest, KeepLatest:
		return p, nil
	}
	return "", fmt.Errorf("%q is not disconnect, drop_oldest or keep_latest", s)
}

// Feed polling intervals.
const (
	DefaultFeedEvery = 5 * time.Second // Feed.Every when zero
	MinFeedEvery     = time.Second     // shortest Feed.Every accepted
)

// Feed polls URL every Every while the rule's topic has subscribers and
// publishes each response to it (docs/CONFIG.md `feed:`).
type Feed struct {
	URL   string        // absolute http or https URL, without user info
	Every time.Duration // polling interval; zero means DefaultFeedEvery
}

// Rule is one entry of the `topics:` config list. After Compile, the
// Set's copy has every empty field replaced by its default.
type Rule struct {
	// Match is the pattern (see the package documentation).
	Match string
	// Subscribe: token (default), public or deny. public cannot be
	// combined with a {userId} segment, which needs a token's user.
	Subscribe Access
	// Publish (client publishing): deny (default) or token.
	Publish Access
	// SlowConsumer: disconnect (default), drop_oldest or keep_latest.
	SlowConsumer Policy
	// DataSchema is the path of a JSON Schema for client-published `data`;
	// only with publish: token.
	DataSchema string
	// Feed, if set, polls a URL for the topic; only on a pattern without
	// wildcards, so that subscribers cannot multiply the pollers.
	Feed *Feed

	segs    []seg
	userSeg int // index of the {userId} segment, or -1
}

// HasUserID reports whether the rule's pattern has a {userId} segment.
func (r *Rule) HasUserID() bool { return r.userSeg >= 0 }

// Params are the values a topic gives a rule's pattern.
type Params struct {
	// UserID is the topic's segment at the {userId} position ("" when
	// the rule has none). It is a substring of the topic.
	UserID string
}

type segKind uint8

const (
	lit  segKind = iota // exact segment
	one                 // "*"
	rest                // "**"
	user                // "{userId}"
)

type seg struct {
	kind segKind
	lit  string
}

// Set is a compiled, ordered list of rules: the first match wins. It is
// immutable and safe for simultaneous use by multiple goroutines.
type Set struct {
	rules []Rule
	def   Access
}

// Compile checks and compiles rules in config order; def is the subscribe
// access for topics no rule matches ("" means token: docs/CONFIG.md, with no rule
// every topic needs a token). Publishing to a topic no rule matches is
// always refused. All errors are reported at once, each naming the rule
// index and its pattern.
func Compile(rules []Rule, def Access) (*Set, error) {
	var errs []error
	if def == "" {
		def = Token
	} else if _, err := ParseAccess(string(def)); err != nil {
		errs = append(errs, fmt.Errorf("default: %w", err))
	}
	s := &Set{def: def, rules: make([]Rule, len(rules))}
	for i, r := range rules {
		r, err := compileRule(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("topics[%d] (match %q): %w", i, r.Match, err))
		}
		s.rules[i] = r
	}
	if len(errs) == 0 {
		for i := range s.rules {
			for j := 0; j < i; j++ {
				if covers(s.rules[j].segs, s.rules[i].segs) {
					errs = append(errs, fmt.Errorf("topics[%d] (match %q) is never used: topics[%d] (match %q) comes first and matches every topic it does",
						i, s.rules[i].Match, j, s.rules[j].Match))
					break
				}
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// compileRule fills defaults and checks one rule; the returned rule keeps
// Match as given for error messages.
func compileRule(r Rule) (Rule, error) {
	var errs []error
	segs, userSeg, err := compilePattern(r.Match)
	if err != nil {
		errs = append(errs, fmt.Errorf("match: %w", err))
	}
	r.segs, r.userSeg = segs, userSeg
	if r.Subscribe == "" {
		r.Subscribe = Token
	} else if _, err := ParseAccess(string(r.Subscribe)); err != nil {
		errs = append(errs, fmt.Errorf("subscribe: %w", err))
	}
	switch r.Publish {
	case "":
		r.Publish = Deny
	case Deny, Token:
	default:
		errs = append(errs, fmt.Errorf("publish: %q is not deny or token", r.Publish))
	}
	if r.SlowConsumer == "" {
		r.SlowConsumer = Disconnect
	} else if _, err := ParsePolicy(string(r.SlowConsumer)); err != nil {
		errs = append(errs, fmt.Errorf("slow_consumer: %w", err))
	}
	if r.Subscribe == Public && userSeg >= 0 {
		errs = append(errs, errors.New("subscribe: public cannot be combined with {userId}, which must equal a token's user"))
	}
	if r.DataSchema != "" && r.Publish != Token {
		errs = append(errs, errors.New("data_schema: set, but clients may not publish (publish is not token)"))
	}
	if r.Feed != nil {
		f := *r.Feed // the Set keeps its own copy
		if err := checkFeed(&f, segs); err != nil {
			errs = append(errs, fmt.Errorf("feed: %w", err))
		}
		r.Feed = &f
	}
	return r, errors.Join(errs...)
}

func checkFeed(f *Feed, segs []seg) error {
	for _, s := range segs {
		if s.kind != lit {
			return errors.New("only on a pattern without *, ** or {userId}")
		}
	}
	u, err := url.Parse(f.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("url %q is not an absolute http or https URL", f.URL)
	}
	if u.User != nil {
		return errors.New("url: user info is not allowed (credentials would reach logs)")
	}
	if f.Every == 0 {
		f.Every = DefaultFeedEvery
	}
	if f.Every < MinFeedEvery {
		return fmt.Errorf("every: %v is below %v", f.Every, MinFeedEvery)
	}
	return nil
}

// compilePattern parses a pattern into segments and the index of its
// {userId} segment (-1 if none).
func compilePattern(p string) ([]seg, int, error) {
	if p == "" {
		return nil, -1, errors.New("empty pattern")
	}
	if len(p) > MaxLen {
		return nil, -1, fmt.Errorf("pattern longer than %d bytes", MaxLen)
	}
	segs := make([]seg, 0, strings.Count(p, ".")+1)
	userSeg := -1
	for i, part := range strings.Split(p, ".") {
		switch {
		case part == "*":
			segs = append(segs, seg{kind: one})
		case part == "**":
			segs = append(segs, seg{kind: rest})
		case part == UserIDSegment:
			if userSeg >= 0 {
				return nil, -1, errors.New("more than one {userId} segment")
			}
			userSeg = i
			segs = append(segs, seg{kind: user})
		case validSegment(part):
			segs = append(segs, seg{kind: lit, lit: part})
		default:
			return nil, -1, fmt.Errorf("segment %d %q: want [A-Za-z0-9_:@-]+, *, ** or {userId}", i, part)
		}
		if i > 0 && segs[i-1].kind == rest {
			return nil, -1, errors.New("\"**\" may only be the last segment")
		}
	}
	return segs, userSeg, nil
}

// covers reports whether every topic matching b also matches a, with
// {userId} counted as "*" (as Match does).
func covers(a, b []seg) bool {
	for i := range a {
		if a[i].kind == rest {
			if optionalRest(a, i) {
				return true // a matches b's topics however deep, from i on
			}
			return i < len(b) && !optionalRest(b, i)
		}
		if i >= len(b) {
			return false
		}
		switch b[i].kind {
		case rest:
			// Only a {userId}.** of a matches all that b's ** may.
			return a[i].kind == user && i+1 < len(a) && optionalRest(a, i+1) && !optionalRest(b, i)
		case lit:
			if a[i].kind == lit && a[i].lit != b[i].lit {
				return false
			}
		default: // one, user
			if a[i].kind == lit {
				return false
			}
		}
	}
	return len(a) == len(b)
}

// optionalRest reports whether segs[i] is a "**" that may match no
// segment at all: one right after {userId} (see the package documentation).
func optionalRest(segs []seg, i int) bool {
	return segs[i].kind == rest && i > 0 && segs[i-1].kind == user
}

func validSegment(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !segmentByte[s[i]] {
			return false
		}
	}
	return true
}

// segmentByte marks the bytes allowed in a segment: [A-Za-z0-9_:@-].
var segmentByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['_'], t['-'], t[':'], t['@'] = true, true, true, true
	return t
}()

// MaxUserIDLen is the longest user id, in bytes.
const MaxUserIDLen = 128

// ValidUserID reports whether id can be a user id: one topic segment
// ([A-Za-z0-9_:@-], 1 to MaxUserIDLen bytes). A user id never contains the
// topic separator ".", so that "user.{userId}.**" can only ever match the
// topics of the one user whose id fills that segment: were "alice.smith"
// allowed, user "alice" would match "user.alice.smith.inbox". Every place
// that accepts a user id (minting, JWT claims, client messages) holds to
// this rule. It does not allocate.
func ValidUserID(id string) bool {
	return len(id) <= MaxUserIDLen && validSegment(id)
}

// ValidTopic reports whether t is a concrete topic name: dot-separated
// non-empty segments of [A-Za-z0-9_:@-], at most MaxLen bytes. It does not
// allocate.
func ValidTopic(t string) bool {
	if t == "" || len(t) > MaxLen {
		return false
	}
	prev := byte('.')
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c == '.' {
			if prev == '.' {
				return false
			}
		} else if !segmentByte[c] {
			return false
		}
		prev = c
	}
	return prev != '.'
}

// ValidPattern reports whether p is a topic or a pattern (what a token may
// be bound to).
func ValidPattern(p string) bool {
	_, _, err := compilePattern(p)
	return err == nil
}

// match reports whether topic matches segs, and the topic's segment at the
// {userId} position. topic must be valid (the callers check ValidTopic
// before deciding anything). It does not allocate.
func match(segs []seg, topic string) (userID string, ok bool) {
	more := true // a valid topic has at least one segment
	for i, s := range segs {
		if !more {
			if optionalRest(segs, i) {
				return userID, true // the root of a user namespace
			}
			return "", false
		}
		if s.kind == rest {
			return userID, topic != ""
		}
		part := topic
		if j := strings.IndexByte(topic, '.'); j >= 0 {
			part, topic = topic[:j], topic[j+1:]
		} else {
			topic, more = "", false
		}
		switch s.kind {
		case lit:
			if part != s.lit {
				return "", false
			}
		case user:
			userID = part
		}
	}
	return userID, !more
}

// MatchParams returns the first rule whose pattern matches topic, with a
// {userId} segment matching any segment, and the values the topic gives the
// pattern; nil when no rule matches (then Default applies to subscribing,
// and publishing is refused). topic must satisfy ValidTopic. The rule is the
// Set's and must not be modified. It does not allocate.
func (s *Set) MatchParams(topic string) (*Rule, Params) {
	for i := range s.rules {
		if u, ok := match(s.rules[i].segs, topic); ok {
			return &s.rules[i], Params{UserID: u}
		}
	}
	return nil, Params{}
}

// Match is MatchParams without the params.
func (s *Set) Match(topic string) *Rule {
	r, _ := s.MatchParams(topic)
	return r
}

// Default is the subscribe access for topics no rule matches.
func (s *Set) Default() Access { return s.def }

// SlowConsumer is the slow-consumer policy of topic: its rule's, or
// Disconnect when no rule matches.
func (s *Set) SlowConsumer(topic string) Policy {
	if r := s.Match(topic); r != nil {
		return r.SlowConsumer
	}
	return Disconnect
}

// CanSubscribe decides whether a client may subscribe to topic. userID is
// the user the client's token was issued to, hasValidToken whether it
// presented a token that was valid (redeemed, not expired, and bound to
// topic if bound at all — see TokenAllowsSpaced). It returns reason.None or:
// TopicDenied (invalid topic, rule or default says deny), TokenMissing
// (a token is needed), TopicOtherUser (the topic's {userId} segment names
// someone else). It does not allocate.
func (s *Set) CanSubscribe(topic, userID string, hasValidToken bool) reason.Reason {
	if !ValidTopic(topic) {
		return reason.TopicDenied
	}
	r, p := s.MatchParams(topic)
	access := s.def
	if r != nil {
		access = r.Subscribe
	}
	return decide(access, r, p, userID, hasValidToken, reason.TopicDenied)
}

// CanPublish decides whether a client may publish to topic, with the same
// arguments as CanSubscribe. It returns reason.None or: PublishDenied
// (invalid topic, no rule, or the rule says deny), TokenMissing,
// TopicOtherUser. It does not allocate.
func (s *Set) CanPublish(topic, userID string, hasValidToken bool) reason.Reason {
	if !ValidTopic(topic) {
		return reason.PublishDenied
	}
	r, p := s.MatchParams(topic)
	if r == nil {
		return reason.PublishDenied
	}
	return decide(r.Publish, r, p, userID, hasValidToken, reason.PublishDenied)
}

func decide(access Access, r *Rule, p Params, userID string, hasValidToken bool, denied reason.Reason) reason.Reason {
	switch access {
	case Public:
		return reason.None
	case Token:
	default: // Deny, and anything Compile would have refused
		return denied
	}
	if !hasValidToken {
		return reason.TokenMissing
	}
	if r != nil && r.userSeg >= 0 && (!ValidUserID(userID) || p.UserID != userID) {
		return reason.TopicOtherUser
	}
	return reason.None
}

// TokenAllowsSpaced reports whether a token issued to userID and bound to
// patterns (topics or patterns, same syntax as rules, joined by spaces as
// a token's grant holds them) covers topic. An invalid pattern covers
// nothing; an empty list covers nothing (a token bound to no topic is the
// caller's decision). It does not allocate.
func TokenAllowsSpaced(patterns, topic, userID string) bool {
	if !ValidTopic(topic) {
		return false
	}
	for patterns != "" {
		var p string
		p, patterns, _ = strings.Cut(patterns, " ")
		if matchPattern(p, topic, userID) {
			return true
		}
	}
	return false
}

// matchPattern matches a valid topic against an uncompiled pattern without
// allocating; a malformed pattern matches nothing.
func matchPattern(p, topic, userID string) bool {
	if p == "" || len(p) > MaxLen {
		return false
	}
	more, prevUser := true, false
	for {
		ps, last := p, true
		if j := strings.IndexByte(p, '.'); j >= 0 {
			ps, p, last = p[:j], p[j+1:], false
		}
		if !more {
			return prevUser && ps == "**" && last // the root of a user namespace
		}
		if ps == "**" {
			return last
		}
		part := topic
		if j := strings.IndexByte(topic, '.'); j >= 0 {
			part, topic = topic[:j], topic[j+1:]
		} else {
			topic, more = "", false
		}
		switch ps {
		case "*":
		case UserIDSegment:
			if part != userID || !ValidUserID(userID) {
				return false
			}
		default:
			if part != ps { // part is a valid segment, so ps must be one too
				return false
			}
		}
		prevUser = ps == UserIDSegment
		if last {
			return !more
		}
	}
}
