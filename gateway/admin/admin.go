// Package admin is the admin HTTP API: token minting, publishing,
// stats and health, behind a bearer key. It depends on the gateway only
// through the small interfaces below, and never imports cmd or alerting.
package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// MaxBodyBytes caps every request body.
const MaxBodyBytes = 1 << 20

// Publisher publishes to the subscribers of a topic (gateway.Server,
// through its broker). Publish returns once the publication is queued for
// delivery, with the number of local subscriptions it was queued for; an
// error means it was not published.
type Publisher interface {
	Publish(topic string, data []byte) (int, error)
}

// ClusterPublisher is a Publisher whose publications also go to the
// other nodes of a cluster (gateway/cluster). When Options.Publisher is
// one, POST /v1/publish publishes through PublishCluster and answers its
// ClusterPublished.
type ClusterPublisher interface {
	PublishCluster(ctx context.Context, topic string, data []byte) (ClusterPublished, error)
}

// ClusterPublished is POST /v1/publish's answer in a cluster.
type ClusterPublished struct {
	Delivered int  `json:"delivered"` // this node's subscriptions it was queued for
	Nodes     int  `json:"nodes"`     // the nodes Redis handed it to (this one included when it has subscribers)
	Degraded  bool `json:"degraded"`  // Redis unreachable: this node's subscribers only
}

// Minter mints tokens.
type Minter interface {
	Mint(userID string, topics []string, ttl time.Duration, now time.Time) (string, time.Time, error)
}

// Options wire the API to the gateway.
type Options struct {
	Key       string // bearer key
	Publisher Publisher
	Tokens    Minter           // nil when tokens come from elsewhere (tokens.source: jwt)
	Bans      Banner           // /v1/bans; nil leaves them out
	Stats     func() any       // body of GET /v1/stats
	Ready     func() error     // nil when ready to serve
	Audit     audit.Sink       // admin actions and refusals
	Now       func() time.Time // clock; time.Now when nil
	// Reload is POST /v1/reload; nil leaves the endpoint out.
	Reload Reloader
	// Metrics is GET /metrics (gateway/metrics); nil leaves it out. A
	// loopback peer, or every peer when MetricsPublic, needs no key.
	Metrics       http.Handler
	MetricsPublic bool
	// Extra routes under /v1 added by other packages (bans, silences), each
	// behind the same bearer check.
	Routes map[string]http.Handler
}

// API is the admin HTTP handler.
type API struct {
	o   Options
	key [sha256.Size]byte
	mux *http.ServeMux
}

