package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/bans"
)

// Banner manages bans on behalf of an actor: policy/guard implements it,
// closing live connections of a newly banned prefix and auditing every
// change with its actor.
//
// Ban and Unban return once the change's audit line is on disk; an error
// wrapping audit.ErrNotDurable means the change took effect but the trail
// could not confirm it, and the API answers 503 audit_unavailable.
type Banner interface {
	Ban(ctx context.Context, p netip.Prefix, d time.Duration, note, actor string, now time.Time) (bans.Ban, error)
	Unban(ctx context.Context, p netip.Prefix, actor string, now time.Time) (bool, error)
	Bans(now time.Time) []bans.Ban
	IPv6Prefix() int
}

// banJSON is a ban as the API shows it: reason is a reason's name
// ("manual" for a ban an operator asked for), note the operator's text.
type banJSON struct {
	Prefix    string `json:"prefix"`
	Until     string `json:"until"`
	Remaining string `json:"remaining"`
	Reason    string `json:"reason"`
	Note      string `json:"note,omitempty"`
	Actor     string `json:"actor"`
	Repeat    int    `json:"repeat"`
	DryRun    bool   `json:"dry_run,omitempty"`
}

func showBan(b bans.Ban, now time.Time) banJSON {
	return banJSON{Prefix: b.Prefix.String(), Until: b.Until.UTC().Format(time.RFC3339), Reason: b.Reason.String(), Note: b.Note,
		Remaining: b.Remaining(now).Round(time.Second).String(), Actor: b.Actor, Repeat: b.Repeat, DryRun: b.DryRun}
}

type banRequest struct {
	Prefix string `json:"prefix"`
	For    string `json:"for"`
	Reason string `json:"reason"` // free text: the ban's note
	Actor  string `json:"actor"`  // who asks (the CLI sends the login name); the API adds its peer
}

// actor names who acted: the name the caller gave, and where from.
func actor(given string, r *http.Request) string {
	given = strings.TrimSpace(given)
	if given == "" {
		return "api@" + remoteIP(r)
	}
	return audit.Cap(given) + " via api@" + remoteIP(r)
}

func (a *API) listBans(w http.ResponseWriter, r *http.Request, b Banner) {
	now := a.o.Now()
	list := b.Bans(now)
	out := make([]banJSON, 0, len(list))
	for _, x := range list {
		out = append(out, showBan(x, now))
	}
	writeJSON(w, http.StatusOK, struct {
		Bans []banJSON `json:"bans"`
	}{out})
}

func (a *API) addBan(w http.ResponseWriter, r *http.Request, b Banner) {
	var req banRequest
	if err := decode(r, &req); err != nil {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, err.Error())
		return
	}
	p, err := bans.ParsePrefix(req.Prefix, b.IPv6Prefix())
	if err != nil {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, "prefix: "+err.Error())
		return
	}
	var d time.Duration
	if req.For != "" {
		d, err = time.ParseDuration(req.For)
		if err != nil || d <= 0 {
			a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, fmt.Sprintf("for: %q is not a positive duration such as \"1h\"", audit.Cap(req.For)))
			return
		}
	}
	ban, err := b.Ban(r.Context(), p, d, req.Reason, actor(req.Actor, r), a.o.Now())
	if errors.Is(err, audit.ErrNotDurable) {
		a.refuseUndurable(w, r, ban.Prefix.String()+" is banned", err)
		return
	}
	if err != nil {
		status, code := http.StatusBadRequest, reason.BadRequest
		if errors.Is(err, bans.ErrAllowed) {
			status, code = http.StatusConflict, reason.AllowListed
		}
		a.refuse(w, r, status, code, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, showBan(ban, a.o.Now()))
}

func (a *API) removeBan(w http.ResponseWriter, r *http.Request, b Banner) {
	p, err := bans.ParsePrefix(r.PathValue("addr"), b.IPv6Prefix())
	if err != nil {
		a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, err.Error())
		return
	}
	removed, err := b.Unban(r.Context(), p, actor(r.URL.Query().Get("actor"), r), a.o.Now())
	if errors.Is(err, audit.ErrNotDurable) {
		a.refuseUndurable(w, r, p.String()+" is unbanned", err)
		return
	}
	if err != nil {
		a.refuse(w, r, http.StatusInternalServerError, reason.Internal, err.Error())
		return
	}
	if !removed {
		a.refuse(w, r, http.StatusNotFound, reason.NotBanned, p.String()+" is not banned")
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Removed string `json:"removed"`
	}{p.String()})
}
