package tokens

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// openState opens a store's state at path, failing the test on any error.
func openState(t *testing.T, path string, now time.Time) (*Store, int) {
	t.Helper()
	s := NewStore(Options{})
	n, err := s.OpenState(path, now)
	if err != nil {
		t.Fatalf("OpenState: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(now) })
	return s, n
}

// flush writes the pending journal records, as the writer does when woken.
func flush(t *testing.T, s *Store) {
	t.Helper()
	s.state.fileMu.Lock()
	defer s.state.fileMu.Unlock()
	if err := s.state.flushLocked(); err != nil {
		t.Fatal(err)
	}
}

// A graceful restart keeps the unredeemed tokens with their user, topics
// and expiry, keeps the redeemed ones spent — a replay after the restart
// is still token_replayed, from elsewhere token_theft_suspected — and
// drops the expired ones.
func TestTokensSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s, n := openState(t, path, t0)
	if n != 0 {
		t.Fatalf("restored %d from nothing", n)
	}
	live, _, _ := s.Mint("alice", []string{"news", "user.{userId}"}, time.Minute, t0)
	spent, _, _ := s.Mint("bob", nil, time.Minute, t0)
	short, _, _ := s.Mint("carol", nil, time.Second, t0)
	if r := s.Redeem(spent, presenter(1, "192.0.2.10", "bob"), t0); r.Reason != reason.None {
		t.Fatalf("redeem: %v", r.Reason)
	}
	if err := s.Close(t0); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot: %v, mode %v", err, fi.Mode())
	}

	later := t0.Add(10 * time.Second)
	s2, n := openState(t, path, later)
	if n != 2 || s2.Len() != 2 {
		t.Fatalf("restored %d (len %d), want 2: the expired token is not restored", n, s2.Len())
	}
	if st := s2.StateStats(); st.Restored != 2 || st.Path != path || st.Snapshots != 1 {
		t.Fatalf("stats %+v", st)
	}
	r := s2.Redeem(live, presenter(7, "192.0.2.20", "alice"), later)
	if r.Reason != reason.None || r.Grant.UserID() != "alice" || !slices.Equal(slices.Collect(r.Grant.Topics()), []string{"news", "user.{userId}"}) ||
		r.Grant.Expires != t0.Add(time.Minute).UnixNano() || r.Grant.FP() != fingerprint(digestOf(live)) {
		t.Fatalf("restored live token: %+v %+v", r, r.Grant)
	}
	if !r.Grant.Allows("user.alice", "alice") || r.Grant.Allows("user.bob", "alice") {
		t.Fatal("restored topic binding lost")
	}
	r = s2.Redeem(spent, presenter(8, "192.0.2.10", "bob"), later)
	if r.Reason != reason.TokenReplayed || r.Spent.By.String() != "192.0.2.10" || !r.Spent.At.Equal(t0) {
		t.Fatalf("spent token after restart, same address: %+v", r)
	}
	if r = s2.Redeem(spent, presenter(9, "198.51.100.1", "bob"), later); r.Reason != reason.TokenTheft {
		t.Fatalf("spent token after restart, other address: %+v", r)
	}
	if r = s2.Redeem(short, presenter(10, "192.0.2.30", "carol"), later); r.Reason != reason.TokenUnknown {
		t.Fatalf("expired token after restart: %+v", r)
	}
}

// After a kill -9 the journal has every Mint and redemption written
// since the last snapshot: a token minted after it is restored, and one
// redeemed after it stays spent.
func TestTokensSurviveKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s, _ := openState(t, path, t0)
	before, _, _ := s.Mint("bob", nil, time.Minute, t0) // both after OpenState's snapshot: in the journal only
	after, _, _ := s.Mint("alice", []string{"news"}, time.Minute, t0)
	if r := s.Redeem(before, presenter(1, "192.0.2.10", "bob"), t0); r.Reason != reason.None {
		t.Fatal(r.Reason)
	}
	flush(t, s)
	// s is never closed before the restart: its files are as a kill -9
	// leaves them.
	s2, n := openState(t, path, t0.Add(time.Second))
	if n != 2 {
		t.Fatalf("restored %d, want 2", n)
	}
	if r := s2.Redeem(before, presenter(2, "192.0.2.10", "bob"), t0.Add(time.Second)); r.Reason != reason.TokenReplayed {
		t.Fatalf("token redeemed before the kill: %+v", r)
	}
	if r := s2.Redeem(after, presenter(3, "192.0.2.11", "alice"), t0.Add(time.Second)); r.Reason != reason.None {
		t.Fatalf("token minted before the kill: %+v", r)
	}
}

