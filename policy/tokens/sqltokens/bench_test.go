package sqltokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// benchRate is the pace of BenchmarkRedeemPaced: redemptions a second.
const benchRate = 500

// BenchmarkRedeemPaced redeems fresh tokens against a real database on
// loopback at a steady benchRate a second, each on a goroutine of its
// own as the gateway runs them, and reports the latency percentiles of
// one redemption (p50_ms, p99_ms, max_ms). Run it with, e.g.,
// go test -run '^$' -bench RedeemPaced -benchtime 5000x ./policy/tokens/sqltokens/
func BenchmarkRedeemPaced(b *testing.B) {
	for _, k := range kinds {
		b.Run(string(k), func(b *testing.B) {
			f := newFixture(b, k, Options{Hashed: true})
			toks := f.insertMany(b.N, time.Now().Add(time.Hour))
			lat := make([]time.Duration, b.N)
			var (
				wg     sync.WaitGroup
				failed sync.Map
			)
			tick := time.NewTicker(time.Second / benchRate)
			defer tick.Stop()
			b.ResetTimer()
			for i := range b.N {
				<-tick.C
				wg.Go(func() {
					start := time.Now()
					r := f.src.Redeem(toks[i], presenter(uint64(i+1), "198.51.100.7", "42"), start)
					lat[i] = time.Since(start)
					if r.Reason != reason.None {
						failed.Store(i, r)
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			failed.Range(func(k, v any) bool { b.Fatalf("redemption %v: %+v", k, v); return false })
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(lat[len(lat)/2]), "p50_ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99_ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max_ms")
		})
	}
}

// insertMany writes n token rows (500 to a statement) and returns the
// tokens.
func (f *fixture) insertMany(n int, expires time.Time) []string {
	f.t.Helper()
	toks := make([]string, n)
	exp := expires.UTC().Format("2006-01-02 15:04:05")
	for start := 0; start < n; start += 500 {
		end := min(start+500, n)
		var q strings.Builder
		q.WriteString("INSERT INTO portcullis_tokens (token_sha256, user_id, topics, expires_at) VALUES ")
		for i := start; i < end; i++ {
			var raw [24]byte
			_, _ = rand.Read(raw[:])
			toks[i] = base64.RawURLEncoding.EncodeToString(raw[:])
			sum := sha256.Sum256([]byte(toks[i]))
			if i > start {
				q.WriteString(", ")
			}
			q.WriteString("('" + hex.EncodeToString(sum[:]) + "', '42', NULL, '" + exp + "')")
		}
		if _, err := f.db.Exec(q.String()); err != nil {
			f.t.Fatalf("insert rows %d-%d: %v", start, end, err)
		}
	}
	return toks
}
