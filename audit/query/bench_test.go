package query

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/index"
)

// genTrail writes a realistic trail of about total uncompressed bytes into
// dir: rotated gzip'd files of rotate bytes each, each with its summary
// (.idx) as the writer leaves it, then a plain audit.log of the remainder. Lines look like the writer's (logrus JSON, keys sorted,
// HMAC chain). It returns the number of lines and bytes written.
func genTrail(tb testing.TB, dir string, total, rotate int64) (lines int64, written int64) {
	rng := rand.New(rand.NewPCG(1, 2))
	key := []byte("bench audit key")
	ips := make([]string, 50000)
	for i := range ips {
		if i%10 == 0 {
			ips[i] = fmt.Sprintf("2001:db8:%x:%x::%x", rng.IntN(65536), rng.IntN(65536), rng.IntN(65536))
		} else {
			ips[i] = fmt.Sprintf("%d.%d.%d.%d", 1+rng.IntN(222), rng.IntN(256), rng.IntN(256), 1+rng.IntN(254))
		}
	}
	ips[0] = "198.51.100.77" // the address the selective benchmark looks for (~0.05% of lines)
	zipf := rand.NewZipf(rng, 1.2, 8, uint64(len(ips)-1))
	type kind struct {
		event, sev, stage, reason string
		weight                    int
	}
	kinds := []kind{
		{"conn_open", "info", "handshake", "", 30}, {"conn_close", "info", "close", "", 29},
		{"auth_ok", "info", "handshake", "", 10}, {"subscribe", "info", "message", "", 12},
		{"publish", "info", "message", "", 4}, {"unsubscribe", "info", "message", "", 3},
		{"auth_failed", "warning", "handshake", "token_expired", 3}, {"auth_failed", "warning", "handshake", "token_replayed", 1},
		{"conn_rejected", "warning", "accept", "rate_limited", 3}, {"subscribe_denied", "notice", "message", "topic_forbidden", 2},
		{"message_rejected", "warning", "message", "schema_invalid", 2}, {"message_rejected", "warning", "message", "message_too_large", 1},
	}
	var pick []int
	for i, k := range kinds {
		for range k.weight {
			pick = append(pick, i)
		}
	}
	topics := []string{"prices.eur", "prices.usd", "chat.room.1", "chat.room.2", "orders.acme", "news"}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := make([]byte, 64)
	for i := range prev {
		prev[i] = '0'
	}
	mac := hmac.New(sha256.New, key)
	var seq uint64
	var line []byte
	type job struct {
		path string
		data []byte
		sum  *index.Summary
	}
	jobs := make(chan job, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				f, err := os.Create(j.path)
				if err != nil {
					panic(err)
				}
				zw := gzip.NewWriter(f)
				zw.Write(j.data)
				zw.Close()
				f.Close()
				j.sum.CRC32 = crc32.ChecksumIEEE(j.data)
				if err := index.Write(filepath.Join(filepath.Dir(j.path), index.Name(filepath.Base(j.path))), j.sum); err != nil {
					panic(err)
				}
			}
		}()
	}
	buf := make([]byte, 0, rotate+4096)
	firstSeq := uint64(1)
	idx := index.NewBuilder()
	sevRank := map[string]int{"info": 0, "notice": 1, "warning": 2, "critical": 3}
	var hs index.Hashes
	for written < total {
		seq++
		at = at.Add(time.Duration(rng.IntN(20)) * time.Millisecond)
		k := kinds[pick[rng.IntN(len(pick))]]
		ip := ips[zipf.Uint64()]
		if seq == 1000 {
			ip = "203.0.113.5" // a single line, in the first file: the Bloom filters skip the others
		}
		conn := 1 + rng.IntN(1_000_000)
		user := "user" + strconv.Itoa(rng.IntN(20000))
		count := 0
		if k.event == "conn_rejected" && rng.IntN(4) == 0 {
			count = 2 + rng.IntN(500)
		}
		line = append(line[:0], '{')
		str := func(key, v string) {
			if v != "" {
				line = append(line, '"')
				line = append(line, key...)
				line = append(line, `":"`...)
				line = append(line, v...)
				line = append(line, `",`...)
			}
		}
		num := func(key string, v int) {
			line = append(line, '"')
			line = append(line, key...)
			line = append(line, `":`...)
			line = strconv.AppendInt(line, int64(v), 10)
			line = append(line, ',')
		}
		str("boot", "b7f3c2a1")
		if k.event == "conn_close" {
			num("code", 1000)
		}
		num("conn", conn)
		if count > 0 {
			num("count", count)
		}
		str("counted_prefix", ip)
		if k.reason != "" {
			str("detail", "rejected: "+k.reason)
		}
		if k.event == "conn_close" {
			num("duration_ms", rng.IntN(3_600_000))
		}
		str("event", k.event)
		if count > 0 {
			str("first", at.Add(-10*time.Second).Format(time.RFC3339Nano))
		}
		str("ip", ip)
		if count > 0 {
			str("last", at.Format(time.RFC3339Nano))
		}
		str("level", "info")
		str("node", "gw-eu-1")
		str("prev", string(prev))
		str("proto", "portcullis.v1")
		str("reason", k.reason)
		num("seq", int(seq))
		str("severity", k.sev)
		str("stage", k.stage)
		str("time", at.Format(time.RFC3339Nano))
		if k.event != "conn_rejected" && k.event != "conn_open" {
			str("token_fp", fmt.Sprintf("%08x", rng.Uint32()))
		}
		if k.stage == "message" {
			str("topic", topics[rng.IntN(len(topics))])
		}
		if k.event != "conn_rejected" {
			str("userId", user)
		}
		mac.Reset()
		mac.Write(prev)
		mac.Write(line)
		sum := hex.EncodeToString(mac.Sum(nil))
		line = append(line, `"mac":"`...)
		line = append(line, sum...)
		line = append(line, "\"}\n"...)
		copy(prev, sum)
		buf = append(buf, line...)
		n, lo, hi := int64(1), at, at
		if count > 0 {
			n, lo = int64(count), at.Add(-10*time.Second)
		}
		if k.event == "conn_rejected" {
			user = "" // not written
		}
		topic := ""
		if k.stage == "message" {
			topic = string(bytesBetween(line, `"topic":"`, `"`))
		}
		hs.Set(ip, "", ip, user, topic)
		idx.Add(len(line), seq, k.event, k.reason, sevRank[k.sev], n, lo, hi, &hs)
		written += int64(len(line))
		lines++
		if int64(len(buf)) >= rotate && written < total {
			name := fmt.Sprintf("audit-%s-%d.log.gz", at.Add(time.Second).Format(rotatedTimeLayout), firstSeq)
			jobs <- job{filepath.Join(dir, name), buf, idx.Finish(strings.TrimSuffix(name, ".gz"), string(prev))}
			idx = index.NewBuilder()
			buf = make([]byte, 0, rotate+4096)
			firstSeq = seq + 1
		}
	}
	close(jobs)
	wg.Wait()
	f, err := os.Create(filepath.Join(dir, ActiveName))
	if err != nil {
		tb.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	bw.Write(buf)
	bw.Flush()
	f.Close()
	return lines, written
}