// A crash between starting a new journal and installing the snapshot that
// goes with it leaves the old snapshot and both journals: replayed, they
// give the same tokens.
func TestCheckpointInterruptedReplaysBothJournals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.db")
	s, _ := openState(t, path, t0)
	t1, _, _ := s.Mint("bob", nil, time.Minute, t0)
	flush(t, s)
	saved := map[string][]byte{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		saved[e.Name()] = b
	}
	if len(saved) != 2 {
		t.Fatalf("files %v, want the snapshot and one journal", slices.Collect(mapsKeys(saved)))
	}
	if err := s.Checkpoint(t0); err != nil {
		t.Fatal(err)
	}
	t2, _, _ := s.Mint("alice", nil, time.Minute, t0)
	if r := s.Redeem(t1, presenter(1, "192.0.2.10", "bob"), t0); r.Reason != reason.None {
		t.Fatal(r.Reason)
	}
	flush(t, s)
	// Put the old snapshot and journal back, as if the checkpoint had
	// crashed before its rename; keep the new journal.
	for name, b := range saved {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2, n := openState(t, path, t0)
	if n != 2 {
		t.Fatalf("restored %d, want 2", n)
	}
	if r := s2.Redeem(t1, presenter(2, "192.0.2.10", "bob"), t0); r.Reason != reason.TokenReplayed {
		t.Fatalf("t1: %+v", r)
	}
	if r := s2.Redeem(t2, presenter(3, "192.0.2.10", "alice"), t0); r.Reason != reason.None {
		t.Fatalf("t2: %+v", r)
	}
	// The restart's own checkpoint left one snapshot and one journal.
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("files after restart: %d, want 2", len(ents))
	}
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// The files hold digests only: neither the token nor its random bytes
// appear in them.
func TestStateFilesHoldNoToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.db")
	s, _ := openState(t, path, t0)
	tok, _, _ := s.Mint("bob", nil, time.Minute, t0)
	tok2, _, _ := s.Mint("bob", nil, time.Minute, t0)
	s.Redeem(tok2, presenter(1, "192.0.2.10", "bob"), t0)
	flush(t, s)
	check := func() {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			for _, k := range []string{tok, tok2} {
				raw, _ := base64.RawURLEncoding.DecodeString(k)
				if bytes.Contains(b, []byte(k)) || bytes.Contains(b, raw) {
					t.Fatalf("%s holds a token", e.Name())
				}
			}
			if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: mode %v", e.Name(), fi.Mode())
			}
		}
	}
	check() // the journal
	if err := s.Close(t0); err != nil {
		t.Fatal(err)
	}
	check() // the snapshot
}

// A corrupt snapshot (a flipped byte, a truncated file, garbage, another
// version) is no reason not to start: OpenState says ErrCorrupt, moves
// the file aside, restores nothing from it, and the store works and writes
// a good snapshot.
func TestCorruptSnapshotStartsEmpty(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func([]byte) []byte
		want   string
	}{
		{"flipped byte", func(b []byte) []byte { b[len(b)/2] ^= 1; return b }, "checksum mismatch"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-5] }, "checksum mismatch"},
		{"garbage", func([]byte) []byte { return []byte("not a snapshot at all, really not") }, "not a token snapshot"},
		{"other version", func(b []byte) []byte { b[9] = 9; return b }, "format version 9"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.db")
			s, _ := openState(t, path, t0)
			tok, _, _ := s.Mint("bob", nil, time.Minute, t0)
			if err := s.Close(t0); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(path)
			if err := os.WriteFile(path, c.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}
			s2 := NewStore(Options{})
			n, err := s2.OpenState(path, t0)
			t.Cleanup(func() { _ = s2.Close(t0) })
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) || n != 0 || s2.Len() != 0 {
				t.Fatalf("OpenState: %d, %v", n, err)
			}
			if _, err := os.Stat(path + ".corrupt"); err != nil {
				t.Fatalf("not moved aside: %v", err)
			}
			if r := s2.Redeem(tok, presenter(1, "192.0.2.10", "bob"), t0); r.Reason != reason.TokenUnknown {
				t.Fatalf("token from a corrupt file: %+v", r)
			}
			tok2, _, err := s2.Mint("bob", nil, time.Minute, t0)
			if err != nil {
				t.Fatal(err)
			}
			if err := s2.Close(t0); err != nil {
				t.Fatal(err)
			}
			s3, n := openState(t, path, t0)
			if n != 1 || s3.Redeem(tok2, presenter(1, "192.0.2.10", "bob"), t0).Reason != reason.None {
				t.Fatalf("after the corrupt start: restored %d", n)
			}
		})
	}
}

