package query

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// banTrail holds the lines bans leave: a range's ban and unban name no
// address, only their counted_prefix; a single address's ban names both;
// its strikes are in strikes, so each ban line counts once.
func banTrail(t *testing.T) []File {
	m := func(mins int) time.Time { return t0.Add(time.Duration(mins) * time.Minute) }
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "audit.log"), []string{
		ev(1, m(0), "ban", "critical", "counted_prefix", "192.0.2.0/24", "reason", "manual", "actor", "cli:alice via api@127.0.0.1"),
		ev(2, m(1), "conn_rejected", "warning", "ip", "192.0.2.9", "counted_prefix", "192.0.2.0/24", "reason", "banned"),
		ev(3, m(2), "conn_rejected", "warning", "ip", "192.0.3.5", "counted_prefix", "192.0.0.0/16", "reason", "banned"),
		ev(4, m(3), "ban", "critical", "ip", "203.0.113.7", "counted_prefix", "203.0.113.7/32", "reason", "token_unknown", "strikes", 5),
		ev(5, m(4), "unban", "notice", "counted_prefix", "2001:db8::/64", "reason", "manual", "actor", "cli:bob"),
	}, false, "")
	files, err := Discover([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestIPFindsBans: `audit query --ip` finds the ban and unban lines of a
// range inside the address or range asked for, and a single address's ban
// by its ip; a refusal of another address under a wider counted prefix is
// not about the one asked for.
func TestIPFindsBans(t *testing.T) {
	files := banTrail(t)
	for _, tc := range []struct {
		ip   string
		want []uint64
	}{
		{"192.0.2.0/24", []uint64{1, 2}},
		{"192.0.0.0/8", []uint64{1, 2, 3}},
		{"192.0.2.9", []uint64{2}},
		{"203.0.113.7", []uint64{4}},
		{"203.0.113.0/24", []uint64{4}},
		{"2001:db8::/32", []uint64{5}},
		{"2001:db8::/64", []uint64{5}},
		{"2001:db8::/96", nil},
		{"2001:db8::1", nil},
	} {
		var got []uint64
		_, err := Records(context.Background(), files, Options{Filter: Filter{IP: mustIP(tc.ip)}}, FieldSeq, func(r *Record) error {
			got = append(got, r.Seq)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("--ip %s: got %v, want %v", tc.ip, got, tc.want)
		}
	}
}

// TestCountByBans: a ban line is one ban, its strikes aside.
func TestCountByBans(t *testing.T) {
	files := banTrail(t)
	got, _, err := CountBy(context.Background(), files, Options{Filter: Filter{Events: []string{"ban"}}}, KeyReason)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Count{{"manual", 1}, {"token_unknown", 1}}; !slices.Equal(got, want) {
		t.Fatalf("bans by reason %v, want %v", got, want)
	}
}
