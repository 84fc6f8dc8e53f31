package bans

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	m := mustOpen(t, path, Config{}, t0)

	auto := strikeUntilBan(t, m, addrA, t0) // 10m, until t0+10m
	cidr, err := m.Add(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "abuse", "alice", t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Add(netip.PrefixFrom(addrB, 32), 5*time.Minute, "", "alice", t0); err != nil {
		t.Fatal(err)
	}
	v6, err := m.Add(netip.MustParsePrefix("2001:db8::/48"), 2*time.Hour, "", "bob", t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// Seven minutes later: B (5m) has ended, the others run on.
	later := t0.Add(7 * time.Minute)
	m2 := mustOpen(t, path, Config{}, later)
	st := m2.Stats()
	if st.Restored != 3 || st.RestoreDropped != 1 || st.History != 1 {
		t.Fatalf("restore stats %+v: want 3 restored, 1 dropped, 1 history", st)
	}
	b, ok := m2.Banned(addrA, later)
	if !ok || !b.Until.Equal(auto.Until) || b.Remaining(later) != 3*time.Minute || b.Actor != ActorAuto ||
		b.Reason != reason.ConnRate || b.Strikes != 5 {
		t.Fatalf("restored auto ban %+v (ok %v): want %+v with 3m left", b, ok, auto)
	}
	if _, ok := m2.Banned(addrB, later); ok {
		t.Fatal("an ended ban was restored")
	}
	if b, ok := m2.Banned(netip.MustParseAddr("198.51.100.200"), later); !ok || b.Actor != "alice" || b.Reason != reason.Manual || b.Note != "abuse" ||
		!b.Until.Equal(cidr.Until) || !b.Created.Equal(t0) {
		t.Fatalf("restored CIDR ban %+v (ok %v)", b, ok)
	}
	if b, ok := m2.Banned(netip.MustParseAddr("2001:db8:0:5::1"), later); !ok || !b.Until.Equal(v6.Until) {
		t.Fatalf("restored IPv6 CIDR ban %+v (ok %v)", b, ok)
	}

	// Repeat history survived: A's next ban lasts 20m.
	now := auto.Until.Add(time.Minute)
	b2 := strikeUntilBan(t, m2, addrA, now)
	if d := b2.Until.Sub(now); d != 20*time.Minute || b2.Repeat != 1 {
		t.Fatalf("ban after restore: %v repeat %d, want 20m repeat 1", d, b2.Repeat)
	}
	// A removal is saved too.
	if _, err := m2.Remove(netip.MustParsePrefix("198.51.100.0/24"), "carol", now); err != nil {
		t.Fatal(err)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	m3 := mustOpen(t, path, Config{}, now)
	if _, ok := m3.Banned(netip.MustParseAddr("198.51.100.200"), now); ok {
		t.Fatal("a removed ban came back after restart")
	}
	if _, ok := m3.Banned(addrA, now); !ok {
		t.Fatal("the second auto ban (saved by the background writer) was not restored")
	}
	if got := len(m3.List(now)); got != 2 {
		t.Fatalf("List after restart has %d bans, want 2 (A, the IPv6 /48)", got)
	}
}

func TestPersistenceDropsAllowListed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	m := mustOpen(t, path, Config{}, t0)
	strikeUntilBan(t, m, addrA, t0)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Allowed: func(a netip.Addr) bool { return a == addrA }}
	m2 := mustOpen(t, path, cfg, t0)
	if st := m2.Stats(); st.Restored != 0 || st.RestoreDropped != 1 {
		t.Fatalf("stats %+v: want the allow-listed ban dropped", st)
	}
	if l := m2.List(t0); len(l) != 0 {
		t.Fatalf("List = %v", l)
	}
}

func TestPersistenceDryRunSavesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	m := mustOpen(t, path, Config{DryRun: true}, t0)
	strikeUntilBan(t, m, addrA, t0)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := mustOpen(t, path, Config{}, t0)
	if st := m2.Stats(); st.Restored != 0 || st.History != 0 {
		t.Fatalf("dry-run state was saved: %+v", st)
	}
	if b := strikeUntilBan(t, m2, addrA, t0); b.Repeat != 0 {
		t.Fatalf("dry-run history counted after switching to enforcing: %+v", b)
	}
}

