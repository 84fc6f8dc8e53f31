package e2e

// End-to-end tests of the audit trail (docs/AUDIT.md): tamper evidence checked
// by `portcullis audit verify`, crash safety under kill -9, log injection,
// no token in clear anywhere, and `audit query` / `audit tail`.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// audGenerate produces a mix of events on s: a subscription with a token,
// a token of another user, bad messages, a ban and an unban by the API.
func audGenerate(t *testing.T, s *server) {
	t.Helper()
	ok, other := s.token("alice", "news"), s.token("bob", "news")
	rc := dialRaw(t, s)
	rc.frame(true, 1, []byte(fmt.Sprintf(`{"op":"subscribe","id":2,"topic":"news","userId":"alice","token":%q}`, other)), true)
	if m := rc.readMsg(); m["code"] != "auth_failed" {
		t.Fatalf("token of another user: %v", m)
	}
	rc.frame(true, 1, []byte(fmt.Sprintf(`{"op":"subscribe","id":1,"topic":"news","userId":"alice","token":%q}`, ok)), true)
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("subscribe: %v", m)
	}
	rc.frame(true, 1, []byte(`{"op":`), true)
	if m := rc.readMsg(); m["code"] != "bad_request" {
		t.Fatalf("bad JSON: %v", m)
	}
	rc.frame(true, 1, []byte(`{"op":"ping","id":3,"x":1}`), true)
	if m := rc.readMsg(); m["code"] != "bad_request" {
		t.Fatalf("schema violation: %v", m)
	}
	rc.frame(true, 8, []byte{0x03, 0xe8}, true)
	rc.expectClose()
	if code, out := s.api("POST", "/v1/bans", `{"prefix":"203.0.113.0/24","for":"1h","reason":"audit e2e"}`); code != 201 {
		t.Fatalf("POST /v1/bans: %d %v", code, out)
	}
	if code, out := s.api("DELETE", "/v1/bans/203.0.113.0%2F24", ""); code != 200 {
		t.Fatalf("DELETE /v1/bans: %d %v", code, out)
	}
	s.waitAudit(map[string]any{"event": "unban", "counted_prefix": "203.0.113.0/24"})
}

// audTamper copies the data dir, lets f change the copy's audit dir, and
// runs verify on it.
func audTamper(t *testing.T, data string, f func(auditDir string)) (string, int) {
	t.Helper()
	cp := audCopyDir(t, data)
	f(filepath.Join(cp, "audit"))
	return audVerify(t, cp)
}

