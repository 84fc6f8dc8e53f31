package alerting

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Stage 3b: silences. An operator mutes notifications whose labels match
// every matcher of a silence until it ends. Silences are saved in the
// alerts file and survive restarts; an ended silence is kept for
// silenceRetention so that people can see what was muted, then forgotten.

// silenceRetention is how long an ended silence is still listed.
const silenceRetention = 24 * time.Hour

// Limits on silences.
const (
	MaxSilences        = 1000
	MaxSilenceMatchers = 16
	MaxSilenceFor      = 30 * 24 * time.Hour // longest a silence may run
	maxSilenceText     = 256                 // by and comment, in bytes
)

// Matcher requires label Name to equal Value. Names are alertname, severity
// and the fields of FieldNames a rule groups by.
type Matcher struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Silence mutes matching notifications from Created until Until.
type Silence struct {
	ID       string    `json:"id"`
	Matchers []Matcher `json:"matchers"`
	Created  time.Time `json:"created"`
	Until    time.Time `json:"until"`
	By       string    `json:"by"`
	Comment  string    `json:"comment,omitempty"`
}

// Active reports whether s mutes notifications at now.
func (s Silence) Active(now time.Time) bool { return !now.Before(s.Created) && now.Before(s.Until) }

func (s Silence) matches(ls Labels) bool {
	for _, m := range s.Matchers {
		if ls.Get(m.Name) != m.Value {
			return false
		}
	}
	return true
}

// ErrNoSilence is returned by Expire for an unknown id.
var ErrNoSilence = errors.New("alerting: no such silence")

func (s Silence) valid() error {
	var errs []error
	if len(s.Matchers) == 0 || len(s.Matchers) > MaxSilenceMatchers {
		errs = append(errs, fmt.Errorf("silence: 1..%d matchers, got %d", MaxSilenceMatchers, len(s.Matchers)))
	}
	for i, m := range s.Matchers {
		if m.Name != "alertname" && m.Name != "severity" && !knownField(m.Name) {
			errs = append(errs, fmt.Errorf("silence: matchers[%d]: unknown label %q", i, m.Name))
		}
		if m.Value == "" || hasCtl(m.Value) || len(m.Value) > maxLabelLen {
			errs = append(errs, fmt.Errorf("silence: matchers[%d]: value must be 1..%d bytes without control characters", i, maxLabelLen))
		}
	}
	if s.By == "" || hasCtl(s.By) || len(s.By) > maxSilenceText {
		errs = append(errs, fmt.Errorf("silence: by: required, at most %d bytes, no control characters", maxSilenceText))
	}
	if hasCtl(s.Comment) || len(s.Comment) > maxSilenceText {
		errs = append(errs, fmt.Errorf("silence: comment: at most %d bytes, no control characters", maxSilenceText))
	}
	if !s.Until.After(s.Created) && s.ID == "" {
		errs = append(errs, errors.New("silence: until must be in the future"))
	}
	if s.Until.Sub(s.Created) > MaxSilenceFor {
		errs = append(errs, fmt.Errorf("silence: at most %s long", MaxSilenceFor))
	}
	return errors.Join(errs...)
}

// silencer holds the silences. It is safe for use by multiple goroutines.
type silencer struct {
	st     *store
	report func(*notification, Decision, string)

	mu   sync.Mutex
	list map[string]Silence // guarded by mu
}

func (s *silencer) add(ms []Matcher, now, until time.Time, by, comment string) (string, error) {
	sl := Silence{Matchers: slices.Clone(ms), Created: now, Until: until, By: by, Comment: comment}
	if err := sl.valid(); err != nil {
		return "", err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	sl.ID = hex.EncodeToString(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.list) >= MaxSilences {
		return "", fmt.Errorf("silence: at most %d silences; expire some first", MaxSilences)
	}
	if err := s.st.putSilence(sl); err != nil {
		return "", err
	}
	s.list[sl.ID] = sl
	return sl.ID, nil
}

func (s *silencer) expire(id string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, ok := s.list[id]
	if !ok {
		return ErrNoSilence
	}
	if !now.Before(sl.Until) {
		return nil
	}
	sl.Until = now
	if sl.Until.Before(sl.Created) {
		sl.Created = now
	}
	if err := s.st.putSilence(sl); err != nil {
		return err
	}
	s.list[id] = sl
	return nil
}

// all returns every silence still listed, newest first.
func (s *silencer) all() []Silence {
	s.mu.Lock()
	out := make([]Silence, 0, len(s.list))
	for _, sl := range s.list {
		sl.Matchers = slices.Clone(sl.Matchers)
		out = append(out, sl)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Silence) int { return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(a.ID, b.ID)) })
	return out
}

// gc forgets silences that ended more than silenceRetention before now.
func (s *silencer) gc(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, sl := range s.list {
		if now.Sub(sl.Until) > silenceRetention {
			if s.st.removeSilence(id) == nil {
				delete(s.list, id)
			}
		}
	}
}

func (s *silencer) exec(now time.Time, ns []*notification) []*notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := ns[:0]
next:
	for _, n := range ns {
		for _, sl := range s.list {
			if sl.Active(now) && sl.matches(n.Labels) {
				s.report(n, Silenced, "silence "+sl.ID+" by "+quote(sl.By)+" until "+sl.Until.UTC().Format(time.RFC3339))
				continue next
			}
		}
		out = append(out, n)
	}
	return out
}
