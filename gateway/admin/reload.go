package admin

import (
	"errors"
	"net/http"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Reload failure codes: the "error" of a refused POST /v1/reload.
const (
	// ReloadNeedsRestart: a key changed that cannot change live (409).
	ReloadNeedsRestart = "needs_restart"
	// ReloadConfigInvalid: the file does not load or does not build (422).
	ReloadConfigInvalid = "config_invalid"
	// ReloadFailed: applying the new config failed (500).
	ReloadFailed = "reload_failed"
)

// ReloadError is a reload that was refused or failed; the config in force
// before it stays in force. Key names the config key at fault when there
// is one.
type ReloadError struct {
	Code string // ReloadNeedsRestart, ReloadConfigInvalid or ReloadFailed
	Key  string
	Err  error
}

func (e *ReloadError) Error() string { return e.Err.Error() }
func (e *ReloadError) Unwrap() error { return e.Err }

// Status is the HTTP status the API answers e with.
func (e *ReloadError) Status() int {
	switch e.Code {
	case ReloadNeedsRestart:
		return http.StatusConflict
	case ReloadConfigInvalid:
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}

// Reloader re-reads the config file and applies what changed, as the
// named actor: the changed keys, or an error (a *ReloadError says which
// key and why). It audits the outcome itself, durably.
type Reloader func(actor string) (changed []string, err error)

type reloadReply struct {
	Changed []string `json:"changed"`
}

type reloadRefusal struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Key     string `json:"key,omitempty"`
}

// reload is POST /v1/reload. Its body, if any, must be an empty JSON
// object.
func (a *API) reload(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, err.Error())
			return
		}
	}
	changed, err := a.o.Reload("api@" + remoteIP(r))
	if err != nil {
		var re *ReloadError
		if !errors.As(err, &re) {
			re = &ReloadError{Code: ReloadFailed, Err: err}
		}
		writeJSON(w, re.Status(), reloadRefusal{Error: re.Code, Message: re.Error(), Key: re.Key})
		return
	}
	if changed == nil {
		changed = []string{}
	}
	writeJSON(w, http.StatusOK, reloadReply{Changed: changed})
}
