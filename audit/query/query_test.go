package query

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// ev builds one trail line the way the writer does (logrus JSON: keys
// sorted, zero fields omitted).
func ev(seq int, at time.Time, event, sev string, kv ...any) string {
	m := map[string]any{"time": at.UTC().Format(time.RFC3339Nano), "level": "info", "event": event,
		"seq": seq, "severity": sev, "node": "n1", "mac": fmt.Sprintf("%064x", seq), "prev": fmt.Sprintf("%064x", seq-1)}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func writeFile(t testing.TB, path string, lines []string, gz bool, tail string) {
	t.Helper()
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	buf.WriteString(tail)
	data := buf.Bytes()
	if gz {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(data)
		zw.Close()
		data = z.Bytes()
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// sampleTrail is a small trail over three files: a gzip'd rotated file, a
// plain rotated file and the active file.
func sampleTrail() [][]string {
	m := func(mins int) time.Time { return t0.Add(time.Duration(mins) * time.Minute) }
	return [][]string{{
		ev(1, m(0), "conn_open", "info", "ip", "198.51.100.7", "conn", 1, "proto", "portcullis.v1"),
		ev(2, m(1), "auth_failed", "warning", "ip", "198.51.100.7", "reason", "token_replayed", "token_fp", "0a1b2c3d"),
		ev(3, m(2), "subscribe", "info", "ip", "203.0.113.9", "userId", "alice", "topic", "prices.eur"),
		ev(4, m(3), "subscribe_denied", "notice", "ip", "203.0.113.9", "userId", "alice", "topic", "admin.keys", "reason", "topic_forbidden"),
	}, {
		ev(5, m(10), "conn_rejected", "warning", "ip", "::ffff:198.51.100.7", "reason", "rate_limited",
			"count", 40, "first", m(4).Format(time.RFC3339Nano), "last", m(9).Format(time.RFC3339Nano)),
		ev(6, m(11), "conn_open", "info", "ip", "2001:db8::42", "peer_ip", "10.0.0.2", "conn", 2),
		ev(7, m(12), "message_rejected", "warning", "ip", "2001:db8::42", "userId", "bob", "topic", "prices.usd", "reason", "schema_invalid",
			"detail", "field \"amount\": want number"),
	}, {
		ev(8, m(20), "ban", "critical", "ip", "198.51.100.7", "reason", "strikes", "actor", "policy"),
		ev(9, m(21), "conn_close", "info", "ip", "203.0.113.9", "userId", "alice", "duration_ms", 61000, "code", 1000),
		ev(10, m(22), "publish", "info", "userId", "bob", "topic", "prices.eur.spot"),
	}}
}

// sampleDir writes sampleTrail into a temp dir, with tail appended to the
// active file.
func sampleDir(t testing.TB, tail string) string {
	dir := t.TempDir()
	tr := sampleTrail()
	writeFile(t, filepath.Join(dir, "audit-20250301T120330Z-1.log.gz"), tr[0], true, "")
	writeFile(t, filepath.Join(dir, "audit-20250301T121230Z-5.log"), tr[1], false, "")
	writeFile(t, filepath.Join(dir, "audit.log"), tr[2], false, tail)
	return dir
}

func seqs(t *testing.T, dir string, f Filter) ([]uint64, []string) {
	t.Helper()
	files, err := Discover([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	var warns []string
	_, err = Records(context.Background(), files, Options{Filter: f, Warn: func(s string) { warns = append(warns, s) }},
		FieldSeq, func(r *Record) error {
			got = append(got, r.Seq)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return got, warns
}

func mustIP(s string) netip.Prefix {
	p, err := ParseIP(s)
	if err != nil {
		panic(err)
	}
	return p
}

func TestFilters(t *testing.T) {
	dir := sampleDir(t, "")
	now := t0.Add(30 * time.Minute)
	rel := func(s string) time.Time {
		tm, err := ParseTime(s, now)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	cases := []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"everything in trail order", Filter{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"since relative 10m", Filter{Since: rel("10m")}, []uint64{8, 9, 10}},
		{"since relative 19m leaves out a summary that ended before", Filter{Since: rel("19m")}, []uint64{6, 7, 8, 9, 10}},
		{"since relative 25m keeps a summary whose span reaches it", Filter{Since: rel("25m")}, []uint64{5, 6, 7, 8, 9, 10}},
		{"until absolute is exclusive", Filter{Until: t0.Add(2 * time.Minute)}, []uint64{1, 2}},
		{"until before a summary's time but after its first", Filter{Until: t0.Add(5 * time.Minute)}, []uint64{1, 2, 3, 4, 5}},
		{"since and until", Filter{Since: t0.Add(11 * time.Minute), Until: t0.Add(21 * time.Minute)}, []uint64{6, 7, 8}},
		{"ip one address also matches the v4-mapped form", Filter{IP: mustIP("198.51.100.7")}, []uint64{1, 2, 5, 8}},
		{"ip given v4-mapped", Filter{IP: mustIP("::ffff:198.51.100.7")}, []uint64{1, 2, 5, 8}},
		{"ip CIDR", Filter{IP: mustIP("198.51.100.0/24")}, []uint64{1, 2, 5, 8}},
		{"ip odd CIDR", Filter{IP: mustIP("203.0.112.0/23")}, []uint64{3, 4, 9}},
		{"ip v4-mapped CIDR", Filter{IP: mustIP("::ffff:203.0.113.0/120")}, []uint64{3, 4, 9}},
		{"ip v6 address", Filter{IP: mustIP("2001:db8::42")}, []uint64{6, 7}},
		{"ip v6 CIDR", Filter{IP: mustIP("2001:db8::/32")}, []uint64{6, 7}},
		{"ip matches peer_ip", Filter{IP: mustIP("10.0.0.0/8")}, []uint64{6}},
		{"ip no match", Filter{IP: mustIP("192.0.2.1")}, nil},
		{"user", Filter{User: "alice"}, []uint64{3, 4, 9}},
		{"user is exact", Filter{User: "ali"}, nil},
		{"event", Filter{Events: []string{"conn_open"}}, []uint64{1, 6}},
		{"events any of", Filter{Events: []string{"ban", "auth_failed"}}, []uint64{2, 8}},
		{"severity warning and above", Filter{MinSeverity: audit.Warning}, []uint64{2, 5, 7, 8}},
		{"severity notice and above", Filter{MinSeverity: audit.Notice}, []uint64{2, 4, 5, 7, 8}},
		{"severity critical", Filter{MinSeverity: audit.Critical}, []uint64{8}},
		{"topic exact", Filter{Topic: "prices.eur"}, []uint64{3}},
		{"topic glob", Filter{Topic: "prices.*"}, []uint64{3, 7, 10}},
		{"topic glob middle", Filter{Topic: "prices.*.spot"}, []uint64{10}},
		{"topic glob star", Filter{Topic: "*"}, []uint64{3, 4, 7, 10}},
		{"reason", Filter{Reason: "rate_limited"}, []uint64{5}},
		{"all conditions together", Filter{IP: mustIP("2001:db8::/64"), User: "bob", MinSeverity: audit.Warning,
			Events: []string{"message_rejected"}, Topic: "prices.*", Reason: "schema_invalid", Since: rel("1h")}, []uint64{7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, warns := seqs(t, dir, tc.f)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if len(warns) > 0 {
				t.Errorf("warnings: %q", warns)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2025, 3, 10, 8, 30, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"1h", now.Add(-time.Hour), false},
		{"30m", now.Add(-30 * time.Minute), false},
		{"7d", now.Add(-7 * 24 * time.Hour), false},
		{"2w", now.Add(-14 * 24 * time.Hour), false},
		{"1h30m", now.Add(-90 * time.Minute), false},
		{"1.5h", now.Add(-90 * time.Minute), false},
		{"90s", now.Add(-90 * time.Second), false},
		{"now", now, false},
		{"2025-03-01T12:00:00Z", t0, false},
		{"2025-03-01T13:00:00.5+01:00", t0.Add(500 * time.Millisecond), false},
		{"2025-03-01", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), false},
		{"yesterday", time.Time{}, true},
		{"5x", time.Time{}, true},
		{"h", time.Time{}, true},
		{"", time.Time{}, true},
		{"-1h", time.Time{}, true},
	}
	for _, tc := range cases {
		got, err := ParseTime(tc.in, now)
		if (err != nil) != tc.err {
			t.Errorf("ParseTime(%q) error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.in)) {
			t.Errorf("ParseTime(%q) error %q does not quote the input", tc.in, err)
		}
		if !got.Equal(tc.want) {
			t.Errorf("ParseTime(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseIP(t *testing.T) {
	cases := []struct {
		in, want string
		err      bool
	}{
		{"192.0.2.1", "192.0.2.1/32", false},
		{"::ffff:192.0.2.1", "192.0.2.1/32", false},
		{"192.0.2.77/24", "192.0.2.0/24", false},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24", false},
		{"2001:DB8::1", "2001:db8::1/128", false},
		{"2001:db8::/32", "2001:db8::/32", false},
		{"fe80::1%eth0", "fe80::1/128", false},
		{"::ffff:0.0.0.0/90", "", true},
		{"300.1.1.1", "", true},
		{"10.0.0.0/33", "", true},
		{"alice", "", true},
	}
	for _, tc := range cases {
		got, err := ParseIP(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseIP(%q) error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && got.String() != tc.want {
			t.Errorf("ParseIP(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestIPToken(t *testing.T) {
	// The pre-filter token must occur in every written form of every
	// address of the prefix.
	cases := map[string]string{
		"10.1.2.3": "10.1.2.3", "10.1.0.0/16": "10.1.", "10.1.2.0/23": "10.1.", "10.0.0.0/7": "",
		"2001:db8::1": "2001:db8::1", "2001:db8::/32": "",
	}
	for in, want := range cases {
		if got := ipToken(mustIP(in)); got != want {
			t.Errorf("ipToken(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestDiscoverOrder(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"audit.log", "audit-20250301T130000Z-100.log.gz", "audit-20250301T120000Z-9.log",
		"audit-20250301T140000Z-200.log", "audit-20250301T140000Z-200.log.gz", "notes.txt", "audit.log.bak"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	files, err := Discover([]string{dir, filepath.Join(dir, "audit.log")})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f.Path))
	}
	want := []string{"audit-20250301T120000Z-9.log", "audit-20250301T130000Z-100.log.gz", "audit-20250301T140000Z-200.log", "audit.log"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if !files[0].NotAfter.Equal(time.Date(2025, 3, 1, 13, 1, 0, 0, time.UTC)) || !files[2].NotAfter.IsZero() {
		t.Errorf("NotAfter: %v, %v", files[0].NotAfter, files[2].NotAfter)
	}
	if _, err := Discover([]string{filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing path: %v", err)
	}
}

func TestSkipFilesBySince(t *testing.T) {
	dir := t.TempDir()
	m := func(mins int) time.Time { return t0.Add(time.Duration(mins) * time.Minute) }
	writeFile(t, filepath.Join(dir, "audit-20250301T120500Z-1.log.gz"), []string{ev(1, m(1), "conn_open", "info")}, true, "")
	writeFile(t, filepath.Join(dir, "audit-20250301T123000Z-2.log.gz"), []string{ev(2, m(20), "conn_open", "info")}, true, "")
	writeFile(t, filepath.Join(dir, "audit-20250301T130000Z-3.log.gz"), []string{ev(3, m(50), "conn_open", "info")}, true, "")
	writeFile(t, filepath.Join(dir, "audit.log"), []string{ev(4, m(70), "conn_open", "info"), ev(5, m(80), "conn_open", "info")}, false, "")
	files, _ := Discover([]string{dir})
	var got []uint64
	st, err := Records(context.Background(), files, Options{Filter: Filter{Since: m(40)}}, FieldSeq, func(r *Record) error {
		got = append(got, r.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// File 1 ends before 12:30 (+1m slack) and is skipped; file 2 may hold
	// events up to 13:00, so it is read.
	if st.Skipped != 1 || st.Files != 3 || !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Errorf("skipped %d, read %d, got %v", st.Skipped, st.Files, got)
	}
	// The last rotated file ends where audit.log begins (13:10).
	got = nil
	st, _ = Records(context.Background(), files, Options{Filter: Filter{Since: m(72)}}, FieldSeq, func(r *Record) error {
		got = append(got, r.Seq)
		return nil
	})
	if st.Skipped != 3 || st.Files != 1 || !slices.Equal(got, []uint64{5}) {
		t.Errorf("skipped %d, read %d, got %v", st.Skipped, st.Files, got)
	}
}

func TestTruncatedLastLine(t *testing.T) {
	dir := sampleDir(t, `{"time":"2025-03-01T12:23:00Z","event":"conn_op`)
	got, warns := seqs(t, dir, Filter{Events: []string{"conn_open", "ban"}})
	if !slices.Equal(got, []uint64{1, 6, 8}) {
		t.Errorf("got %v", got)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "audit.log:4: skipped a truncated last line") {
		t.Errorf("warnings %q", warns)
	}
}

func TestSplicedAndMalformedLines(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "audit.log"), []string{
		ev(1, t0, "conn_open", "info"),
		`{"time":"2025-03-01T12:00:01Z","event":"conn_cl` + ev(2, t0, "conn_open", "info"),
		`not json at all`,
		ev(3, t0, "conn_open", "info"),
	}, false, "")
	got, warns := seqs(t, dir, Filter{})
	if !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("got %v", got)
	}
	if len(warns) != 2 || !strings.Contains(warns[0], ":2: skipped a truncated fragment (47 bytes)") ||
		!strings.Contains(warns[1], ":3: skipped a malformed line") {
		t.Errorf("warnings %q", warns)
	}
}

func TestGzipTruncatedIsAnError(t *testing.T) {
	dir := sampleDir(t, "")
	p := filepath.Join(dir, "audit-20250301T120330Z-1.log.gz")
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:len(b)-12], 0o600)
	files, _ := Discover([]string{dir})
	var warns []string
	st, err := Lines(context.Background(), files, Options{Warn: func(s string) { warns = append(warns, s) }}, func([]byte) error { return nil })
	if err != nil || st.Errors != 1 || len(warns) != 1 || !strings.Contains(warns[0], "unexpected EOF") {
		t.Errorf("err %v, stats %+v, warns %q", err, st, warns)
	}
}

func TestJSONVerbatim(t *testing.T) {
	dir := t.TempDir()
	odd := []string{
		`{ "time" : "2025-03-01T12:00:00Z", "event":"auth_failed", "seq":1, "userId":"a\u00e9\"b", "detail":"x\ny" }`,
		`{"seq":2,"event":"auth_failed","time":"2025-03-01T12:00:00.123456789Z","nested":{"k":[1,2]},"userId":"z"}`,
		ev(3, t0, "conn_open", "info"),
	}
	writeFile(t, filepath.Join(dir, "audit.log"), odd, false, "")
	files, _ := Discover([]string{dir})
	var out bytes.Buffer
	_, err := Lines(context.Background(), files, Options{Filter: Filter{Events: []string{"auth_failed"}}}, func(l []byte) error {
		out.Write(l)
		out.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := odd[0] + "\n" + odd[1] + "\n"; out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	// The escaped user decodes for exact matching.
	got, _ := seqs(t, dir, Filter{User: "aé\"b"})
	if !slices.Equal(got, []uint64{1}) {
		t.Errorf("escaped user: got %v", got)
	}
}

func TestLimit(t *testing.T) {
	dir := sampleDir(t, "")
	files, _ := Discover([]string{dir})
	var got []uint64
	_, err := Records(context.Background(), files, Options{Limit: 3, Workers: 3}, FieldSeq, func(r *Record) error {
		got = append(got, r.Seq)
		return nil
	})
	if err != nil || !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("got %v, %v", got, err)
	}
}

func TestCountBy(t *testing.T) {
	dir := sampleDir(t, "")
	files, _ := Discover([]string{dir})
	cases := []struct {
		key   Key
		f     Filter
		limit int
		want  []Count
	}{
		{KeyIP, Filter{}, 0, []Count{{"198.51.100.7", 43}, {"203.0.113.9", 3}, {"2001:db8::42", 2}, {"", 1}}},
		{KeyReason, Filter{}, 0, []Count{{"rate_limited", 40}, {"", 5}, {"schema_invalid", 1}, {"strikes", 1}, {"token_replayed", 1}, {"topic_forbidden", 1}}},
		{KeyReason, Filter{}, 2, []Count{{"rate_limited", 40}, {"", 5}}},
		{KeyEvent, Filter{MinSeverity: audit.Warning}, 0, []Count{{"conn_rejected", 40}, {"auth_failed", 1}, {"ban", 1}, {"message_rejected", 1}}},
		{KeyUser, Filter{Topic: "prices.*"}, 0, []Count{{"bob", 2}, {"alice", 1}}},
	}
	for _, tc := range cases {
		t.Run(tc.key.String(), func(t *testing.T) {
			got, _, err := CountBy(context.Background(), files, Options{Filter: tc.f, Limit: tc.limit}, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := ParseKey("topic"); err == nil {
		t.Error("ParseKey(topic) should fail")
	}
}

func TestTableGolden(t *testing.T) {
	dir := sampleDir(t, "")
	tr := sampleTrail()
	writeFile(t, filepath.Join(dir, "audit.log"), append(tr[2],
		ev(11, t0.Add(23*time.Minute), "auth_failed", "warning", "ip", "192.0.2.1", "userId", "evil\x1b[2J\u202euser", "detail", "bad"),
	), false, "")
	files, _ := Discover([]string{dir})
	var out bytes.Buffer
	tab := NewTable(&out, false)
	_, err := Records(context.Background(), files, Options{}, FieldsTable, func(r *Record) error {
		tab.Add(r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tab.Flush()
	want := `TIME                      SEVERITY  EVENT             IP                         USER                   TOPIC            REASON           DETAIL
2025-03-01T12:00:00.000Z  info      conn_open         198.51.100.7               -                      -                -                -
2025-03-01T12:01:00.000Z  warning   auth_failed       198.51.100.7               -                      -                token_replayed   -
2025-03-01T12:02:00.000Z  info      subscribe         203.0.113.9                alice                  prices.eur       -                -
2025-03-01T12:03:00.000Z  notice    subscribe_denied  203.0.113.9                alice                  admin.keys       topic_forbidden  -
2025-03-01T12:10:00.000Z  warning   conn_rejected     ::ffff:198.51.100.7        -                      -                rate_limited     ×40 12:04:00–12:09:00
2025-03-01T12:11:00.000Z  info      conn_open         2001:db8::42 via 10.0.0.2  -                      -                -                -
2025-03-01T12:12:00.000Z  warning   message_rejected  2001:db8::42               bob                    prices.usd       schema_invalid   field "amount": want number
2025-03-01T12:20:00.000Z  critical  ban               198.51.100.7               -                      -                strikes          -
2025-03-01T12:21:00.000Z  info      conn_close        203.0.113.9                alice                  -                -                -
2025-03-01T12:22:00.000Z  info      publish           -                          bob                    prices.eur.spot  -                -
2025-03-01T12:23:00.000Z  warning   auth_failed       192.0.2.1                  evil\x1b[2J\u202euser  -                -                bad
`
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}

	var col bytes.Buffer
	tab = NewTable(&col, true)
	var r Record
	r.Parse([]byte(ev(1, t0, "ban", "critical")), FieldsTable)
	tab.Add(&r)
	tab.Flush()
	if !strings.Contains(col.String(), "\x1b[1;31mcritical\x1b[0m") {
		t.Errorf("no colour: %q", col.String())
	}

	var counts bytes.Buffer
	WriteCounts(&counts, KeyReason, []Count{{"rate_limited", 1234}, {"", 5}})
	if want := "COUNT  REASON\n 1234  rate_limited\n    5  -\n"; counts.String() != want {
		t.Errorf("counts:\n%q\nwant\n%q", counts.String(), want)
	}
}

func TestParseRecord(t *testing.T) {
	line := []byte(ev(42, t0.Add(123456789), "conn_rejected", "warning", "ip", "192.0.2.1", "peer_ip", "10.0.0.1",
		"userId", "u1", "topic", "t", "reason", "r", "detail", "d", "count", 7,
		"first", t0.Format(time.RFC3339Nano), "last", t0.Add(time.Second).Format(time.RFC3339Nano)))
	var r Record
	if err := r.Parse(line, FieldsTable); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 42 || !r.Time.Equal(t0.Add(123456789)) || string(r.Event) != "conn_rejected" || string(r.Severity) != "warning" ||
		string(r.IP) != "192.0.2.1" || string(r.PeerIP) != "10.0.0.1" || string(r.User) != "u1" || string(r.Topic) != "t" ||
		string(r.Reason) != "r" || string(r.Detail) != "d" || r.Count != 7 || !r.First.Equal(t0) || !r.Last.Equal(t0.Add(time.Second)) {
		t.Errorf("parsed %+v", r)
	}
	for _, bad := range []string{``, `{`, `{"a":1`, `{"a":1,}`, `{"a" 1}`, `{"a":"x}`, `[1]`, `{"a":1} x`, `{"a":bogus}`} {
		if err := r.Parse([]byte(bad), FieldsTable); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if err := r.Parse([]byte(`{}`), FieldsTable); err != nil {
		t.Errorf("empty object: %v", err)
	}
	allocs := testing.AllocsPerRun(100, func() { r.Parse(line, FieldsTable) })
	if allocs != 0 {
		t.Errorf("Parse allocates %v times per line, want 0", allocs)
	}
}

func TestLastLines(t *testing.T) {
	dir := sampleDir(t, `{"seq":11,"ev`)
	files, _ := Discover([]string{dir})
	var warns []string
	lines, err := LastLines(files, 5, func(s string) { warns = append(warns, s) })
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, l := range lines {
		var r Record
		r.Parse(l, FieldSeq)
		got = append(got, r.Seq)
	}
	if !slices.Equal(got, []uint64{6, 7, 8, 9, 10}) || len(warns) != 1 {
		t.Errorf("got %v, warnings %q", got, warns)
	}
	// Reaching into the gzip'd file.
	lines, _ = LastLines(files, 8, nil)
	if len(lines) != 8 || !bytes.Contains(lines[0], []byte(`"seq":3`)) {
		t.Errorf("got %d lines, first %s", len(lines), lines[0])
	}
	// A long active file read backwards across chunks.
	var many []string
	for i := 1; i <= 3000; i++ {
		many = append(many, ev(i, t0, "conn_open", "info", "detail", strings.Repeat("x", i%97)))
	}
	writeFile(t, filepath.Join(dir, "audit.log"), many, false, "")
	lines, _ = LastLines([]File{{Path: filepath.Join(dir, "audit.log")}}, 2000, nil)
	if len(lines) != 2000 || !bytes.Contains(lines[0], []byte(`"seq":1001,`)) || !bytes.Contains(lines[1999], []byte(`"seq":3000,`)) {
		t.Errorf("got %d lines", len(lines))
	}
}
