package audit

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/chain"
)

// copyTrail copies a data dir (trail and keys) so each case tampers with its own.
func copyTrail(t *testing.T, src testTrail) testTrail {
	dst := newTrail(t)
	if err := os.CopyFS(dst.data, os.DirFS(src.data)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func editLines(t *testing.T, path string, f func([]string) []string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	ls = f(ls)
	if err := os.WriteFile(path, []byte(strings.Join(ls, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTamper: every kind of tampering with a real rotated trail is reported
// at the right place.
func TestTamper(t *testing.T) {
	orig := newTrail(t)
	writeRotated(t, orig)
	mustIntact(t, orig.verify(t))
	files, _ := chain.ListTrail(orig.dir)
	if len(files) < 4 {
		t.Fatalf("%d files", len(files))
	}
	active := func(tt testTrail) string { return filepath.Join(tt.dir, "audit.log") }
	key, _ := chain.ReadKey(filepath.Join(orig.data, "audit.key"))
	reseal := func(line string) string { // what someone holding the HMAC key can do
		body, _, _ := chain.Split([]byte(line))
		prev, _ := chain.Field(body, chain.KeyPrev)
		return string(chain.Seal(nil, body, chain.NewSealer(key).MAC(nil, prev, body)))
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, tt testTrail)
		want   string // in the first problem
	}{
		{"modified line", func(t *testing.T, tt testTrail) {
			editLines(t, active(tt), func(ls []string) []string {
				ls[3] = strings.Replace(ls[3], `"ip":"192.0.2.`, `"ip":"10.0.2.`, 1)
				return ls
			})
		}, "audit.log:4: mac mismatch"},
		{"deleted line", func(t *testing.T, tt testTrail) {
			editLines(t, active(tt), func(ls []string) []string { return append(ls[:3], ls[4:]...) })
		}, "audit.log:4: chain broken"},
		{"reordered lines", func(t *testing.T, tt testTrail) {
			editLines(t, active(tt), func(ls []string) []string { ls[3], ls[4] = ls[4], ls[3]; return ls })
		}, "audit.log:4: chain broken"},
		{"forged mac", func(t *testing.T, tt testTrail) {
			editLines(t, active(tt), func(ls []string) []string {
				ls[5] = ls[5][:len(ls[5])-chain.SuffixLen] + `,"mac":"` + strings.Repeat("ab", 32) + `"}`
				return ls
			})
		}, "audit.log:6: mac mismatch"},
		{"missing middle file", func(t *testing.T, tt testTrail) {
			os.Remove(filepath.Join(tt.dir, filepath.Base(files[1].Path)))
		}, "header names previous file"},
		{"missing oldest file", func(t *testing.T, tt testTrail) {
			os.Remove(filepath.Join(tt.dir, filepath.Base(files[0].Path)))
		}, "is missing and was not removed by retention"},
		{"truncated at a line boundary", func(t *testing.T, tt testTrail) {
			editLines(t, active(tt), func(ls []string) []string { return ls[:len(ls)-3] })
		}, "covers seq"},
		{"truncated mid-line before the last checkpoint", func(t *testing.T, tt testTrail) {
			raw, _ := os.ReadFile(active(tt))
			os.WriteFile(active(tt), raw[:len(raw)-40], 0o600)
		}, "covers seq"},
		{"rewritten with the HMAC key", func(t *testing.T, tt testTrail) {
			editLines(t, active(tt), func(ls []string) []string {
				ls[len(ls)-1] = reseal(strings.Replace(ls[len(ls)-1], `"ip":"192.0.2.`, `"ip":"10.9.9.`, 1))
				return ls
			})
		}, "differs from checkpoint"},
		{"checkpoints deleted", func(t *testing.T, tt testTrail) {
			os.Remove(filepath.Join(tt.dir, chain.CheckpointsName))
		}, "checkpoints file missing"},
		{"checkpoint forged", func(t *testing.T, tt testTrail) {
			p := filepath.Join(tt.dir, chain.CheckpointsName)
			raw, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(raw, []byte(`"seq":`), []byte(`"seq":9`), 1), 0o600)
		}, "signature invalid"},
		{"modified line in a gzip'd file", func(t *testing.T, tt testTrail) {
			p := filepath.Join(tt.dir, filepath.Base(files[1].Path))
			fh, _ := os.Open(p)
			zr, _ := gzip.NewReader(fh)
			var b bytes.Buffer
			b.ReadFrom(zr)
			fh.Close()
			out := bytes.Replace(b.Bytes(), []byte(`"conn":`), []byte(`"conn":1`), 1)
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(out)
			zw.Close()
			os.WriteFile(p, z.Bytes(), 0o600)
		}, ".log.gz:2: mac mismatch"},
	}
	if !files[1].Gz {
		t.Fatalf("file %s not gzip'd", files[1].Path)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tt := copyTrail(t, orig)
			c.tamper(t, tt)
			r := tt.verify(t)
			if r.OK() {
				t.Fatalf("not detected; report %+v", r)
			}
			var first string
			for _, p := range r.Problems {
				if !p.Warning {
					first = p.String()
					break
				}
			}
			if !strings.Contains(first, c.want) {
				for _, p := range r.Problems {
					t.Log(p)
				}
				t.Fatalf("first problem %q, want %q", first, c.want)
			}
			t.Log(first)
		})
	}
}
