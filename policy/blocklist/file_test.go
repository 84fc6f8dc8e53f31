package blocklist

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t testing.TB, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// setMtime gives path a distinct modification time, so a rewrite is seen
// whatever the file system's timestamp granularity.
func setMtime(t testing.TB, path string, sec int64) {
	t.Helper()
	mt := time.Unix(1_700_000_000+sec, 0)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
}

func TestBlockFilesFormats(t *testing.T) {
	dir := t.TempDir()
	firehol := writeFile(t, dir, "firehol.netset", `#
# firehol_level1
#
0.0.0.0/8
10.0.0.0/8
192.0.2.1
`)
	spamhaus := writeFile(t, dir, "drop.txt", "; Spamhaus DROP List 2025/01/01\r\n"+
		"; Last-Modified: Wed, 01 Jan 2025 00:00:00 GMT\r\n"+
		"1.10.16.0/20 ; SBL256894\r\n"+
		"\r\n"+
		"   2001:db8::/32   # trailing comment\r\n"+
		"\t198.51.100.0/24;SBL1\r\n"+
		"203.0.113.5") // no final newline
	l, err := blockList(nil, []string{firehol, spamhaus})
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 7 {
		t.Errorf("Len = %d, want 7", l.Len())
	}
	for _, s := range []string{"0.1.2.3", "10.9.9.9", "192.0.2.1", "1.10.31.255", "2001:db8:1::1", "198.51.100.9", "203.0.113.5"} {
		if !l.Contains(netip.MustParseAddr(s)) {
			t.Errorf("Contains(%s) = false", s)
		}
	}
	for _, s := range []string{"192.0.2.2", "1.10.32.0", "2001:db9::1", "203.0.113.6"} {
		if l.Contains(netip.MustParseAddr(s)) {
			t.Errorf("Contains(%s) = true", s)
		}
	}
}

func TestBlockFilesErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good", "10.0.0.0/8\n")
	bad := writeFile(t, dir, "bad", "# header\n10.0.0.0/8\n10.0.0.0/33 ; oops\n\n<html>\n")
	long := writeFile(t, dir, "long", "10.0.0.0/8\n"+strings.Repeat("1", MaxLineBytes+10)+"\n")
	var many strings.Builder
	for i := range 25 {
		fmt.Fprintf(&many, "junk%d\n", i)
	}
	junk := writeFile(t, dir, "junk", many.String())

	tests := []struct {
		name  string
		paths []string
		want  []string
		not   []string
	}{
		{"bad lines", []string{good, bad}, []string{
			bad + `:3: "10.0.0.0/33" is not a CIDR: prefix length out of range`,
			bad + `:5: "<html>" is not an address or CIDR`,
		}, []string{good + ":"}},
		{"missing file", []string{good, filepath.Join(dir, "nope")}, []string{"nope", "no such file"}, nil},
		{"long line", []string{long}, []string{long + ":2: line longer than"}, nil},
		{"many bad lines", []string{junk}, []string{junk + `:10: "junk9"`, "and 15 more bad lines"}, []string{`"junk10"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := blockList(nil, tc.paths)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nhas %q", err, w)
				}
			}
		})
	}
	if _, err := blockList(nil, []string{filepath.Join(dir, "nope")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file error %v does not wrap os.ErrNotExist", err)
	}
}

func TestBlockFiles100kLines(t *testing.T) {
	var sb strings.Builder
	sb.WriteString("; Spamhaus-style header\n")
	for i := range 100_000 {
		fmt.Fprintf(&sb, "%d.%d.%d.0/24 ; SBL%d\n", 1+i>>15, i>>7&255, i&127*2, i) // not adjacent
	}
	path := writeFile(t, t.TempDir(), "big.txt", sb.String())
	start := time.Now()
	l, err := blockList(nil, []string{path})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("100,000 lines loaded in %v: %d prefixes, %d ranges", time.Since(start), l.Len(), l.Ranges())
	if l.Len() != 100_000 || !l.Contains(netip.MustParseAddr("1.0.4.77")) || l.Contains(netip.MustParseAddr("9.0.0.1")) {
		t.Errorf("Len %d", l.Len())
	}
}

func TestSet(t *testing.T) {
	dir := t.TempDir()
	f1 := writeFile(t, dir, "one", "192.0.2.0/24\n")
	f2 := writeFile(t, dir, "two", "2001:db8::/32 ; v6\n")
	s, err := NewSet([]string{"198.51.100.7"}, []string{"10.0.0.0/8", "2001:db8:1::/48"}, []string{f1, f2})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		addr             string
		blocked, allowed bool
	}{
		{"198.51.100.7", true, false},
		{"::ffff:198.51.100.7", true, false},
		{"192.0.2.9", true, false},
		{"2001:db8::5", true, false},
		{"2001:db8:1::5", true, true}, // on both: the caller decides
		{"10.1.2.3", false, true},
		{"203.0.113.1", false, false},
	} {
		if got := s.Blocked(a(tc.addr)); got != tc.blocked {
			t.Errorf("Blocked(%s) = %v", tc.addr, got)
		}
		if got := s.Allowed(a(tc.addr)); got != tc.allowed {
			t.Errorf("Allowed(%s) = %v", tc.addr, got)
		}
	}
	if b, al := s.Len(); b != 3 || al != 2 {
		t.Errorf("Len = %d, %d; want 3, 2", b, al)
	}
	files := s.Files()
	if len(files) != 2 || files[0].Path != f1 || files[0].Entries != 1 || files[1].Size != int64(len("2001:db8::/32 ; v6\n")) {
		t.Errorf("Files = %+v", files)
	}
}

func TestNewSetErrors(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad", "10.0.0.0/8\nnope\n")
	_, err := NewSet([]string{"10.0.0.0/8", "x"}, []string{"y"}, []string{bad})
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{`block entry 2: "x"`, `allow entry 1: "y"`, bad + `:2: "nope"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "list", "192.0.2.0/24\n")
	s, err := NewSet([]string{"198.51.100.7"}, nil, []string{f})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	writeFile(t, dir, "list", "203.0.113.0/24\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.Blocked(a("192.0.2.1")) || !s.Blocked(a("203.0.113.1")) || !s.Blocked(a("198.51.100.7")) {
		t.Fatal("reload did not replace the file's entries (and keep the config's)")
	}
	writeFile(t, dir, "list", "203.0.113.0/24\n192.0.2.0/33\n")
	err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), f+`:2: "192.0.2.0/33"`) {
		t.Fatalf("Reload of a bad file: %v", err)
	}
	if !s.Blocked(a("203.0.113.1")) || s.Files()[0].Entries != 1 {
		t.Fatal("a failed reload did not keep the old list")
	}
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Reload of a missing file: %v", err)
	}
	if !s.Blocked(a("203.0.113.1")) {
		t.Fatal("a missing file emptied the list")
	}
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "list", "192.0.2.0/24\n")
	setMtime(t, f, 0)
	s, err := NewSet(nil, nil, []string{f})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tick := make(chan time.Time)
	results := make(chan error, 1)
	polled := make(chan struct{})
	done := make(chan struct{})
	go func() {
		s.watch(ctx, tick, func(err error) { results <- err }, func() { polled <- struct{}{} })
		close(done)
	}()
	// poll ticks once and returns the reload result, or errNone if the
	// watcher saw no change.
	errNone := errors.New("no reload")
	poll := func() error {
		tick <- time.Time{}
		<-polled
		select {
		case err := <-results:
			return err
		default:
			return errNone
		}
	}
	a := netip.MustParseAddr

	if err := poll(); err != errNone {
		t.Fatalf("unchanged file: %v", err)
	}
	writeFile(t, dir, "list", "203.0.113.0/24\n")
	setMtime(t, f, 1)
	if err := poll(); err != nil {
		t.Fatalf("changed file: %v", err)
	}
	if !s.Blocked(a("203.0.113.1")) || s.Blocked(a("192.0.2.1")) {
		t.Fatal("change not picked up")
	}
	writeFile(t, dir, "list", "garbage\n")
	setMtime(t, f, 2)
	if err := poll(); err == nil || !strings.Contains(err.Error(), f+`:1: "garbage"`) {
		t.Fatalf("bad file: %v", err)
	}
	if err := poll(); err != errNone {
		t.Fatalf("a failed reload is retried without a change: %v", err)
	}
	if !s.Blocked(a("203.0.113.1")) {
		t.Fatal("a bad file replaced the list")
	}
	writeFile(t, dir, "list", "192.0.2.0/24\n") // same size as before: the mtime tells
	setMtime(t, f, 3)
	if err := poll(); err != nil {
		t.Fatalf("fixed file: %v", err)
	}
	if !s.Blocked(a("192.0.2.1")) {
		t.Fatal("fixed file not picked up")
	}
	cancel()
	<-done

	// Watch with no files returns at once.
	empty, err := NewSet([]string{"10.0.0.0/8"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	empty.Watch(context.Background(), time.Hour, nil)
}
