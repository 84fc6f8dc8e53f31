package metrics

import (
	"context"
	"sync/atomic"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/policy/bans"
)

// numReasons and numKinds cover every value of reason.Reason and
// audit.Kind (both uint8), so an index never needs a bounds check and a
// value added to either enum later is counted without a change here.
const (
	numReasons = 1 << 8
	numKinds   = 1 << 8
)

// stage numbers audit.Stage for the `stage` label; stageOther stands for
// an empty or unknown stage.
type stage uint8

const (
	stageAccept stage = iota
	stageHandshake
	stageMessage
	stageClose
	stageAdmin
	stageSystem
	stageOther

	numStages
)

var stageNames = [numStages]string{
	stageAccept:    string(audit.StageAccept),
	stageHandshake: string(audit.StageHandshake),
	stageMessage:   string(audit.StageMessage),
	stageClose:     string(audit.StageClose),
	stageAdmin:     string(audit.StageAdmin),
	stageSystem:    string(audit.StageSystem),
	stageOther:     "unknown",
}

// stageOf numbers s with a switch on the constants: no map, no allocation.
func stageOf(s audit.Stage) stage {
	switch s {
	case audit.StageAccept:
		return stageAccept
	case audit.StageHandshake:
		return stageHandshake
	case audit.StageMessage:
		return stageMessage
	case audit.StageClose:
		return stageClose
	case audit.StageAdmin:
		return stageAdmin
	case audit.StageSystem:
		return stageSystem
	}
	return stageOther
}

// Ban sources, the `source` label of portcullis_bans_total.
const (
	banAuto   = 0 // created by strikes (bans.ActorAuto)
	banManual = 1 // added through the admin API or `portcullis ban add`
)

var banSourceNames = [2]string{"auto", "manual"}

// counters are the event-derived counts. Every field is indexed by an
// enum's number; all are updated with atomic adds.
type counters struct {
	events     [numKinds]atomic.Uint64              // every event, by kind
	refusals   [numStages][numReasons]atomic.Uint64 // refusal kinds, by stage and reason
	opened     [numProtocols]atomic.Uint64          // conn_open, by protocol
	closed     [numProtocols]atomic.Uint64          // conn_close of an upgraded connection, by protocol
	authOK     atomic.Uint64                        // auth_ok: a token redeemed
	authFailed [numReasons]atomic.Uint64            // auth_failed of a client token, by reason
	bans       [2]atomic.Uint64                     // ban, by source
	alerts     [numReasons]atomic.Uint64            // alert_sent and alert_failed, by decision (the reason)
}

// count adds e to the counters. It reads e only, never keeps it, and
// allocates nothing.
func (c *counters) count(e *audit.Event) {
	c.events[e.Event].Add(1)
	r := e.Reason
	if e.Event.Refusal() {
		c.refusals[stageOf(e.Stage)][r].Add(1)
	}
	switch e.Event {
	case audit.KindConnOpen:
		if p, ok := ParseProtocol(e.Proto); ok {
			c.opened[p].Add(1)
		}
	case audit.KindConnClose:
		if p, ok := ParseProtocol(e.Proto); ok {
			c.closed[p].Add(1)
		}
	case audit.KindAuthOK:
		c.authOK.Add(1)
	case audit.KindAuthFailed:
		// A wrong admin key is an admin refusal, not a client token.
		if e.Stage != audit.StageAdmin {
			c.authFailed[r].Add(1)
		}
	case audit.KindBan:
		if e.Actor == bans.ActorAuto {
			c.bans[banAuto].Add(1)
		} else {
			c.bans[banManual].Add(1)
		}
	case audit.KindAlertSent, audit.KindAlertFailed:
		c.alerts[r].Add(1)
	}
}

// Sink counts every event it is given, then passes it on to the sink it
// wraps. Safe for simultaneous use by multiple goroutines (as the wrapped
// sink must be); Emit allocates nothing of its own.
type Sink struct {
	c    *counters
	next audit.Sink
}

// Emit counts e and hands it to the wrapped sink.
func (s *Sink) Emit(e audit.Event) {
	s.c.count(&e)
	s.next.Emit(e)
}

// EmitDurable counts e and hands it to the wrapped sink's durable path
// (audit.EmitDurable), so that wrapping the trail keeps it: the error
// wraps audit.ErrNotDurable when the wrapped sink has none (e is then
// emitted without waiting) or when it was not known to reach the disk.
func (s *Sink) EmitDurable(ctx context.Context, e audit.Event) error {
	s.c.count(&e)
	return audit.EmitDurable(ctx, s.next, e)
}
