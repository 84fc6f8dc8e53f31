package audit

import (
	"bytes"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// logrusRef formats events with logrus' JSONFormatter itself, configured
// as the audit line format: the reference lineFormatter.template is
// tested against.
type logrusRef struct {
	lf     *lineFormatter
	f      *logrus.JSONFormatter
	fields logrus.Fields
	buf    bytes.Buffer
}

func newLogrusRef(lf *lineFormatter) *logrusRef {
	return &logrusRef{
		lf: lf,
		f: &logrus.JSONFormatter{
			TimestampFormat:   time.RFC3339Nano,
			DisableHTMLEscape: true,
			FieldMap:          logrus.FieldMap{logrus.FieldKeyTime: "time", logrus.FieldKeyMsg: "event", logrus.FieldKeyLevel: "level"},
		},
		fields: make(logrus.Fields, 32),
	}
}

// template is lineFormatter.template done by logrus.
func (ref *logrusRef) template(dst []byte, e *Event) []byte {
	lf := ref.lf
	f := ref.fields
	clear(f)
	f["seq"] = uint64(0)
	f["prev"] = string(chain.ZeroMAC)
	f["severity"] = e.Severity.String()
	f["boot"] = lf.boot
	if e.Strikes != 0 {
		f["strikes"] = e.Strikes
	}
	add := func(k, v string) {
		if v != "" {
			f[k] = Cap(v)
		}
	}
	add("node", lf.node)
	if e.IP.IsValid() {
		add("ip", e.IP.String())
	}
	if e.PeerIP.IsValid() {
		add("peer_ip", e.PeerIP.String())
	}
	if e.CountedPrefix.IsValid() {
		add("counted_prefix", e.CountedPrefix.String())
	}
	add("stage", string(e.Stage))
	add("proto", e.Proto)
	add("userId", e.UserID)
	add("topic", e.Topic)
	if e.Reason != reason.None {
		add("reason", e.Reason.String())
	}
	add("detail", e.Detail)
	add("token_fp", e.TokenFP)
	add("actor", e.Actor)
	if e.RedeemedIP.IsValid() {
		f["redeemed_ip"] = Cap(e.RedeemedIP.String())
		f["redeemed_ago_s"] = e.RedeemedAgoS
	}
	if e.Conn != 0 {
		f["conn"] = e.Conn
	}
	if e.Code != 0 {
		f["code"] = e.Code
	}
	if e.Event == KindConnClose || e.DurationMS != 0 {
		f["duration_ms"] = e.DurationMS
	}
	if e.Count != 0 {
		f["count"] = e.Count
	}
	if !e.First.IsZero() {
		f["first"] = e.First.UTC().Format(time.RFC3339Nano)
	}
	if !e.Last.IsZero() {
		f["last"] = e.Last.UTC().Format(time.RFC3339Nano)
	}
	ref.buf.Reset()
	level := logrus.InfoLevel
	switch e.Severity {
	case Warning:
		level = logrus.WarnLevel
	case Critical:
		level = logrus.ErrorLevel
	}
	entry := logrus.Entry{Data: f, Time: e.Time.UTC(), Level: level, Message: e.Event.String(), Buffer: &ref.buf}
	out, err := ref.f.Format(&entry)
	out = bytes.TrimRight(out, "\n")
	if err != nil || len(out) < 2 || out[len(out)-1] != '}' {
		// Cannot happen with these value types; keep the chain well-formed.
		return append(dst, `{"event":"audit_format_error","prev":"`+string(chain.ZeroMAC)+`","seq":0`...)
	}
	return append(dst, out[:len(out)-1]...)
}
