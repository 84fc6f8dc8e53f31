package index

import (
	"hash/fnv"
	"path/filepath"
	"testing"
	"time"
)

func TestHashIsFNV64a(t *testing.T) {
	for _, s := range []string{"", "a", "192.0.2.1", "2001:db8::1", "user\u00e9"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if Hash(s) != h.Sum64() {
			t.Fatalf("Hash(%q) differs from hash/fnv", s)
		}
	}
}

func TestHashIP(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1": "192.0.2.1", "192.0.2.1:443": "192.0.2.1", "::ffff:192.0.2.1": "192.0.2.1",
		"[::ffff:192.0.2.1]:80": "192.0.2.1", "2001:DB8::1": "2001:db8::1", "fe80::1%eth0": "fe80::1",
		"[2001:db8::1]:443": "2001:db8::1", "not an ip": "not an ip",
	} {
		if HashIP(in) != Hash(want) {
			t.Errorf("HashIP(%q) is not Hash(%q)", in, want)
		}
	}
}

func TestBloomAndRoundTrip(t *testing.T) {
	b := NewBuilder()
	var h Hashes
	h.Set("192.0.2.1:443", "", "192.0.2.0/24", "alice", "t.1")
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.Add(3, 5, "conn_open", "", 0, 1, at, at, &h)
	b.Add(3, 6, "auth_failed", "x", 2, 4, at.Add(-time.Hour), at.Add(time.Second), &h)
	s := b.Finish("audit-20260101T000000Z-5.log", "ab")
	p := filepath.Join(t.TempDir(), Name(s.File+".gz"))
	if err := Write(p, s); err != nil {
		t.Fatal(err)
	}
	r, err := read(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if !r.IP.Has("192.0.2.1") || r.IP.Has("192.0.2.2") || !r.User.Has("alice") || r.User.Has("bob") ||
		!r.Topic.Has("t.1") || !r.CountedPrefix.Has("192.0.2.0/24") {
		t.Fatal("bloom lookups wrong")
	}
	if r.Events["auth_failed"] != 4 || r.Reasons[""] != 1 || r.Severities["warning"] != 4 || r.Lines != 2 ||
		!r.First.Equal(at.Add(-time.Hour)) || !r.Last.Equal(at.Add(time.Second)) || r.FirstSeq != 5 || r.LastSeq != 6 {
		t.Fatalf("summary wrong: %+v", r)
	}
}

func BenchmarkRead(b *testing.B) {
	s := NewBuilder().Finish("audit-20260101T000000Z-5.log", "ab")
	for i := range s.IP {
		s.IP[i], s.User[i] = byte(i*7), byte(i*13)
	}
	p := filepath.Join(b.TempDir(), "x.idx")
	if err := Write(p, s); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		if _, err := read(p, true); err != nil {
			b.Fatal(err)
		}
	}
}