// A journal torn by a crash in the middle of a record loses that record
// only, quietly; a bad record followed by more is corruption, after which
// every token restored counts as spent, since the redemptions it held are
// unknown.
func TestJournalDamage(t *testing.T) {
	// setup mints two tokens, with checkpoint in the snapshot, and redeems
	// one of them; the journal holds the rest.
	setup := func(t *testing.T, checkpoint bool) (path, journal, live, spent string) {
		dir := t.TempDir()
		path = filepath.Join(dir, "tokens.db")
		s, _ := openState(t, path, t0)
		live, _, _ = s.Mint("alice", nil, time.Minute, t0)
		spent, _, _ = s.Mint("bob", nil, time.Minute, t0)
		if checkpoint {
			if err := s.Checkpoint(t0); err != nil {
				t.Fatal(err)
			}
		}
		s.Redeem(spent, presenter(1, "192.0.2.10", "bob"), t0)
		flush(t, s)
		js, err := journalsOf(path)
		if err != nil || len(js) != 1 {
			t.Fatalf("journals %v %v", js, err)
		}
		return path, js[0].path, live, spent
	}
	t.Run("torn tail", func(t *testing.T) {
		path, journal, live, spent := setup(t, false)
		b, _ := os.ReadFile(journal)
		if err := os.WriteFile(journal, b[:len(b)-3], 0o600); err != nil { // the redemption, torn
			t.Fatal(err)
		}
		s, n := openState(t, path, t0)
		if n != 2 {
			t.Fatalf("restored %d", n)
		}
		if r := s.Redeem(live, presenter(5, "192.0.2.20", "alice"), t0); r.Reason != reason.None {
			t.Fatalf("live: %+v", r)
		}
		// The torn record was bob's redemption: lost, as the window of a
		// kill -9 in the middle of a write allows.
		if r := s.Redeem(spent, presenter(6, "192.0.2.10", "bob"), t0); r.Reason != reason.None {
			t.Fatalf("spent: %+v", r)
		}
	})
	t.Run("bad record in the middle", func(t *testing.T) {
		path, journal, live, spent := setup(t, true)
		b, _ := os.ReadFile(journal)
		b[headerLen+5] ^= 0xff // inside the redemption
		b = append(b, make([]byte, maxRecordLen)...)
		if err := os.WriteFile(journal, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s := NewStore(Options{})
		n, err := s.OpenState(path, t0)
		t.Cleanup(func() { _ = s.Close(t0) })
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), journal) || !strings.Contains(err.Error(), "taken as spent") {
			t.Fatalf("OpenState: %d, %v", n, err)
		}
		for _, tok := range []string{live, spent} {
			if r := s.Redeem(tok, presenter(5, "192.0.2.20", "x"), t0); r.Reason == reason.None {
				t.Fatalf("a token came back to life after a corrupt journal: %+v", r)
			}
		}
	})
}