func TestPersistenceBanStorm(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	m := mustOpen(t, path, Config{MaxRetry: 1}, t0)
	const n = 3000
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
		if _, ok := m.Strike(a, reason.ConnRate, t0); !ok {
			t.Fatalf("%s not banned", a)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := mustOpen(t, path, Config{}, t0.Add(time.Minute))
	if st := m2.Stats(); st.Restored != n || st.History != n {
		t.Fatalf("restored %d bans and %d histories, want %d", st.Restored, st.History, n)
	}
	// Sweep after the end removes them from the file as well.
	if exp := m2.Sweep(t0.Add(DefaultBanTime)); len(exp) != n {
		t.Fatalf("Sweep expired %d, want %d", len(exp), n)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	m3 := mustOpen(t, path, Config{}, t0.Add(time.Minute)) // clock before the ends: nothing left to restore
	if st := m3.Stats(); st.Restored != 0 || st.History != n {
		t.Fatalf("after sweep: %+v, want no bans and %d histories", st, n)
	}
}

func TestOpenCorrupt(t *testing.T) {
	dir := t.TempDir()

	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a bbolt file "), 4096), 0o600); err != nil {
		t.Fatal(err)
	}

	truncated := filepath.Join(dir, "truncated.db")
	db, err := bolt.Open(truncated, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if err := os.Truncate(truncated, 100); err != nil {
		t.Fatal(err)
	}

	version := filepath.Join(dir, "version.db")
	db, err = bolt.Open(version, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put([]byte("version"), []byte("99"))
	}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	for _, path := range []string{garbage, truncated, version, dir, filepath.Join(dir, "missing", "state.db")} {
		m, err := Open(path, Config{}, t0)
		if err == nil {
			_ = m.Close()
			t.Errorf("Open(%s) succeeded", path)
			continue
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("Open(%s) error %q does not name the path", path, err)
		}
		t.Logf("Open(%s): %v", filepath.Base(path), err)
	}
}

func TestOpenSkipsBadRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	m := mustOpen(t, path, Config{}, t0)
	if _, err := m.Add(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "", "a", t0); err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBans)
		if err := b.Put([]byte("not-a-prefix"), []byte(`{}`)); err != nil {
			return err
		}
		if err := b.Put([]byte("192.0.2.0/24"), []byte(`{"until":`)); err != nil {
			return err
		}
		return b.Put([]byte("192.0.2.9/24"), []byte(`{"until":"2099-01-01T00:00:00Z","actor":"x"}`)) // not masked
	}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	m2 := mustOpen(t, path, Config{}, t0)
	if st := m2.Stats(); st.Restored != 1 || st.RestoreDropped != 3 {
		t.Fatalf("stats %+v: want 1 restored and 3 dropped", st)
	}
}

// TestRestoreLegacyManualReason reads a state file written before manual
// bans had a note: a manual ban's free text was its reason, and it comes
// back as reason.Manual with that text as its note.
func TestRestoreLegacyManualReason(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	m := mustOpen(t, path, Config{}, t0)
	_ = m.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := map[string]string{
		"198.51.100.0/24": `{"until":"2099-01-01T00:00:00Z","reason":"abuse report #7","actor":"alice","created":"2026-01-01T00:00:00Z"}`,
		"192.0.2.7/32":    `{"until":"2099-01-01T00:00:00Z","reason":"manual","actor":"bob","created":"2026-01-01T00:00:00Z"}`,
		"203.0.113.5/32":  `{"until":"2099-01-01T00:00:00Z","reason":"bytes_rate","actor":"auto","strikes":5,"created":"2026-01-01T00:00:00Z"}`,
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for k, v := range recs {
			if err := tx.Bucket(bucketBans).Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	m2 := mustOpen(t, path, Config{}, t0)
	want := map[string]struct {
		r    reason.Reason
		note string
	}{
		"198.51.100.0/24": {reason.Manual, "abuse report #7"},
		"192.0.2.7/32":    {reason.Manual, ""},
		"203.0.113.5/32":  {reason.BytesRate, ""},
	}
	got := m2.List(t0)
	if len(got) != len(want) {
		t.Fatalf("restored %+v", got)
	}
	for _, b := range got {
		if w := want[b.Prefix.String()]; b.Reason != w.r || b.Note != w.note {
			t.Errorf("%s restored as reason %s note %q, want %s %q", b.Prefix, b.Reason, b.Note, w.r, w.note)
		}
	}
	// Saved again, the new layout keeps the name and the note apart.
	if _, err := m2.Add(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "still abusive", "carol", t0); err != nil {
		t.Fatal(err)
	}
	_ = m2.Close()
	m3 := mustOpen(t, path, Config{}, t0)
	defer m3.Close()
	if b, ok := m3.Banned(netip.MustParseAddr("198.51.100.1"), t0); !ok || b.Reason != reason.Manual || b.Note != "still abusive" {
		t.Fatalf("re-saved ban %+v (ok %v)", b, ok)
	}
}

func TestOpenLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 1 s file-lock timeout")
	}
	path := filepath.Join(t.TempDir(), "state.db")
	mustOpen(t, path, Config{}, t0)
	_, err := Open(path, Config{}, t0)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open: %v, want a lock error naming the path", err)
	}
}