// New returns the admin API handler.
func New(o Options) *API {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Audit == nil {
		o.Audit = audit.Discard{}
	}
	a := &API{o: o, key: sha256.Sum256([]byte(o.Key)), mux: http.NewServeMux()}
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.Handle("POST /v1/tokens", a.auth(http.HandlerFunc(a.tokens)))
	a.mux.Handle("POST /v1/publish", a.auth(http.HandlerFunc(a.publish)))
	a.mux.Handle("GET /v1/stats", a.auth(http.HandlerFunc(a.stats)))
	if o.Reload != nil {
		a.mux.Handle("POST /v1/reload", a.auth(http.HandlerFunc(a.reload)))
	}
	if o.Metrics != nil {
		a.mux.Handle("GET /metrics", metrics.Access(o.Metrics, o.MetricsPublic, a.auth))
	}
	if b := o.Bans; b != nil {
		a.mux.Handle("GET /v1/bans", a.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.listBans(w, r, b) })))
		a.mux.Handle("POST /v1/bans", a.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.addBan(w, r, b) })))
		a.mux.Handle("DELETE /v1/bans/{addr...}", a.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.removeBan(w, r, b) })))
	}
	for pattern, h := range o.Routes {
		a.mux.Handle(pattern, a.auth(a.checkedBody(h)))
	}
	a.mux.Handle("/v1/", a.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Error(w, http.StatusNotFound, "not_found", "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})))
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		Error(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	a.mux.ServeHTTP(w, r)
}

// Error writes the API's JSON error body {"error","message"}.
func Error(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": code, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// remoteAddr is the client address of r for audit events; the zero Addr
// (left out of the line) when RemoteAddr is not an address and port.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// auth requires `Authorization: Bearer <key>`, compared in constant time.
func (a *API) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		sum := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(sum[:], a.key[:]) != 1 {
			why := reason.AdminKeyMissing
			if ok {
				why = reason.AdminKeyWrong
			}
			a.o.Audit.Emit(audit.Event{Time: a.o.Now(), Event: audit.KindAuthFailed, Severity: audit.Warning,
				Stage: audit.StageAdmin, IP: remoteAddr(r), Reason: why,
				Detail: audit.Cap(r.Method + " " + r.URL.Path)})
			w.Header().Set("WWW-Authenticate", `Bearer realm="portcullis"`)
			Error(w, http.StatusUnauthorized, "unauthorized", "missing or wrong admin key (Authorization: Bearer <key>)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// decode reads a JSON body strictly (see DecodeBytes): invalid UTF-8,
// unknown, case-mismatched and duplicate keys and trailing data are errors.
func decode(r *http.Request, v any) error { return Decode(r, v) }

// refuse answers a refused request with status and code's name as its
// "error", and audits it.
func (a *API) refuse(w http.ResponseWriter, r *http.Request, status int, code reason.Reason, msg string) {
	a.o.Audit.Emit(audit.Event{Time: a.o.Now(), Event: audit.KindAdmin, Severity: audit.Notice, Stage: audit.StageAdmin,
		IP: remoteAddr(r), Reason: code, Detail: audit.Cap(r.Method + " " + r.URL.Path + ": " + msg), Code: status})
	Error(w, status, code.String(), msg)
}

// refuseUndurable answers 503 audit_unavailable for an action whose audit
// line is not known to be on disk (err wraps audit.ErrNotDurable): the
// action took effect, but the API does not acknowledge what the trail may
// have lost.
func (a *API) refuseUndurable(w http.ResponseWriter, r *http.Request, what string, err error) {
	a.refuse(w, r, http.StatusServiceUnavailable, reason.AuditUnavailable,
		what+", but its audit line is not known to be on disk: "+err.Error())
}

// UserIDRule is the error message for a userId that is not one topic
// segment (topics.ValidUserID).
const UserIDRule = `userId must be 1-128 characters of [A-Za-z0-9_@:-] or an integer; it is one topic segment, so it cannot contain "."`

type tokenRequest struct {
	UserID json.RawMessage `json:"userId"`
	Topics []string        `json:"topics"`
	TTL    string          `json:"ttl"`
}

// UserID normalises a JSON string or integer user id.
func UserID(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n json.Number
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&n); err == nil {
		if _, err := n.Int64(); err == nil {
			return n.String(), nil
		}
	}
	return "", errors.New("userId must be a string or an integer")
}

func (a *API) tokens(w http.ResponseWriter, r *http.Request) {
	if a.o.Tokens == nil {
		a.refuse(w, r, http.StatusConflict, reason.TokensFromSite,
			"this gateway verifies JWTs the site signs (tokens.source: jwt); it does not mint tokens")
		return
	}
	var req tokenRequest
	if err := decode(r, &req); err != nil {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, err.Error())
		return
	}
	if len(req.UserID) == 0 {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, "userId is required")
		return
	}
	user, err := UserID(req.UserID)
	if err != nil || !topics.ValidUserID(user) {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, UserIDRule)
		return
	}
	for _, t := range req.Topics {
		if !topics.ValidPattern(t) {
			a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, fmt.Sprintf("topics: %q is not a valid topic or pattern", audit.Cap(t)))
			return
		}
	}
	var ttl time.Duration
	if req.TTL != "" {
		ttl, err = time.ParseDuration(req.TTL)
		if err != nil || ttl <= 0 {
			a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, fmt.Sprintf("ttl %q is not a positive duration such as \"60s\"", audit.Cap(req.TTL)))
			return
		}
	}
	now := a.o.Now()
	tok, exp, err := a.o.Tokens.Mint(user, req.Topics, ttl, now)
	if err != nil {
		if errors.Is(err, tokens.ErrFull) {
			a.refuse(w, r, http.StatusServiceUnavailable, reason.TokenTableFull, "token table full; retry later")
			return
		}
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, err.Error())
		return
	}
	// The token is handed out only once its line is durable: a token the
	// trail does not know of is never shown (it lapses unused).
	if err := audit.EmitDurable(r.Context(), a.o.Audit, audit.Event{Time: now, Event: audit.KindAdmin, Severity: audit.Info,
		Stage: audit.StageAdmin, IP: remoteAddr(r), UserID: user, TokenFP: audit.TokenFP(tok), Detail: "token issued", Actor: "api"}); err != nil {
		a.refuseUndurable(w, r, "token minted and withheld", err)
		return
	}
	writeJSON(w, http.StatusCreated, tokenReply{Token: tok, UserID: user, ExpiresAt: exp.UTC().Format(time.RFC3339)})
}

type tokenReply struct {
	Token     string `json:"token"`
	UserID    string `json:"userId"`
	ExpiresAt string `json:"expires_at"`
}

type publishRequest struct {
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
}

func (a *API) publish(w http.ResponseWriter, r *http.Request) {
	var req publishRequest
	if err := decode(r, &req); err != nil {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, err.Error())
		return
	}
	if !topics.ValidTopic(req.Topic) {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, "topic must be dot-separated segments of [A-Za-z0-9_:@-], at most 200 characters")
		return
	}
	if len(req.Data) == 0 {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, "data is required (any JSON value)")
		return
	}
	if err := checkData(req.Data); err != nil {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, err.Error())
		return
	}
	data, err := compact(req.Data)
	if err != nil {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, "data is not valid JSON")
		return
	}
	if cp, ok := a.o.Publisher.(ClusterPublisher); ok {
		res, err := cp.PublishCluster(r.Context(), req.Topic, data)
		if err != nil {
			a.refuse(w, r, http.StatusServiceUnavailable, reason.PublishFailed, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, res)
		return
	}
	n, err := a.o.Publisher.Publish(req.Topic, data)
	if err != nil {
		a.refuse(w, r, http.StatusServiceUnavailable, reason.PublishFailed, err.Error())
		return
	}
	// "delivered" counts the local subscriptions the publication was
	// queued for; the writes to their sockets follow this answer.
	writeJSON(w, http.StatusOK, map[string]int{"delivered": n})
}

// compact validates raw and strips its insignificant whitespace, so every
// subscriber receives the smallest frame.
func compact(raw json.RawMessage) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(raw))
	if err := json.Compact(&out, raw); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.o.Stats())
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.o.Ready != nil {
		if err := a.o.Ready(); err != nil {
			Error(w, http.StatusServiceUnavailable, "not_ready", err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