// BenchmarkQuery scans a generated trail (PORTCULLIS_AUDIT_BENCH_MB MB
// uncompressed, default 300, mostly gzip'd). MB/s counts uncompressed
// bytes; gzMB/s counts the compressed bytes on disk.
func BenchmarkQuery(b *testing.B) {
	mb := int64(300)
	if s := os.Getenv("PORTCULLIS_AUDIT_BENCH_MB"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		mb = n
	}
	// PORTCULLIS_AUDIT_BENCH_DIR keeps the generated trail between runs
	// (generated there when it holds no audit.log).
	dir := os.Getenv("PORTCULLIS_AUDIT_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	start := time.Now()
	var lines, size int64
	if _, err := os.Stat(filepath.Join(dir, ActiveName)); err != nil {
		lines, size = genTrail(b, dir, mb<<20, 64<<20)
	} else {
		existing, err := Discover([]string{dir})
		if err != nil {
			b.Fatal(err)
		}
		_, st, err := CountBy(context.Background(), existing, Options{}, KeyEvent)
		if err != nil {
			b.Fatal(err)
		}
		lines, size = st.Lines, st.Bytes
	}
	files, err := Discover([]string{dir})
	if err != nil {
		b.Fatal(err)
	}
	var disk int64
	for _, f := range files {
		st, _ := os.Stat(f.Path)
		disk += st.Size()
	}
	b.Logf("trail: %d lines, %.0f MB uncompressed, %.0f MB on disk in %d files (generated in %v)",
		lines, float64(size)/1e6, float64(disk)/1e6, len(files), time.Since(start).Round(time.Millisecond))
	report := func(b *testing.B, st Stats) {
		sec := b.Elapsed().Seconds()
		b.ReportMetric(float64(st.Lines)*float64(b.N)/sec, "lines/s")
		b.ReportMetric(float64(disk)*float64(b.N)/1e6/sec, "gzMB/s")
		b.ReportMetric(float64(st.Matched), "matched")
	}
	indexed := 0
	for _, f := range files {
		if loadIndex(f, &Options{}) != nil {
			indexed++
		}
	}
	b.Logf("%d of %d files have a valid .idx", indexed, len(files))
	for _, idx := range []struct {
		name    string
		noIndex bool
	}{{"", true}, {"/idx", false}} {
		for _, q := range []struct{ name, ip string }{{"ip=one-address", "198.51.100.77"}, {"ip=rare-address", "203.0.113.5"}} {
			b.Run(q.name+idx.name, func(b *testing.B) {
				b.SetBytes(size)
				b.ReportAllocs()
				var st Stats
				for b.Loop() {
					st, err = Lines(context.Background(), files, Options{Filter: Filter{IP: mustIP(q.ip)}, NoIndex: idx.noIndex}, func([]byte) error { return nil })
					if err != nil {
						b.Fatal(err)
					}
				}
				report(b, st)
				b.ReportMetric(float64(st.Indexed), "idx-files")
			})
		}
		b.Run("count-by=reason"+idx.name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			var st Stats
			for b.Loop() {
				_, st, err = CountBy(context.Background(), files, Options{NoIndex: idx.noIndex}, KeyReason)
				if err != nil {
					b.Fatal(err)
				}
			}
			report(b, st)
			b.ReportMetric(float64(st.Indexed), "idx-files")
		})
	}
	b.Run("severity=critical", func(b *testing.B) {
		b.SetBytes(size)
		var st Stats
		for b.Loop() {
			st, err = Lines(context.Background(), files, Options{Filter: Filter{MinSeverity: audit.Critical}}, func([]byte) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
		}
		report(b, st)
	})
}

func bytesBetween(b []byte, start, end string) []byte {
	i := bytes.Index(b, []byte(start))
	if i < 0 {
		return nil
	}
	b = b[i+len(start):]
	return b[:bytes.Index(b, []byte(end))]
}

func BenchmarkParse(b *testing.B) {
	dir := b.TempDir()
	genTrail(b, dir, 1<<20, 1<<30)
	data, err := os.ReadFile(filepath.Join(dir, ActiveName))
	if err != nil {
		b.Fatal(err)
	}
	var lines [][]byte
	for len(data) > 0 {
		k := 0
		for data[k] != '\n' {
			k++
		}
		lines = append(lines, data[:k])
		data = data[k+1:]
	}
	for _, want := range []struct {
		name string
		f    Fields
	}{{"reason+count", FieldReason | FieldCount}, {"table", FieldsTable}} {
		b.Run(want.name, func(b *testing.B) {
			var r Record
			var n int64
			for _, l := range lines {
				n += int64(len(l))
			}
			b.SetBytes(n / int64(len(lines)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := r.Parse(lines[i%len(lines)], want.f); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