// audRewrite replaces the lines of a trail file (plain or gzip'd).
func audRewrite(t *testing.T, path string, lines [][]byte, tail []byte) {
	t.Helper()
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	b.Write(tail)
	if strings.HasSuffix(path, ".gz") {
		audWriteGz(t, path, b.Bytes())
		return
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A trail of two files (rotated at 1 MiB) verifies intact; every kind of
// tampering with a copy makes `audit verify` exit 1 naming file:line.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	start := time.Now()
	s := startServer(t, audChurnConfig+"audit: {rotate_bytes: 1048576}\n")
	// Fill the first file: each connection writes conn_open and conn_close.
	for i := 0; num(s.statsOf("audit"), "rotations") < 1; i++ {
		if i >= 20 {
			t.Fatalf("no rotation after %d connections: %v", i*400, s.statsOf("audit"))
		}
		if _, err := audChurn(s, 400, 16, nil); err != nil {
			t.Fatalf("connection churn: %v", err)
		}
	}
	t.Logf("rotated after %v", time.Since(start).Round(time.Millisecond))
	audGenerate(t, s) // these land in the new active file
	s.stop()

	dir := filepath.Join(s.data, "audit")
	files := audTrail(t, dir)
	if len(files) < 2 {
		t.Fatalf("want ≥ 2 trail files, have %d", len(files))
	}
	for _, f := range files {
		t.Logf("trail file %s (%d bytes inflated)", f.name, len(f.content))
	}
	rotated, active := files[len(files)-2], files[len(files)-1]
	if active.name != "audit.log" {
		t.Fatalf("newest file %s", active.name)
	}
	lines, tail := audLines(active.content)
	if len(tail) != 0 || len(lines) < 10 {
		t.Fatalf("active file: %d lines, tail %q", len(lines), tail)
	}

	out, code := audVerify(t, s.data)
	if code != 0 || !strings.Contains(out, "intact: ") {
		t.Fatalf("untouched trail: exit %d\n%s", code, out)
	}
	t.Logf("untouched: %s", strings.TrimSpace(out))

	// A line in the middle of the active file carrying the client address.
	k := -1
	for i := 3; i < len(lines)-3; i++ {
		if bytes.Contains(lines[i], []byte(`"ip":"127.0.0.1"`)) {
			k = i
			break
		}
	}
	if k < 0 {
		t.Fatalf("no line with the client address in %s", active.name)
	}
	clone := func() [][]byte {
		c := make([][]byte, len(lines))
		for i := range lines {
			c[i] = bytes.Clone(lines[i])
		}
		return c
	}
	at := func(dir string, f audFile, line int) string {
		return fmt.Sprintf("%s:%d: ", filepath.Join(dir, f.name), line)
	}
	macRe := regexp.MustCompile(`"mac":"[0-9a-f]{64}"`)

	cases := []struct {
		name  string
		do    func(dir string)
		where func(dir string) string // expected "file:line: " prefix
		what  string
	}{
		{"modified line", func(dir string) {
			l := clone()
			l[k] = bytes.Replace(l[k], []byte(`"ip":"127.0.0.1"`), []byte(`"ip":"127.0.0.2"`), 1)
			audRewrite(t, filepath.Join(dir, active.name), l, nil)
		}, func(dir string) string { return at(dir, active, k+1) }, "mac mismatch"},
		{"deleted line", func(dir string) {
			l := clone()
			l = append(l[:k], l[k+1:]...)
			audRewrite(t, filepath.Join(dir, active.name), l, nil)
		}, func(dir string) string { return at(dir, active, k+1) }, "seq jumps"},
		{"swapped lines", func(dir string) {
			l := clone()
			l[k], l[k+1] = l[k+1], l[k]
			audRewrite(t, filepath.Join(dir, active.name), l, nil)
		}, func(dir string) string { return at(dir, active, k+1) }, "chain broken"},
		{"forged mac", func(dir string) {
			l := clone()
			l[k] = bytes.Replace(l[k], []byte(`"ip":"127.0.0.1"`), []byte(`"ip":"127.0.0.2"`), 1)
			l[k] = macRe.ReplaceAll(l[k], []byte(`"mac":"`+strings.Repeat("ab", 32)+`"`))
			audRewrite(t, filepath.Join(dir, active.name), l, nil)
		}, func(dir string) string { return at(dir, active, k+1) }, "mac mismatch"},
		{"last lines removed", func(dir string) {
			audRewrite(t, filepath.Join(dir, active.name), clone()[:len(lines)-2], nil)
		}, func(dir string) string { return at(dir, active, len(lines)-2) }, "line(s) truncated or the trail rewritten"},
		{"modified line in the rotated file", func(dir string) {
			rl, rt := audLines(rotated.content)
			m := len(rl) / 2
			rl[m] = bytes.Replace(rl[m], []byte(`"ip":"127.0.0.1"`), []byte(`"ip":"10.0.0.1"`), 1)
			audRewrite(t, filepath.Join(dir, rotated.name), rl, rt)
		}, func(dir string) string {
			rl, _ := audLines(rotated.content)
			return at(dir, rotated, len(rl)/2+1)
		}, "mac mismatch"},
		{"rotated file missing", func(dir string) {
			if err := os.Remove(filepath.Join(dir, rotated.name)); err != nil {
				t.Fatal(err)
			}
		}, func(dir string) string { return at(dir, active, 1) }, "is missing and was not removed by retention"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d string
			out, code := audTamper(t, s.data, func(dir string) { d = dir; c.do(dir) })
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, out)
			}
			if l := audProblem(out, c.where(d), c.what); l == "" {
				t.Fatalf("no line %q…%q in the output:\n%s", c.where(d), c.what, out)
			} else {
				t.Logf("%s", l)
			}
		})
	}

	// A tail cut in the middle of its last line after a clean stop: the
	// verifier calls the partial line what it is, but the final checkpoint
	// covers the line that was cut, so this is a break, not a crash.
	t.Run("truncated tail", func(t *testing.T) {
		var d string
		out, code := audTamper(t, s.data, func(dir string) {
			d = dir
			l := clone()
			last := l[len(l)-1]
			audRewrite(t, filepath.Join(dir, active.name), l[:len(l)-1], last[:len(last)/2])
		})
		if audProblem(out, at(d, active, len(lines))+"warning: truncated last line", "") == "" {
			t.Fatalf("no truncated-last-line warning at %s (exit %d):\n%s", at(d, active, len(lines)), code, out)
		}
		t.Logf("exit %d:\n%s", code, out)
		if code != 1 || !strings.Contains(out, "line(s) truncated or the trail rewritten") {
			t.Fatalf("a tail cut after a clean stop (covered by the last checkpoint): exit %d, want 1 naming the checkpoint:\n%s", code, out)
		}
	})
}

