package alerting

import (
	"bytes"
	"fmt"
	"html/template"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

// Rendering: a notification becomes a Message. The Subject is
// "[portcullis CRITICAL] <summary> (<node>)", cleaned of control characters
// (the notifier encodes it); the plain-text and HTML bodies say what
// happened, since when, how often, who, what was done, a few audit lines
// and the exact commands to look further and to undo. Attacker-supplied
// values appear only quoted (text) or escaped (HTML), and only values we
// parsed ourselves (addresses, prefixes, event names) appear in commands.

// maxSubject caps the Subject text, in bytes.
const maxSubject = 200

// maxBansShown is how many ban actions a mail lists.
const maxBansShown = 20

var safeWord = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

type view struct {
	Summary   string
	Severity  string
	Rule      string
	Node      string
	Labels    string
	First     string
	Last      string
	Count     int64
	Fresh     int64
	Update    int
	Repeat    bool
	Threshold string
	IPs       []KV
	Prefixes  []KV
	Users     []KV
	OtherIPs  int64
	Bans      []string
	MoreBans  int64
	Samples   []string
	Inspect   []string
	TrailArgs string // --data or --dir of the held-back digest's command
	Undo      []string
	Held      int64
	HeldList  []string
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// subjectOf builds the Subject text of n.
func subjectOf(n *notification, node string) string {
	s := n.Summary
	if len(n.Bans) > 0 {
		k := int64(len(n.Bans)) + n.MoreBans
		s = itoa(k) + " address"
		if k != 1 {
			s += "es"
		}
		s += " banned"
		if k == 1 {
			s += ": " + n.Bans[0].Prefix
		}
	}
	for _, l := range n.Labels {
		if l.Name != "alertname" && l.Name != "severity" {
			s += " " + l.Name + "=" + l.Value
		}
	}
	if n.Update > 0 && !n.Repeat {
		s += " (update " + itoa(int64(n.Update)) + ")"
	}
	if n.Repeat {
		s += " (still firing)"
	}
	subj := "[portcullis " + strings.ToUpper(n.Severity.String()) + "] " + s + " (" + node + ")"
	return clean(subj, maxSubject)
}

func render(n *notification, node string, paths Paths, now time.Time) Message {
	v := view{
		Summary: clean(n.Summary, 200), Severity: strings.ToUpper(n.Severity.String()), Rule: n.Rule, Node: node,
		Labels: n.Labels.String(), First: fmtTime(n.First), Last: fmtTime(n.Last), Count: n.Count, Fresh: n.Fresh,
		Update: n.Update, Repeat: n.Repeat, IPs: quoteKVs(n.TopIPs), Prefixes: quoteKVs(n.TopPrefixes),
		Users: quoteKVs(n.TopUsers), OtherIPs: n.OtherIPs, Held: n.Held, HeldList: n.HeldList,
	}
	if n.Threshold > 0 {
		v.Threshold = fmt.Sprintf("more than %d events per %s", n.Threshold, n.Window)
	}
	for i, b := range n.Bans {
		if i == maxBansShown {
			v.MoreBans = int64(len(n.Bans)-maxBansShown) + n.MoreBans
			break
		}
		line := quote(b.Prefix) + ": " + quote(b.Detail)
		if b.Reason != "" {
			line += ", reason " + quote(b.Reason)
		}
		if b.Strikes > 0 {
			line += ", " + itoa(b.Strikes) + " strikes"
		}
		if b.Actor != "" {
			line += ", by " + quote(b.Actor)
		}
		v.Bans = append(v.Bans, line)
	}
	if len(n.Bans) <= maxBansShown {
		v.MoreBans = n.MoreBans
	}
	for _, e := range n.Samples {
		v.Samples = append(v.Samples, sampleLine(&e))
	}
	v.Inspect, v.Undo = commands(n, paths)
	v.TrailArgs = paths.trailArgs()
	var text bytes.Buffer
	if err := textTmpl.Execute(&text, v); err != nil {
		text.WriteString("render error: " + err.Error())
	}
	var html bytes.Buffer
	if err := htmlTmpl.Execute(&html, v); err != nil {
		html.Reset()
	}
	return Message{Subject: subjectOf(n, node), Text: text.String(), HTML: html.String(), Date: now}
}

func quoteKVs(kvs []KV) []KV {
	out := make([]KV, len(kvs))
	for i, kv := range kvs {
		out[i] = KV{quote(clean(kv.Value, audit.MaxFieldLen)), kv.N}
	}
	return out
}

// sampleLine renders an audit event for the mail: metadata only, every
// string quoted (the event never holds a token, only token_fp).
func sampleLine(e *audit.Event) string {
	var b strings.Builder
	b.WriteString(fmtTime(e.Time))
	b.WriteString(" " + quote(e.Event.String()) + " " + e.Severity.String())
	add := func(k, v string) {
		if v != "" {
			b.WriteString(" " + k + "=" + quote(clean(v, audit.MaxFieldLen)))
		}
	}
	add(audit.FieldStage, string(e.Stage))
	add(audit.FieldIP, addrText(e.IP))
	add(audit.FieldCountedPrefix, prefixText(e.CountedPrefix))
	add(audit.FieldUserID, e.UserID)
	add(audit.FieldTopic, e.Topic)
	add(audit.FieldReason, reasonText(e.Reason))
	add(audit.FieldDetail, e.Detail)
	add(audit.FieldTokenFP, e.TokenFP)
	add(audit.FieldRedeemedIP, addrText(e.RedeemedIP))
	add(audit.FieldActor, e.Actor)
	if e.Count > 0 {
		b.WriteString(" " + audit.FieldCount + "=" + itoa(e.Count))
	}
	if e.Strikes > 0 {
		b.WriteString(" " + audit.FieldStrikes + "=" + itoa(e.Strikes))
	}
	return b.String()
}

// Paths are where a gateway keeps its files, as the commands printed in
// its mails need them to work from any directory.
type Paths struct {
	DataDir  string // absolute; `ban rm --data` finds admin.url and admin.key there
	AuditDir string // absolute, when the trail is not <DataDir>/audit
}

// NewPaths makes dataDir and auditDir absolute (against the working
// directory), leaving auditDir out when it is empty or <dataDir>/audit.
func NewPaths(dataDir, auditDir string) Paths {
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	p := Paths{DataDir: abs(dataDir)}
	if auditDir != "" && abs(auditDir) != filepath.Join(p.DataDir, "audit") {
		p.AuditDir = abs(auditDir)
	}
	return p
}

// shellWord quotes s for a POSIX shell unless it needs none.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// trailArgs are the flags of `audit query` that find the trail.
func (p Paths) trailArgs() string {
	switch {
	case p.AuditDir != "":
		return " --dir " + shellWord(p.AuditDir)
	case p.DataDir != "":
		return " --data " + shellWord(p.DataDir)
	}
	return ""
}

// adminArgs are the flags of `ban rm` that find the admin API and its key.
func (p Paths) adminArgs() string {
	if p.DataDir != "" {
		return " --data " + shellWord(p.DataDir)
	}
	return ""
}

// commands returns the commands to inspect and to undo. Only values that
// parse as an address, a prefix or a plain event name are used; the flags
// of paths come last.
func commands(n *notification, paths Paths) (inspect, undo []string) {
	if n.Held > 0 || n.First.IsZero() {
		return nil, nil
	}
	since := n.First.Add(-time.Minute).UTC().Format(time.RFC3339)
	base := "portcullis audit query --since " + since
	if safeWord.MatchString(n.Event) {
		inspect = append(inspect, base+" --event "+n.Event)
	} else {
		inspect = append(inspect, base+" --severity warning")
	}
	seen := map[string]bool{}
	addIP := func(s string) {
		if len(inspect) >= 6 || seen[s] {
			return
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			seen[s] = true
			inspect = append(inspect, base+" --ip "+p.String())
		} else if a, err := netip.ParseAddr(s); err == nil {
			seen[s] = true
			inspect = append(inspect, base+" --ip "+a.String())
		}
	}
	for _, b := range n.Bans {
		addIP(b.Prefix)
	}
	for _, kv := range n.TopPrefixes {
		addIP(kv.Value)
	}
	for _, kv := range n.TopIPs {
		addIP(kv.Value)
	}
	for i, b := range n.Bans {
		if i == maxBansShown {
			break
		}
		if p, err := netip.ParsePrefix(b.Prefix); err == nil {
			undo = append(undo, "portcullis ban rm "+p.String()+paths.adminArgs())
		}
	}
	for i := range inspect {
		inspect[i] += paths.trailArgs()
	}
	return inspect, undo
}

var textTmpl = texttemplate.Must(texttemplate.New("text").Parse(`{{if .Held}}{{.Held}} further alerts were held back by max_per_hour on {{.Node}} (from {{.First}} to {{.Last}}).
{{range .HeldList}}  {{.}}
{{end}}
Look at the audit trail for details: portcullis audit query --since {{.First}} --severity warning{{.TrailArgs}}
{{else}}What happened: {{.Summary}}
Severity:      {{.Severity}}
Node:          {{.Node}}
Rule:          {{.Rule}}{{if .Threshold}} ({{.Threshold}}){{end}}
Labels:        {{.Labels}}
First seen:    {{.First}}
Last seen:     {{.Last}}
Events:        {{.Count}} in this alert, {{.Fresh}} since the previous mail{{if .Update}} (update {{.Update}}){{end}}{{if .Repeat}} (reminder: still firing){{end}}
{{if .IPs}}
Top addresses:
{{range .IPs}}  {{.Value}}  {{.N}}
{{end}}{{if .OtherIPs}}  (others)  {{.OtherIPs}}
{{end}}{{end}}{{if .Prefixes}}
Top prefixes:
{{range .Prefixes}}  {{.Value}}  {{.N}}
{{end}}{{end}}{{if .Users}}
Users:
{{range .Users}}  {{.Value}}  {{.N}}
{{end}}{{end}}{{if .Bans}}
Action taken:
{{range .Bans}}  {{.}}
{{end}}{{if .MoreBans}}  … and {{.MoreBans}} more
{{end}}{{end}}{{if .Samples}}
Sample audit lines (metadata only):
{{range .Samples}}  {{.}}
{{end}}{{end}}{{if .Inspect}}
Look further:
{{range .Inspect}}  {{.}}
{{end}}{{end}}{{if .Undo}}
Undo:
{{range .Undo}}  {{.}}
{{end}}{{end}}{{end}}
-- 
portcullis alerting on {{.Node}}
`))

var htmlTmpl = template.Must(template.New("html").Parse(`<!DOCTYPE html>
<html><body style="font-family:sans-serif">
{{if .Held}}<p><b>{{.Held}} further alerts were held back</b> by max_per_hour on {{.Node}} (from {{.First}} to {{.Last}}).</p>
<ul>{{range .HeldList}}<li><code>{{.}}</code></li>{{end}}</ul>
{{else}}<h2>{{.Severity}}: {{.Summary}}</h2>
<table>
<tr><td>Node</td><td>{{.Node}}</td></tr>
<tr><td>Rule</td><td>{{.Rule}}{{if .Threshold}} ({{.Threshold}}){{end}}</td></tr>
<tr><td>Labels</td><td><code>{{.Labels}}</code></td></tr>
<tr><td>First seen</td><td>{{.First}}</td></tr>
<tr><td>Last seen</td><td>{{.Last}}</td></tr>
<tr><td>Events</td><td>{{.Count}} ({{.Fresh}} since the previous mail)</td></tr>
</table>
{{if .IPs}}<h3>Top addresses</h3><ul>{{range .IPs}}<li><code>{{.Value}}</code> {{.N}}</li>{{end}}</ul>{{end}}
{{if .Prefixes}}<h3>Top prefixes</h3><ul>{{range .Prefixes}}<li><code>{{.Value}}</code> {{.N}}</li>{{end}}</ul>{{end}}
{{if .Users}}<h3>Users</h3><ul>{{range .Users}}<li><code>{{.Value}}</code> {{.N}}</li>{{end}}</ul>{{end}}
{{if .Bans}}<h3>Action taken</h3><ul>{{range .Bans}}<li><code>{{.}}</code></li>{{end}}{{if .MoreBans}}<li>… and {{.MoreBans}} more</li>{{end}}</ul>{{end}}
{{if .Samples}}<h3>Sample audit lines</h3><pre>{{range .Samples}}{{.}}
{{end}}</pre>{{end}}
{{if .Inspect}}<h3>Look further</h3><pre>{{range .Inspect}}{{.}}
{{end}}</pre>{{end}}
{{if .Undo}}<h3>Undo</h3><pre>{{range .Undo}}{{.}}
{{end}}</pre>{{end}}
{{end}}</body></html>
`))

// testMessage is the mail of Engine.Test.
func testMessage(node string, now time.Time) Message {
	return Message{
		Subject: clean("[portcullis NOTICE] test alert ("+node+")", maxSubject),
		Text: "This is a test mail from portcullis on " + node + " at " + fmtTime(now) + ".\n" +
			"If you can read it, alert mail works.\n",
		Date: now,
	}
}
