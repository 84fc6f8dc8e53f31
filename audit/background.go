package audit

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/index"
)

// janitor compresses rotated files and applies retention, in the
// background: the writer goroutine never waits for it. Deleting a file is
// first recorded (and fsynced) in the trail as an audit_retention event
// whose detail starts with the file's name.
type janitor struct {
	w    *Writer
	work chan rotatedFile // rotated files to index and compress
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newJanitor(w *Writer) *janitor {
	j := &janitor{w: w, work: make(chan rotatedFile, 64), stop: make(chan struct{}), done: make(chan struct{})}
	go j.run()
	return j
}

// rotatedFile is a file just rotated and its summary (nil: none).
type rotatedFile struct {
	path string
	sum  *index.Summary
}

func (j *janitor) rotated(path string, sum *index.Summary) {
	select {
	case j.work <- rotatedFile{path, sum}:
	default: // compressed at the next start or the next sweep, without an idx
	}
}

func (j *janitor) close() {
	j.once.Do(func() { close(j.stop) })
	<-j.done
}

func (j *janitor) run() {
	defer close(j.done)
	j.sweep()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case p := <-j.work:
			j.writeIndex(p)
			j.compress(p.path)
			j.retain()
		case <-t.C:
			j.sweep()
		case <-j.stop:
			return
		}
	}
}

// sweep compresses rotated files left uncompressed (by a crash or a full
// queue), removes stale temporaries and applies retention.
func (j *janitor) sweep() {
	dir := j.w.o.Dir
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".gz.tmp") || strings.HasSuffix(n, index.Ext+".tmp") {
			_ = os.Remove(filepath.Join(dir, n))
			continue
		}
		if _, seq, gz, ok := chain.ParseRotatedName(n); ok && !gz && seq < j.w.keepFrom.Load() {
			if _, err := os.Stat(filepath.Join(dir, n+".gz")); err == nil {
				_ = os.Remove(filepath.Join(dir, n)) // compressed before a crash
				continue
			}
			j.writeIndex(rotatedFile{path: filepath.Join(dir, n)})
			j.compress(filepath.Join(dir, n))
		}
	}
	j.removeOrphanIndexes(ents)
	j.retain()
}

// writeIndex writes the summary of a rotated file beside it, before it is
// compressed. Failing only costs query speed: it is logged and ignored.
func (j *janitor) writeIndex(p rotatedFile) {
	path := filepath.Join(filepath.Dir(p.path), index.Name(filepath.Base(p.path)))
	if p.sum == nil {
		// Lines the writer did not see (a resumed or crashed file): read it.
		if _, err := os.Stat(path); err == nil {
			return
		}
		if p.sum = rebuildSummary(p.path); p.sum == nil {
			return
		}
	}
	// The checksum lets a reader tell that the idx describes X.log.gz (its
	// gzip trailer holds the same CRC-32 and size) without decompressing.
	size, crc, tail, err := index.Checksum(p.path)
	if err != nil {
		return
	}
	if !p.sum.Matches(size, tail) {
		j.w.log.WithField("file", p.path).Warn("audit: a rotated file does not match its summary; no index written")
		return
	}
	p.sum.CRC32 = crc
	if err := index.Write(path, p.sum); err != nil {
		j.w.log.WithError(err).WithField("file", path).Warn("audit: cannot write a rotated file's index")
	}
}

// removeOrphanIndexes removes idx files whose rotated file is gone (a crash
// between deleting a file and its idx).
func (j *janitor) removeOrphanIndexes(ents []os.DirEntry) {
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	for _, e := range ents {
		n := e.Name()
		base, ok := strings.CutSuffix(n, index.Ext)
		if !ok || !strings.HasPrefix(n, "audit-") {
			continue
		}
		if !names[base+".log"] && !names[base+".log.gz"] {
			_ = os.Remove(filepath.Join(j.w.o.Dir, n))
		}
	}
}

func (j *janitor) compress(path string) {
	if err := compress(path, j.stop); err != nil && !os.IsNotExist(err) {
		select {
		case <-j.stop:
		default:
			j.w.log.WithError(err).WithField("file", path).Warn("audit: cannot compress a rotated file")
		}
	}
}

func (j *janitor) retain() {
	w := j.w
	plan, err := retentionPlan(w.o.Dir, w.now(), w.o.Retain, w.o.RetainBytes, w.keepFrom.Load())
	if err != nil {
		return
	}
	for _, p := range plan {
		e := Event{Time: w.now(), Event: KindAuditRetention, Severity: Notice, Stage: StageSystem,
			Reason: p.reason, Detail: p.detail()}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := w.recordDurably(ctx, e)
		cancel()
		if err != nil {
			return // not recorded: keep the file
		}
		if err := os.Remove(p.f.Path); err != nil {
			w.log.WithError(err).WithField("file", p.f.Path).Warn("audit: cannot delete an expired file")
			continue
		}
		_ = os.Remove(filepath.Join(w.o.Dir, index.Name(p.f.Name)))
	}
}

// checkpointer signs checkpoints and appends them to the audit directory's
// checkpoints.log and, if configured, to a second directory, from its own
// goroutine: a hanging off-host mount never stalls the writer.
type checkpointer struct {
	w       *Writer
	priv    ed25519.PrivateKey
	paths   []string
	req     chan chain.Checkpoint
	done    chan struct{}
	once    sync.Once
	written atomic.Uint64
	errors  atomic.Uint64
	warned  []bool
}

func newCheckpointer(w *Writer, priv ed25519.PrivateKey) *checkpointer {
	c := &checkpointer{w: w, priv: priv, req: make(chan chain.Checkpoint, 1), done: make(chan struct{}),
		paths: []string{filepath.Join(w.o.Dir, chain.CheckpointsName)}}
	if w.o.CheckpointDir != "" {
		c.paths = append(c.paths, filepath.Join(w.o.CheckpointDir, chain.CheckpointsName))
	}
	c.warned = make([]bool, len(c.paths))
	go c.run()
	return c
}

// submit replaces any checkpoint not yet written; only the writer
// goroutine (or Open, before it starts) calls it.
func (c *checkpointer) submit(cp chain.Checkpoint) {
	select {
	case <-c.req:
	default:
	}
	c.req <- cp
}

func (c *checkpointer) close(timeout time.Duration) {
	c.once.Do(func() { close(c.req) })
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.w.log.Warn("audit: the last checkpoint was not written within " + timeout.String())
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	for cp := range c.req {
		cp.Sign(c.priv)
		line := cp.Line()
		for i, p := range c.paths {
			if err := appendSync(p, line); err != nil {
				c.errors.Add(1)
				if !c.warned[i] {
					c.warned[i] = true
					c.w.log.WithError(err).WithField("file", p).Error("audit: cannot write a checkpoint")
				}
				continue
			}
			c.warned[i] = false
		}
		c.written.Add(1)
	}
}

func appendSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