// kill -9 under load: the trail holds every line the gateway reported
// durable, verify finds at most a truncated last line, and a restart on the
// same data dir continues the chain.
func TestAuditCrashKill9(t *testing.T) {
	s := startServer(t, audChurnConfig)
	first := num(s.statsOf("audit"), "last_durable_seq")
	stop := make(chan struct{})
	churned := make(chan int64, 1)
	go func() {
		n, _ := audChurn(s, 0, 12, stop) // errors expected once the gateway is killed
		churned <- n
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()
	var durable uint64
	checkFor(t, 20*time.Second, func() error {
		st := s.statsOf("audit")
		if durable = num(st, "last_durable_seq"); durable < first+1000 {
			return fmt.Errorf("last_durable_seq %d (written %d), want ≥ %d", durable, num(st, "written"), first+1000)
		}
		return nil
	})
	st := s.statsOf("audit") // an even later value, read while the load goes on
	if d := num(st, "last_durable_seq"); d > durable {
		durable = d
	}
	s.kill9()
	close(stop)
	t.Logf("killed at last_durable_seq %d (written %d, dropped %d), %d connections churned",
		durable, num(st, "written"), num(st, "dropped"), <-churned)

	out, code := audVerify(t, s.data)
	if code != 0 {
		t.Fatalf("verify after kill -9: exit %d, want 0 (at most a truncated last line):\n%s", code, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "intact: ") && !strings.Contains(l, "warning: truncated last line") {
			t.Fatalf("verify after kill -9 reports more than a truncated last line:\n%s", out)
		}
	}
	t.Logf("verify: %s", strings.TrimSpace(out))
	seen := map[uint64]bool{}
	var maxSeq uint64
	for _, e := range audEvents(t, filepath.Join(s.data, "audit")) {
		q := uint64(e["seq"].(float64))
		if seen[q] {
			t.Fatalf("seq %d twice", q)
		}
		seen[q] = true
		maxSeq = max(maxSeq, q)
	}
	for q := uint64(1); q <= durable; q++ {
		if !seen[q] {
			t.Fatalf("seq %d ≤ last_durable_seq %d is not in the trail", q, durable)
		}
	}
	t.Logf("trail after the crash: seq 1..%d", maxSeq)

	// kill -9 cannot tear a write(2) of whole lines; a power cut can.
	// Simulate the torn tail such a crash leaves: verify calls it a
	// truncated last line (exit 0), and the restart repairs it.
	active := filepath.Join(s.data, "audit", "audit.log")
	all, _ := audLines(audRead(t, active))
	torn := all[len(all)-1][:len(all[len(all)-1])/2]
	f, err := os.OpenFile(active, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(torn)
	f.Close()
	out, code = audVerify(t, s.data)
	if code != 0 || audProblem(out, fmt.Sprintf("%s:%d: warning: truncated last line", active, len(all)+1), "") == "" {
		t.Fatalf("verify with a torn last line: exit %d, want 0 and a warning at %s:%d\n%s", code, active, len(all)+1, out)
	}

	// Restart on the same data dir: the chain continues.
	s2 := startServerIn(t, audChurnConfig, s.data)
	if n, err := audChurn(s2, 20, 4, nil); err != nil || n != 20 {
		t.Fatalf("after restart: %d connections, %v", n, err)
	}
	audGenerate(t, s2)
	s2.stop()
	out, code = audVerify(t, s.data)
	if code != 0 || !strings.Contains(out, "intact: ") {
		t.Fatalf("verify after restart and clean stop: exit %d\n%s", code, out)
	}
	t.Logf("verify after restart: %s", strings.TrimSpace(out))
	evs := audEvents(t, filepath.Join(s.data, "audit"))
	var hdr map[string]any
	for i, e := range evs {
		if q := uint64(e["seq"].(float64)); q != uint64(i+1) {
			t.Fatalf("line %d of the trail has seq %d", i+1, q)
		}
		if uint64(i+1) == maxSeq+1 {
			hdr = e
		}
	}
	if hdr == nil || hdr["event"] != "audit_header" || hdr["reason"] != "repaired" || hdr["count"] != float64(len(torn)+1) {
		t.Fatalf("first line after the crash: %v", hdr)
	}
	t.Logf("restart header: reason %v, detail %q", hdr["reason"], hdr["detail"])
}

// Client-controlled strings with newlines, U+2028, forged "level"/"msg"
// members and 64 KiB lengths reach the trail only as capped JSON strings:
// every line stays one valid JSON object, no string over 256 bytes + "…",
// and the chain verifies.
func TestAuditLogInjection(t *testing.T) {
	s := startServer(t, "")
	evil := "x\n{\"level\":\"critical\",\"msg\":\"forged\",\"event\":\"ban\"}\u2028\u2029\r\x00\"}"
	huge := strings.Repeat("é", 32<<10) // 64 KiB, two bytes a character
	rc := dialRaw(t, s)
	send := func(v any, frag int) map[string]any {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		rc.sendText(b, frag)
		return rc.readMsg()
	}
	// Member names are echoed in the schema violation's JSON pointer.
	for _, m := range []map[string]any{
		{"op": "ping", "id": 1, evil: 1},
		{"op": "ping", "id": 2, huge: 1},
		{"op": "subscribe", "id": 3, "topic": huge, "userId": "u", "token": strings.Repeat("A", 32)},
		{"op": "subscribe", "id": 4, "topic": "news", "userId": evil, "token": strings.Repeat("A", 32)},
		{"op": "subscribe", "id": 5, "topic": evil, "userId": huge},
		{"op": "unsubscribe", "id": 6, "topic": "a." + evil},
		{"op": "publish", "id": 7, "topic": "news", "data": 1, "level": "critical", "msg": evil},
		{"op": evil, "id": 8},
		{"op": "subscribe", "id": 9, "topic": "news", "userId": "u", "token": huge},
	} {
		if r := send(m, 16<<10); r["op"] != "error" {
			t.Fatalf("%.80v: %v", m, r)
		}
	}
	rc.frame(true, 8, append([]byte{0x03, 0xe8}, "bye\n{\"level\":\"critical\"}\u2028"...), true)
	rc.expectClose()

	// Handshake: an Origin full of quotes and 4 KiB long, bytes that are
	// not UTF-8, and a garbage header line.
	for _, hdr := range []string{
		"Origin: http://" + strings.Repeat(`"level":"critical",`, 200) + "\xff\xfe.example",
		"X-Evil: \xff\xfe" + strings.Repeat("\u2028", 100),
		"Sec-WebSocket-Protocol: " + strings.Repeat(`"msg":"x",`, 300),
		`"level" "critical"`,
	} {
		rep, rc := handshakeOn(t, dialFrom(t, s, "127.0.0.1"), "", strings.Replace(upgradeRequest(s), "\r\n\r\n", "\r\n"+hdr+"\r\n\r\n", 1))
		if rc != nil {
			t.Logf("upgraded with %.40q", hdr)
			rc.c.Close()
		} else {
			t.Logf("HTTP %d with %.40q", rep.status, hdr)
		}
	}
	// Admin API: a path with an encoded newline and 8 KiB, without the key
	// (audited auth_failed with the path), and a token request with a
	// topic pattern full of newlines (refused, audited with the pattern).
	resp, err := http.Get(s.adminURL + "/v1/" + url.PathEscape(evil) + strings.Repeat("%E2%80%A8", 1000))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Logf("admin API without key, evil path: HTTP %d", resp.StatusCode)
	b, _ := json.Marshal(map[string]any{"userId": "u", "topics": []string{evil + huge}})
	if code, out := s.api("POST", "/v1/tokens", string(b)); code != 400 {
		t.Fatalf("token with an evil topic: %d %v", code, out)
	}
	// Over-long ban reasons are refused; a short one with newlines is kept.
	b, _ = json.Marshal(map[string]any{"prefix": "203.0.113.7", "for": "1m", "reason": evil + huge})
	if code, out := s.api("POST", "/v1/bans", string(b)); code != 400 {
		t.Fatalf("ban with a 64 KiB reason: %d %v", code, out)
	}
	b, _ = json.Marshal(map[string]any{"prefix": "203.0.113.7", "for": "1m", "reason": evil, "actor": evil})
	if code, out := s.api("POST", "/v1/bans", string(b)); code != 201 {
		t.Logf("ban with an evil reason and actor: %d %v", code, out)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "stage": "admin", "reason": "admin_key_missing"})
	s.stop()

	raw := audRead(t, filepath.Join(s.data, "audit", "audit.log"))
	lines, tail := audLines(raw)
	if len(tail) != 0 {
		t.Fatalf("audit.log ends without a newline: %q", tail)
	}
	var carried int
	for i, l := range lines {
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(l))
		if err := dec.Decode(&m); err != nil || dec.More() {
			t.Fatalf("audit.log:%d is not one JSON object (%v): %q", i+1, err, l)
		}
		if !utf8.Valid(l) {
			t.Fatalf("audit.log:%d is not UTF-8: %q", i+1, l)
		}
		// level is the logrus term of the line's severity, never a value
		// a client smuggled in.
		if want := map[any]string{"info": "info", "notice": "info", "warning": "warning", "critical": "error"}[m["severity"]]; m["level"] != want {
			t.Fatalf("audit.log:%d: level %v for severity %v", i+1, m["level"], m["severity"])
		}
		for _, k := range []string{"msg", "fields.level", "fields.msg", "fields.time"} {
			if _, ok := m[k]; ok {
				t.Fatalf("audit.log:%d has a %q member: %s", i+1, k, l)
			}
		}
		for k, v := range m {
			str, ok := v.(string)
			if !ok {
				continue
			}
			if len(str) > 256 && !(len(str) <= 256+len("…") && strings.HasSuffix(str, "…")) {
				t.Errorf("audit.log:%d: %s is %d bytes, over 256 + \"…\": %.120q…", i+1, k, len(str), str)
			}
			if strings.ContainsAny(str, "\n\u2028{") || strings.Contains(str, "critical") && k != "severity" {
				carried++
				t.Logf("audit.log:%d %s/%s=%.100q", i+1, m["event"], k, str)
			}
		}
	}
	if carried == 0 {
		t.Fatal("no client-controlled string reached the trail: the test sends nothing the gateway records")
	}
	// The admin path (with a raw newline once decoded) is there, escaped
	// and capped; U+2028 never appears raw (JavaScript readers split on it).
	e := audFind(t, lines, map[string]any{"event": "auth_failed", "stage": "admin"})
	if d, _ := e["detail"].(string); !strings.HasPrefix(d, "GET /v1/x\n{\"level\":\"critical\"") || !strings.HasSuffix(d, "…") || len(d) > 256+len("…") {
		t.Fatalf("admin auth_failed detail %q (%d bytes)", d, len(d))
	}
	if bytes.Contains(raw, []byte("\u2028")) || bytes.Contains(raw, []byte("\u2029")) {
		t.Fatal("audit.log contains a raw U+2028/U+2029")
	}
	out, code := audVerify(t, s.data)
	if code != 0 {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
}

// Tokens used every way (subscribed, replayed, wrong user, wrong topic,
// minted by the CLI, sent where they do not belong) appear nowhere in clear:
// not in any file under the data dir (plain and gzip'd audit files,
// checkpoints, state), not in the off-host checkpoint copy, not on stderr;
// their token_fp is in the trail instead.
func TestAuditNoTokenInAnyFile(t *testing.T) {
	cpDir := t.TempDir()
	s := startServer(t, audChurnConfig+fmt.Sprintf("audit: {rotate_bytes: 1048576, checkpoint_dir: %q}\n", cpDir))
	alice, bob, carol := s.token("alice", "news"), s.token("bob", "news"), s.token("carol", "sport")
	cli, stderr, code := portcullis(t, nil, "token", "issue", "--user", "dave", "--topic", "news", "--data", s.data)
	cli = strings.TrimSpace(cli)
	if code != 0 || len(cli) < 22 {
		t.Fatalf("token issue: exit %d %q %s", code, cli, stderr)
	}
	unused := s.token("erin")
	toks := map[string]string{"alice": alice, "bob": bob, "carol": carol, "cli": cli, "unused": unused}

	sub := func(rc *rawConn, topic, user, tok string) map[string]any {
		t.Helper()
		rc.frame(true, 1, []byte(fmt.Sprintf(`{"op":"subscribe","id":1,"topic":%q,"userId":%q,"token":%q}`, topic, user, tok)), true)
		return rc.readMsg()
	}
	rc1 := dialRaw(t, s)
	if m := sub(rc1, "news", "alice", alice); m["op"] != "subscribed" {
		t.Fatalf("alice: %v", m)
	}
	rc2 := dialRaw(t, s)
	if m := sub(rc2, "news", "alice", alice); m["code"] != "auth_failed" {
		t.Fatalf("replay: %v", m)
	}
	if m := sub(rc2, "news", "mallory", bob); m["code"] != "auth_failed" {
		t.Fatalf("wrong user: %v", m)
	}
	if m := sub(rc2, "news", "carol", carol); m["code"] != "auth_failed" {
		t.Fatalf("wrong topic: %v", m)
	}
	rc3 := dialRaw(t, s)
	if m := sub(rc3, "news", "dave", cli); m["op"] != "subscribed" {
		t.Fatalf("CLI token: %v", m)
	}
	// Tokens where they do not belong: in malformed JSON, in a message
	// that fails the schema, as the admin key, in the upgrade URL.
	for _, msg := range []string{
		`{"op":"subscribe","topic":"news","userId":"alice","token":"` + alice + `"`,
		`{"op":"subscribe","topic":"news","userId":"alice","token":"` + alice + `","x":1}`,
		`{"op":"subscribe","topic":"news","userId":"alice","token":["` + alice + `"]}`,
		`{"op":"subscribe","topic":"news","userId":"alice","token":"` + alice + `!"}`,
	} {
		rc3.frame(true, 1, []byte(msg), true)
		if m := rc3.readMsg(); m["op"] != "error" {
			t.Fatalf("%s: %v", msg, m)
		}
	}
	req, _ := http.NewRequest("GET", s.adminURL+"/v1/stats", nil)
	req.Header.Set("Authorization", "Bearer "+bob)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != 401 {
		t.Fatalf("token as admin key: HTTP %d", resp.StatusCode)
	}
	for _, path := range []string{"/ws?token=" + carol, "/elsewhere?token=" + carol, "/" + carol} {
		c := dialFrom(t, s, "127.0.0.1")
		rep, rc := handshakeOn(t, c, "", strings.Replace(upgradeRequest(s), "GET /ws ", "GET "+path+" ", 1))
		if rc != nil {
			rc.frame(true, 8, []byte{0x03, 0xe8}, true)
			rc.expectClose()
		} else {
			t.Logf("GET %s…: HTTP %d", path[:6], rep.status)
		}
	}
	s.waitAudit(map[string]any{"event": "subscribe", "userId": "dave"})
	// Rotate, so that the tokens' lines end up in a rotated (gzip'd) file.
	for i := 0; num(s.statsOf("audit"), "rotations") < 1; i++ {
		if i >= 20 {
			t.Fatalf("no rotation: %v", s.statsOf("audit"))
		}
		if _, err := audChurn(s, 400, 16, nil); err != nil {
			t.Fatal(err)
		}
	}
	rc1.c.Close()
	rc2.c.Close()
	rc3.c.Close()
	time.Sleep(300 * time.Millisecond) // let the janitor compress the rotated file
	s.stop()

	var scanned []string
	scan := func(name string, b []byte) {
		scanned = append(scanned, fmt.Sprintf("%s (%d bytes)", name, len(b)))
		for who, tok := range toks {
			if bytes.Contains(b, []byte(tok)) {
				t.Errorf("%s contains %s's token in clear", name, who)
			}
		}
	}
	for _, root := range []string{s.data, cpDir} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			scan(p, b)
			if strings.HasSuffix(p, ".gz") {
				scan(p+" (inflated)", audRead(t, p))
			}
			return nil
		})
	}
	scan("server stderr", []byte(s.stderr.String()))
	t.Logf("scanned: %s", strings.Join(scanned, ", "))
	gz := false
	for _, f := range audTrail(t, filepath.Join(s.data, "audit")) {
		gz = gz || strings.HasSuffix(f.name, ".gz")
	}
	if !gz {
		t.Log("no rotated file was gzip'd by the time of the stop")
	}
	evs := audEvents(t, filepath.Join(s.data, "audit"))
	for _, want := range []map[string]any{
		{"event": "auth_ok", "userId": "alice", "token_fp": fp(alice)},
		{"event": "auth_failed", "reason": "token_replayed", "token_fp": fp(alice)},
		{"event": "auth_failed", "reason": "token_user_mismatch", "token_fp": fp(bob)},
		{"event": "auth_failed", "reason": "token_topic_mismatch", "token_fp": fp(carol)},
		{"event": "auth_ok", "userId": "dave", "token_fp": fp(cli)},
		{"event": "admin", "userId": "erin", "token_fp": fp(unused)},
	} {
		found := false
		for _, e := range evs {
			found = found || matches(e, want)
		}
		if !found {
			t.Errorf("no audit line with %v", want)
		}
	}
	if out, code := audVerify(t, s.data, "--checkpoints", cpDir); code != 0 {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
}