// Mints and redemptions racing with checkpoints are all kept: every
// token is restored, and every redeemed one stays spent.
func TestCheckpointConcurrentWithMintAndRedeem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s, _ := openState(t, path, t0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 5; i++ {
			if err := s.Checkpoint(t0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var toks []string
	for i := 0; i < 3000; i++ {
		tok, _, err := s.Mint("u", nil, time.Minute, t0)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
		if i%2 == 0 {
			s.Redeem(tok, presenter(uint64(i+1), "192.0.2.10", "u"), t0)
		}
	}
	<-done
	flush(t, s)
	s2, n := openState(t, path, t0)
	if n != len(toks) {
		t.Fatalf("restored %d of %d", n, len(toks))
	}
	for i, tok := range toks {
		r := s2.Redeem(tok, presenter(1_000_000+uint64(i), "192.0.2.10", "u"), t0)
		if want := map[bool]reason.Reason{true: reason.TokenReplayed, false: reason.None}[i%2 == 0]; r.Reason != want {
			t.Fatalf("token %d: %v, want %v", i, r.Reason, want)
		}
	}
}

// Without OpenState nothing is written and Close does nothing.
func TestNoStateFile(t *testing.T) {
	s := NewStore(Options{})
	s.Mint("u", nil, 0, t0)
	if err := s.Close(t0); err != nil || s.StateStats() != (StateStats{}) || s.Checkpoint(t0) != nil {
		t.Fatal("a store without a state file wrote something")
	}
}

// BenchmarkStateFile1M writes a snapshot of 1,000,000 tokens (a tenth of
// them redeemed, a fifth bound to a topic) and restores it, reporting the
// time of each, the file's size, and the cost of journalling a Mint.
//
//	go test -run='^$' -bench=StateFile1M -benchtime=1x ./policy/tokens/
func BenchmarkStateFile1M(b *testing.B) {
	const n = 1_000_000
	path := filepath.Join(b.TempDir(), "tokens.db")
	s := NewStore(Options{MaxEntries: n})
	if _, err := s.OpenState(path, t0); err != nil {
		b.Fatal(err)
	}
	defer s.Close(t0)
	mintStart := time.Now()
	for i := 0; s.Len() < n; i++ {
		var bound []string
		if i%5 == 0 {
			bound = []string{"news.sport"}
		}
		tok, _, err := s.Mint("user-"+strconv.Itoa(i%50000), bound, time.Hour, t0)
		if err != nil {
			b.Fatal(err)
		}
		if i%10 == 0 {
			s.Redeem(tok, Presenter{Conn: uint64(i + 1)}, t0)
		}
	}
	mint := time.Since(mintStart)
	var snap, load time.Duration
	for i := 0; i < b.N; i++ {
		t := time.Now()
		if err := s.Checkpoint(t0); err != nil {
			b.Fatal(err)
		}
		snap = time.Since(t)
		r := NewStore(Options{MaxEntries: n})
		t = time.Now()
		if _, recs, err := readSnapshot(path, t0); err != nil || len(recs) != n {
			b.Fatalf("%d tokens, %v", len(recs), err)
		} else {
			for _, e := range recs {
				r.restoreEntry(e.d, e.g, e.red)
			}
		}
		load = time.Since(t)
	}
	fi, _ := os.Stat(path)
	b.ReportMetric(float64(snap.Milliseconds()), "snapshot-ms")
	b.ReportMetric(float64(load.Milliseconds()), "restore-ms")
	b.ReportMetric(float64(fi.Size())/n, "bytes/token")
	b.ReportMetric(float64(mint.Nanoseconds())/n, "mint+journal-ns")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMintRedeemJournal measures a Mint and its first Redeem without
// a state file and with one (the journal records are appended in memory;
// the writer goroutine writes them).
//
//	go test -run='^$' -bench=MintRedeemJournal ./policy/tokens/
func BenchmarkMintRedeemJournal(b *testing.B) {
	for _, journal := range []bool{false, true} {
		b.Run(map[bool]string{false: "memory", true: "journal"}[journal], func(b *testing.B) {
			s := NewStore(Options{MaxEntries: 1 << 30})
			if journal {
				if _, err := s.OpenState(filepath.Join(b.TempDir(), "tokens.db"), t0); err != nil {
					b.Fatal(err)
				}
				defer s.Close(t0)
			}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				tok, _, err := s.Mint("user-1", nil, time.Hour, t0)
				if err != nil {
					b.Fatal(err)
				}
				if r := s.Redeem(tok, Presenter{Conn: uint64(i + 1)}, t0); r.Reason != reason.None {
					b.Fatal(r.Reason)
				}
			}
		})
	}
}

// The writer lets a burst's records gather for journalLinger after it is
// woken, so a burst of redemptions costs a journal write (and a wake-up)
// per journalLinger rather than one per redemption; and every record
// still reaches the journal without anyone flushing it.
func TestJournalWritesGatherABurst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s, _ := openState(t, path, t0)
	const n = 300
	toks := make([]string, n)
	for i := range toks {
		tok, _, err := s.Mint("u"+strconv.Itoa(i), nil, time.Minute, t0)
		if err != nil {
			t.Fatal(err)
		}
		toks[i] = tok
	}
	written := func() bool {
		s.state.mu.Lock()
		defer s.state.mu.Unlock()
		return len(s.state.pending) == 0
	}
	waitFor := func(what string) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); !written(); {
			if time.Now().After(end) {
				t.Fatalf("%s: records still pending after 10 s", what)
			}
			time.Sleep(journalLinger)
		}
		time.Sleep(2 * journalLinger) // a write under way when pending emptied
	}
	waitFor("mints")
	before := s.StateStats().Writes
	start := time.Now()
	for i, tok := range toks {
		// One redemption every 100 µs: each finds the writer idle unless
		// it lingers.
		for time.Since(start) < time.Duration(i)*100*time.Microsecond {
		}
		if r := s.Redeem(tok, presenter(uint64(i+1), "192.0.2.10", "u"+strconv.Itoa(i)), t0); r.Reason != reason.None {
			t.Fatalf("redeem %d: %v", i, r.Reason)
		}
	}
	waitFor("redemptions")
	elapsed := time.Since(start)
	writes := s.StateStats().Writes - before
	if most := uint64(elapsed/journalLinger) + 2; writes > most {
		t.Fatalf("%d redemptions over %v took %d journal writes, want at most %d (one per %v)", n, elapsed, writes, most, journalLinger)
	}
	t.Logf("%d redemptions over %v: %d journal writes", n, elapsed, writes)
	// Nothing was flushed by hand: the restart finds every redemption.
	s2, restored := openState(t, path, t0.Add(time.Second))
	if restored != n {
		t.Fatalf("restored %d, want %d", restored, n)
	}
	for i, tok := range toks {
		if r := s2.Redeem(tok, presenter(uint64(n+i+1), "192.0.2.10", "u"+strconv.Itoa(i)), t0.Add(time.Second)); r.Reason != reason.TokenReplayed {
			t.Fatalf("token %d after restart: %v, want token_replayed", i, r.Reason)
		}
	}
}