// audit query --json --event auth_failed prints exactly the auth_failed
// lines as written; --count-by reason counts them; audit tail -n 3 --json
// prints the last three lines; audit tail --follow prints an event written
// after it started and exits 0 on SIGINT.
func TestAuditQueryAndTail(t *testing.T) {
	s := startServer(t, "")
	bob := s.token("bob", "news")
	rc := dialRaw(t, s)
	send := func(msg string) {
		t.Helper()
		rc.frame(true, 1, []byte(msg), true)
		if m := rc.readMsg(); m["op"] != "error" {
			t.Fatalf("%s: %v", msg, m)
		}
	}
	// Fewer than five of a kind, so none is folded into a summary.
	for i := 0; i < 3; i++ {
		send(fmt.Sprintf(`{"op":"subscribe","id":%d,"topic":"news","userId":"u%d","token":"%s"}`, i, i, wrongToken(i)))
	}
	send(fmt.Sprintf(`{"op":"subscribe","id":9,"topic":"news","userId":"mallory","token":%q}`, bob))
	send(`{"op":"ping","x":1}`)
	resp, err := http.Get(s.adminURL + "/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "admin_key_missing"})
	s.waitAudit(map[string]any{"event": "message_rejected", "reason": "schema_violation"})

	// tail --follow while the gateway runs.
	cmd := exec.Command(gwBinary(t), "audit", "tail", "--follow", "--json", "-n", "1", "--interval", "50ms", "--data", s.data)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var ferr syncBuffer
	cmd.Stderr = &ferr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	got := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	next := func(what string, until func(string) bool) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-got:
				if !ok {
					t.Fatalf("tail --follow ended before %s: %s", what, ferr.String())
				}
				if !json.Valid([]byte(l)) {
					t.Fatalf("tail --follow --json printed %q", l)
				}
				if until(l) {
					return
				}
			case <-timeout:
				t.Fatalf("tail --follow printed no %s within 10 s: %s", what, ferr.String())
			}
		}
	}
	next("first line (-n 1)", func(string) bool { return true })
	marker := "tail-follow-marker"
	if code, out := s.api("POST", "/v1/bans", `{"prefix":"198.51.100.0/24","for":"1m","reason":"`+marker+`"}`); code != 201 {
		t.Fatalf("POST /v1/bans: %d %v", code, out)
	}
	next("ban event written after it started", func(l string) bool {
		return strings.Contains(l, `"event":"ban"`) && strings.Contains(l, marker)
	})
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail --follow after SIGINT: %v (want exit 0) %s", err, ferr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("tail --follow did not exit within 5 s of SIGINT")
	}
	s.stop()

	// The trail is now still: compare the commands with the file.
	lines, _ := audLines(audRead(t, filepath.Join(s.data, "audit", "audit.log")))
	var want []string
	reasons := map[string]int{}
	for _, l := range lines {
		var m map[string]any
		json.Unmarshal(l, &m)
		if m["event"] == "auth_failed" {
			want = append(want, string(l))
			reasons[m["reason"].(string)]++
		}
	}
	if len(want) != 5 || reasons["token_unknown"] != 3 || reasons["token_user_mismatch"] != 1 || reasons["admin_key_missing"] != 1 {
		t.Fatalf("auth_failed lines in the trail: %d %v", len(want), reasons)
	}
	out, errOut, code := portcullis(t, nil, "audit", "query", "--data", s.data, "--json", "--event", "auth_failed")
	if code != 0 || strings.TrimSuffix(out, "\n") != strings.Join(want, "\n") {
		t.Fatalf("query --json --event auth_failed: exit %d %s\ngot:\n%s\nwant:\n%s", code, errOut, out, strings.Join(want, "\n"))
	}
	out, errOut, code = portcullis(t, nil, "audit", "query", "--data", s.data, "--json", "--event", "auth_failed", "--count-by", "reason")
	if code != 0 {
		t.Fatalf("query --count-by reason --json: exit %d %s", code, errOut)
	}
	counts := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m struct {
			Reason string
			Count  int
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("count-by line %q: %v", l, err)
		}
		counts[m.Reason] = m.Count
	}
	if fmt.Sprint(counts) != fmt.Sprint(reasons) {
		t.Fatalf("--count-by reason --json: %v, want %v\n%s", counts, reasons, out)
	}
	out, errOut, code = portcullis(t, nil, "audit", "query", "--data", s.data, "--event", "auth_failed", "--count-by", "reason")
	if code != 0 || !regexp.MustCompile(`(?m)^\s*token_unknown\s+3\s*$|(?m)^\s*3\s+token_unknown\s*$`).MatchString(out) {
		t.Fatalf("query --count-by reason: exit %d %s\n%s", code, errOut, out)
	}
	t.Logf("count-by table:\n%s", out)
	out, errOut, code = portcullis(t, nil, "audit", "query", "--data", s.data, "--event", "auth_failed")
	if code != 0 || strings.Count(out, "token_unknown") != 3 {
		t.Fatalf("query table: exit %d %s\n%s", code, errOut, out)
	}
	out, errOut, code = portcullis(t, nil, "audit", "tail", "-n", "3", "--json", "--data", s.data)
	if code != 0 || strings.TrimSuffix(out, "\n") != string(bytes.Join(lines[len(lines)-3:], []byte("\n"))) {
		t.Fatalf("tail -n 3 --json: exit %d %s\n%s", code, errOut, out)
	}
}

// audFind returns the first of lines that parses and matches want.
func audFind(t *testing.T, lines [][]byte, want map[string]any) map[string]any {
	t.Helper()
	for _, l := range lines {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil && matches(m, want) {
			return m
		}
	}
	t.Fatalf("no audit line with %v", want)
	return nil
}

// audProblem returns the line of verify's output that starts with prefix
// ("file:line: ") and contains what, or "".
func audProblem(out, prefix, what string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, what) {
			return l
		}
	}
	return ""
}
