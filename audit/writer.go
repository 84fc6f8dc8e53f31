package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/index"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// FailurePolicy says what the gateway does while the audit trail cannot be
// written (config audit.on_failure).
type FailurePolicy uint8

const (
	// FailOpen keeps serving: what cannot be written is counted and an
	// audit_dropped event (critical) reports the count as soon as it can.
	FailOpen FailurePolicy = iota
	// FailClosed makes Healthy report false until the sink has recovered,
	// so the gateway refuses new connections meanwhile.
	FailClosed
)

// String returns the config spelling of p.
func (p FailurePolicy) String() string {
	if p == FailClosed {
		return "fail_closed"
	}
	return "fail_open"
}

// ParseFailurePolicy parses "fail_open" or "fail_closed" ("" is fail_open).
func ParseFailurePolicy(s string) (FailurePolicy, error) {
	switch s {
	case "", "fail_open":
		return FailOpen, nil
	case "fail_closed":
		return FailClosed, nil
	}
	return FailOpen, fmt.Errorf("audit on_failure %q: want fail_open or fail_closed", s)
}

// FsyncAlways as Options.Fsync makes every batch of events durable before
// the next batch is written.
const FsyncAlways time.Duration = -1

// ParseFsync parses the config audit.fsync: "always" or a positive duration.
func ParseFsync(s string) (time.Duration, error) {
	if s == "always" {
		return FsyncAlways, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("audit fsync %q: want \"always\" or a positive duration such as \"1s\"", s)
	}
	return d, nil
}

// Defaults for zero Options fields.
const (
	DefaultFsync           = time.Second
	DefaultRotateBytes     = 100 << 20
	DefaultRetain          = 90 * 24 * time.Hour
	DefaultRetainBytes     = 10 << 30
	DefaultQueueSize       = 8192
	DefaultCheckpointEvery = time.Minute
	DefaultFoldAfter       = 5
)

// DefaultDurableTimeout bounds how long EmitDurable waits for the disk
// when its context has no earlier deadline.
const DefaultDurableTimeout = 5 * time.Second

// ErrNotDurable is wrapped by the error of EmitDurable when the event is not
// known to be on disk: the admin API then answers 503 audit_unavailable.
var ErrNotDurable = errors.New("audit: event not known to be on disk")

// maxPending bounds the bytes held in memory while the disk refuses writes;
// beyond it events are dropped (and counted).
const maxPending = 1 << 20

// flushAt is the buffered size that triggers a write to the file.
const flushAt = 64 << 10

// Options configure a Writer. Zero fields mean the defaults above.
type Options struct {
	Dir         string        // audit directory (created 0700); the active file is Dir/audit.log (0600)
	KeyFile     string        // HMAC key of the chain (hex, 0600, created with 32 random bytes); default audit.key beside Dir
	Node        string        // node name written into every event
	Fsync       time.Duration // interval between fsyncs, or FsyncAlways
	RotateBytes int64         // rotate the active file when it reaches this size, in bytes (also at UTC midnight)
	Retain      time.Duration // delete rotated files older than this
	RetainBytes int64         // delete the oldest rotated files while all files together exceed this, in bytes
	OnFailure   FailurePolicy
	QueueSize   int // bounded queue between Emit and the file, in events (~300 bytes each)

	// CheckpointKeyFile is the Ed25519 key signing checkpoints (hex seed,
	// 0600, created if missing, public half in the same name with ".pub"
	// instead of ".key"); default audit-checkpoint.key beside KeyFile.
	CheckpointKeyFile string
	// CheckpointDir, if set, receives a copy of every checkpoint in
	// CheckpointDir/checkpoints.log: put it on another host (one per node).
	CheckpointDir   string
	CheckpointEvery time.Duration // interval between checkpoints, also when idle
	FoldAfter       int           // identical rejections per key and second written verbatim before folding

	Log *logrus.Logger

	fs    fileSystem       // tests inject faults here
	clock func() time.Time // tests drive time here
}

// PublicKeyFile returns the path of the checkpoint public key for a
// checkpoint key file.
func PublicKeyFile(checkpointKeyFile string) string {
	return strings.TrimSuffix(checkpointKeyFile, ".key") + ".pub"
}

// Writer writes events as sealed logrus JSON lines (see package chain) from
// one goroutine fed by a bounded queue, so Emit never blocks on I/O. It
// rotates, compresses and deletes files, and signs checkpoints, in the
// background. It is safe for use by multiple goroutines.
type Writer struct {
	o    Options
	fs   fileSystem
	now  func() time.Time
	log  *logrus.Logger
	boot string

	q *Queue
	// busyAt is when the writer last took a batch of more than
	// smallBatch events: trimAfter later it lets go of the memory the
	// burst grew. Writer goroutine only.
	busyAt   time.Time
	stop     chan struct{}
	done     chan struct{}
	closing  sync.Once
	closed   atomic.Bool
	inflight atomic.Int64
	fold     *folder

	sysMu    sync.Mutex
	sys      []sysEvent
	sysReady chan struct{}

	janitor *janitor
	cp      *checkpointer

	// Counters, readable from any goroutine.
	written    atomic.Uint64
	dropped    atomic.Uint64
	reported   atomic.Uint64 // dropped events already reported by audit_dropped
	summarized atomic.Uint64
	rotations  atomic.Uint64
	durable    atomic.Uint64
	failing    atomic.Bool
	keepFrom   atomic.Uint64 // first seq of the active file: never deleted by retention
	errMu      sync.Mutex
	lastErr    error

	// Owned by the writer goroutine.
	f           file
	old         file // the previous file while a new active file could not be created
	oldName     string
	buf         []byte
	fileBytes   int64
	fileFirst   uint64
	fileStart   time.Time
	seq         uint64
	prev        []byte
	syncedSeq   uint64
	syncedMAC   []byte
	syncedCount uint64
	lastSync    time.Time
	lastCP      time.Time
	retryAt     time.Time // next attempt after a failed write or rotation
	rotateFail  bool
	sealer      *chain.Sealer
	idx         *index.Builder // summary of the active file, written beside it once rotated
	lf          *lineFormatter // for the writer's own events
	macBuf      []byte
	free        chan *batch
	tmpl        []byte
	workers     []*formatWorker
	boots       uint64 // lines written by this boot
}

// sysEvent is an event written by the writer goroutine itself, outside the
// queue, whose writer waits for it to be on disk.
type sysEvent struct {
	e    Event
	done chan error // receives nil once the line is fsynced, or why not; capacity 1
}

// Open creates the directory, loads or creates the keys, resumes the chain
// from the last line of the existing trail (repairing a tail left incomplete
// by a crash, see resume), writes a header line and starts the writer
// goroutine.
func Open(o Options) (*Writer, error) {
	if o.Dir == "" {
		return nil, errors.New("audit: no directory")
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Fsync == 0 || o.Fsync < FsyncAlways {
		o.Fsync = DefaultFsync
	}
	if o.RotateBytes <= 0 {
		o.RotateBytes = DefaultRotateBytes
	}
	if o.Retain <= 0 {
		o.Retain = DefaultRetain
	}
	if o.RetainBytes <= 0 {
		o.RetainBytes = DefaultRetainBytes
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.FoldAfter <= 0 {
		o.FoldAfter = DefaultFoldAfter
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.fs == nil {
		o.fs = osFS{}
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	if o.KeyFile == "" {
		o.KeyFile = filepath.Join(filepath.Dir(filepath.Clean(o.Dir)), "audit.key")
	}
	if o.CheckpointKeyFile == "" {
		o.CheckpointKeyFile = filepath.Join(filepath.Dir(o.KeyFile), "audit-checkpoint.key")
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit dir: %w", err)
	}
	_ = os.Chmod(o.Dir, 0o700)
	key, err := chain.LoadOrCreateKey(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	priv, err := chain.LoadOrCreateSigner(o.CheckpointKeyFile, PublicKeyFile(o.CheckpointKeyFile))
	if err != nil {
		return nil, fmt.Errorf("audit checkpoint key: %w", err)
	}
	var boot [8]byte
	_, _ = rand.Read(boot[:])
	w := &Writer{
		o: o, fs: o.fs, now: o.clock, log: o.Log, boot: hex.EncodeToString(boot[:]),
		q: NewQueue(o.QueueSize), stop: make(chan struct{}), done: make(chan struct{}),
		sysReady: make(chan struct{}, 1), fold: newFolder(o.FoldAfter),
		sealer: chain.NewSealer(key),
	}
	w.lf = newLineFormatter(o.Node, w.boot)
	if err := w.resume(); err != nil {
		return nil, err
	}
	w.cp = newCheckpointer(w, priv)
	w.checkpoint(w.now())
	w.janitor = newJanitor(w)
	n := runtime.GOMAXPROCS(0)
	if n > 4 {
		n = 4
	}
	for i := 0; i < n; i++ {
		fw := &formatWorker{in: make(chan *batch, 2), out: make(chan *batch, 2)}
		w.workers = append(w.workers, fw)
		go fw.run(newLineFormatter(o.Node, w.boot))
	}
	w.free = make(chan *batch, 4*len(w.workers)+4)
	go w.dispatch()
	go w.run()
	return w, nil
}

// resume continues the chain of the existing trail and writes a header:
//
//   - no trail: a new_trail header (prev = 64 zeros, seq 1);
//   - audit.log ends with well-formed lines: a resumed header;
//   - audit.log ends with bytes that are not a complete sealed line (a crash
//     mid-write, or a disk that lost a block): they are kept where they are,
//     terminated by a newline, and a repaired header follows them whose
//     count is their length including that newline, and whose prev is the
//     mac of the last complete line; `audit verify` accepts exactly that;
//   - audit.log missing or without a complete line: the chain continues
//     from the newest rotated file, and the header names it.
func (w *Writer) resume() error {
	active := filepath.Join(w.o.Dir, chain.ActiveName)
	files, err := chain.ListTrail(w.o.Dir)
	if err != nil {
		return fmt.Errorf("audit dir: %w", err)
	}
	var ts tailState
	if st, err := os.Stat(active); err == nil && st.Size() > 0 {
		if ts, err = scanTail(active); err != nil {
			return fmt.Errorf("read %s: %w", active, err)
		}
	}
	w.prev = bytes.Clone(chain.ZeroMAC)
	hdr := Event{Event: KindAuditHeader, Severity: Notice, Stage: StageSystem, Reason: reason.TrailNew,
		Detail: "new audit trail"}
	var prevFile string
	if ts.lines {
		w.seq, w.prev = ts.last.seq, ts.last.mac
		w.fileFirst, w.fileStart = ts.first.seq, ts.first.time
		hdr.Reason, hdr.Detail = reason.TrailResumed, "writer restarted"
	} else {
		var rotated []chain.File
		for _, f := range files {
			if !f.Active {
				rotated = append(rotated, f)
			}
		}
		for i := len(rotated) - 1; i >= 0; i-- {
			li, ok, err := lastOfFile(rotated[i])
			if err != nil {
				return fmt.Errorf("read %s: %w", rotated[i].Path, err)
			}
			if ok {
				w.seq, w.prev = li.seq, li.mac
				prevFile = rotated[i].Name
				hdr.Reason, hdr.Detail = reason.TrailRotated, chain.PreviousDetail(prevFile, li.mac)
				break
			}
		}
	}
	f, err := w.fs.OpenFile(active, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	_ = os.Chmod(active, 0o600)
	w.f, w.fileBytes = f, ts.size
	w.idx = index.NewBuilder()
	// Lines written before this start are not in the summary: once the
	// file is rotated the janitor builds its idx by reading it instead.
	w.idx.Incomplete = ts.size > 0
	if !ts.lines {
		w.fileFirst, w.fileStart = w.seq+1, w.now()
	}
	if ts.garbage > 0 {
		n := ts.garbage
		if last, err := lastByte(active, ts.size); err == nil && last != '\n' {
			w.buf = append(w.buf, '\n')
			n++
		}
		hdr.Reason, hdr.Count = reason.TrailRepaired, n
		hdr.Detail = fmt.Sprintf("writer restarted after a crash: %d bytes after seq %d were not a complete line and are kept above this one", n, w.seq)
		if prevFile != "" {
			hdr.Detail += "; " + chain.PreviousDetail(prevFile, w.prev)
		}
		w.log.WithField("bytes", n).Warn("audit trail: repaired an incomplete last line left by a crash")
	}
	hdr.Time = w.now()
	w.writeEvent(hdr)
	if !w.sync() {
		f.Close()
		return fmt.Errorf("write audit file: %w", w.Err())
	}
	w.keepFrom.Store(w.fileFirst)
	_ = w.fs.SyncDir(w.o.Dir)
	return nil
}

func lastByte(path string, size int64) (byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [1]byte
	_, err = f.ReadAt(b[:], size-1)
	return b[0], err
}

// Emit queues e; it never blocks. Identical warning-level rejections beyond
// the first few per second are folded into a summary. When the queue is
// full the event is counted as dropped and an audit_dropped event reports
// the count as soon as it can be written.
func (w *Writer) Emit(e Event) {
	w.inflight.Add(1)
	defer w.inflight.Add(-1)
	if w.closed.Load() {
		w.dropped.Add(1)
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if foldable(&e) && w.fold.add(&e) {
		w.summarized.Add(1)
		return
	}
	if !w.q.Push(e) {
		w.dropped.Add(1)
	}
}

// Healthy reports whether the gateway may accept new connections as far as
// the audit trail is concerned: always under FailOpen; under FailClosed,
// false while writes fail or events were lost and not yet reported.
func (w *Writer) Healthy() bool {
	if w.o.OnFailure == FailOpen {
		return true
	}
	return !w.failing.Load() && w.dropped.Load() == w.reported.Load()
}

// Failing reports whether writes to the trail currently fail, whatever the policy.
func (w *Writer) Failing() bool { return w.failing.Load() }

// LastDurableSeq is the highest sequence number known fsynced.
func (w *Writer) LastDurableSeq() uint64 { return w.durable.Load() }

// Boot is the random id of this writer, written into every line.
func (w *Writer) Boot() string { return w.boot }

// Err returns the last write error, if any.
func (w *Writer) Err() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.lastErr
}

// Stats counts what the writer did, for /v1/stats.
type Stats struct {
	Written          uint64 `json:"written"`    // lines written (including headers and summaries)
	Dropped          uint64 `json:"dropped"`    // events lost: queue full, or disk failing
	Summarized       uint64 `json:"summarized"` // events folded into summaries (counted there)
	Rotations        uint64 `json:"rotations"`
	Queued           int    `json:"queued"`
	LastDurableSeq   uint64 `json:"last_durable_seq"`
	Failing          bool   `json:"failing"`
	Checkpoints      uint64 `json:"checkpoints"`
	CheckpointErrors uint64 `json:"checkpoint_errors"`
}

// Stats returns current counters.
func (w *Writer) Stats() Stats {
	return Stats{Written: w.written.Load(), Dropped: w.dropped.Load(), Summarized: w.summarized.Load(),
		Rotations: w.rotations.Load(), Queued: w.q.Len(), LastDurableSeq: w.durable.Load(),
		Failing: w.failing.Load(), Checkpoints: w.cp.written.Load(), CheckpointErrors: w.cp.errors.Load()}
}

// Close writes every queued event and pending summary, fsyncs, writes a
// final checkpoint and closes the file. Background compression stops and
// resumes at the next Open.
func (w *Writer) Close() error {
	w.closing.Do(func() {
		w.closed.Store(true)
		for w.inflight.Load() != 0 {
			runtime.Gosched()
		}
		close(w.stop)
	})
	<-w.done
	w.janitor.close()
	w.cp.close(5 * time.Second)
	return w.Err()
}

// EmitDurable writes e and waits until its line is fsynced, whatever
// Options.Fsync says (see Durable). The event skips the queue and folding:
// the writer goroutine formats and seals it itself, and fsyncs at once
// together with whatever else is buffered. It waits at most until ctx ends
// or DefaultDurableTimeout passes; the error then wraps ErrNotDurable, and
// the line may still be written later. Safe for use by multiple goroutines.
func (w *Writer) EmitDurable(ctx context.Context, e Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultDurableTimeout)
	defer cancel()
	return w.recordDurably(ctx, e)
}

// recordDurably writes e through the writer goroutine and waits until it is
// fsynced; an error wrapping ErrNotDurable if that did not happen (closed,
// failing, or ctx ended first).
func (w *Writer) recordDurably(ctx context.Context, e Event) error {
	se := sysEvent{e: e, done: make(chan error, 1)}
	w.inflight.Add(1)
	if w.closed.Load() {
		w.inflight.Add(-1)
		return fmt.Errorf("%w: the audit writer is closed", ErrNotDurable)
	}
	w.sysMu.Lock()
	w.sys = append(w.sys, se)
	w.sysMu.Unlock()
	w.inflight.Add(-1) // Close waits for this: finish writes w.sys
	select {
	case w.sysReady <- struct{}{}:
	default:
	}
	select {
	case err := <-se.done:
		return err
	case <-w.done:
		select {
		case err := <-se.done:
			return err
		default:
			return fmt.Errorf("%w: the audit writer stopped", ErrNotDurable)
		}
	case <-ctx.Done():
		return fmt.Errorf("%w: not fsynced in time: %w", ErrNotDurable, context.Cause(ctx))
	}
}

// dispatchLinger is how long the dispatcher lets events gather after the
// queue signals that it is no longer empty. Waking it for every event that
// finds the queue drained cost a thread wake-up per event or two during a
// mass reconnect, and each of those preempted an event loop; with the
// linger, a burst is taken in batches at most ~500 times a second, and a
// line reaches the file at most this much later.
const dispatchLinger = 2 * time.Millisecond

// dispatch hands batches of queued events to the format workers in
// round-robin order; run takes them back in the same order. On stop it
// drains the queue and closes the workers.
func (w *Writer) dispatch() {
	k := 0
	free := w.free
	send := func(b *batch) {
		w.workers[k%len(w.workers)].in <- b
		k++
	}
	get := func() *batch {
		select {
		case b := <-free:
			return b
		default:
			// Batches grow with the backlog they carry: a quiet gateway
			// keeps small ones.
			return &batch{}
		}
	}
	// drain sends what is queued in batches of at most maxBatch events.
	drain := func() {
		for {
			b := get()
			if b.evs = w.q.Pop(b.evs, maxBatch); len(b.evs) == 0 {
				select {
				case free <- b:
				default:
				}
				return
			}
			send(b)
		}
	}
	for {
		select {
		case <-w.q.Ready():
			// Let the burst gather first: the queue signals only when it
			// goes from empty to not empty, so while this goroutine waits
			// here the event loops' Emits wake nobody.
			time.Sleep(dispatchLinger)
			drain()
		case <-w.stop:
			drain()
			for _, fw := range w.workers {
				close(fw.in)
			}
			return
		}
	}
}

func (w *Writer) run() {
	defer close(w.done)
	tick := 100 * time.Millisecond
	if w.o.Fsync > 0 && w.o.Fsync < tick {
		tick = w.o.Fsync
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	j := 0
	for {
		select {
		case b, ok := <-w.workers[j%len(w.workers)].out:
			if !ok {
				w.finish()
				return
			}
			j++
			start := 0
			for i, end := range b.ends {
				w.reportDropped()
				w.seal(b.slab[start:end], &b.evs[i], &b.hs[i])
				start = end
			}
			now := w.now()
			if len(b.evs) > smallBatch {
				w.busyAt = now
			}
			b.reset(now.Sub(w.busyAt) >= trimAfter)
			select {
			case w.free <- b:
			default:
			}
			w.afterBatch()
		case <-w.sysReady:
			w.writeSys()
		case <-t.C:
			w.housekeep(w.now())
		}
	}
}

// finish writes what is left, fsyncs, writes the last checkpoint and closes.
func (w *Writer) finish() {
	w.writeSys()
	for _, s := range w.fold.take(w.now(), true) {
		w.record(s)
	}
	w.reportDropped()
	w.sync()
	w.checkpoint(w.now())
	if w.old != nil {
		w.old.Close()
	}
	if err := w.f.Close(); err != nil {
		w.setErr(err)
	}
}

// record writes e, preceded by an audit_dropped line if events were lost.
func (w *Writer) record(e Event) {
	w.reportDropped()
	w.writeEvent(e)
}

func (w *Writer) reportDropped() {
	d := w.dropped.Load()
	r := w.reported.Load()
	if d == r || len(w.buf) >= maxPending {
		return
	}
	if w.writeEvent(Event{Time: w.now(), Event: KindAuditDropped, Severity: Critical, Stage: StageSystem,
		Count: int64(d - r), Detail: "events lost: the audit queue was full or the disk refused writes"}) {
		w.reported.Store(d)
	}
}

func (w *Writer) afterBatch() {
	if w.failing.Load() && w.now().Before(w.retryAt) {
		return
	}
	if w.o.Fsync == FsyncAlways {
		w.sync()
	} else if len(w.buf) >= flushAt && !w.failing.Load() {
		w.flush()
	}
}

func (w *Writer) writeSys() {
	w.sysMu.Lock()
	evs := w.sys
	w.sys = nil
	w.sysMu.Unlock()
	if len(evs) == 0 {
		return
	}
	written := make([]bool, len(evs))
	for i, se := range evs {
		w.reportDropped()
		written[i] = w.writeEvent(se.e)
	}
	synced := w.sync()
	for i, se := range evs {
		switch {
		case !written[i]:
			se.done <- w.notDurable("dropped: the disk has refused writes for too long")
		case !synced:
			se.done <- w.notDurable("not fsynced")
		default:
			se.done <- nil
		}
	}
}

// notDurable is the error of an event that could not be made durable.
func (w *Writer) notDurable(why string) error {
	if err := w.Err(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNotDurable, why, err)
	}
	return fmt.Errorf("%w: %s", ErrNotDurable, why)
}

func (w *Writer) housekeep(now time.Time) {
	if now.Sub(w.busyAt) >= trimAfter {
		w.q.Trim()
	}
	for _, s := range w.fold.take(now, false) {
		w.record(s)
	}
	w.reportDropped()
	if w.failing.Load() || w.rotateFail {
		if now.Before(w.retryAt) {
			return
		}
		if w.rotateFail {
			w.rotate(now)
		}
	}
	if w.o.Fsync > 0 && now.Sub(w.lastSync) >= w.o.Fsync && (len(w.buf) > 0 || w.syncedSeq != w.seq) {
		w.sync()
	} else if w.failing.Load() {
		w.sync()
	}
	if !sameDay(now, w.fileStart) && !w.rotateFail {
		w.rotate(now)
	}
	if now.Sub(w.lastCP) >= w.o.CheckpointEvery {
		w.sync()
		w.checkpoint(now)
	}
}

func sameDay(a, b time.Time) bool {
	ay, am, ad := a.UTC().Date()
	by, bm, bd := b.UTC().Date()
	return ay == by && am == bm && ad == bd
}

// writeEvent formats, seals and buffers e on the writer goroutine.
func (w *Writer) writeEvent(e Event) bool {
	w.maybeRotate() // before w.tmpl is filled: rotating writes a header through it
	w.tmpl = w.lf.template(w.tmpl[:0], &e)
	var h index.Hashes
	hashesOf(&h, &e)
	return w.seal(w.tmpl, &e, &h)
}

// seal sets a template's seq and prev, seals it and buffers the line;
// false if it was dropped because the disk has refused writes for longer
// than the buffer holds. t is modified.
func (w *Writer) seal(t []byte, e *Event, h *index.Hashes) bool {
	if len(w.buf) >= flushAt && !w.failing.Load() {
		w.flush()
	}
	if len(w.buf) >= maxPending {
		w.dropped.Add(1)
		return false
	}
	w.maybeRotate()
	seq := w.seq + 1
	start := len(w.buf)
	w.buf = fill(w.buf, t, seq, w.prev)
	mac := w.sealer.MAC(w.macBuf[:0], w.prev, w.buf[start:])
	w.macBuf = mac
	w.buf = chain.Seal(w.buf[:start], w.buf[start:], mac)
	w.seq = seq
	w.prev = append(w.prev[:0], mac...)
	w.fileBytes += int64(len(w.buf) - start)
	w.indexLine(w.buf[start:], e, h)
	w.boots++
	w.written.Add(1)
	return true
}

// maybeRotate rotates when the active file has reached RotateBytes.
func (w *Writer) maybeRotate() {
	if w.fileBytes >= w.o.RotateBytes && w.seq >= w.fileFirst && !w.rotateFail && !w.failing.Load() {
		w.rotate(w.now())
	}
}

// flush writes the buffer to the file, keeping what was not written (a
// partial write on a full disk is completed by the next attempt).
func (w *Writer) flush() bool {
	for len(w.buf) > 0 {
		n, err := w.f.Write(w.buf)
		w.buf = w.buf[:copy(w.buf, w.buf[n:])]
		if err != nil {
			w.setErr(err)
			return false
		}
	}
	return true
}

// sync flushes and fsyncs; on success the durable seq advances and a
// failing sink is marked recovered.
func (w *Writer) sync() bool {
	w.lastSync = w.now()
	if !w.flush() {
		return false
	}
	if err := w.f.Sync(); err != nil {
		w.setErr(err)
		return false
	}
	w.syncedSeq, w.syncedMAC, w.syncedCount = w.seq, append(w.syncedMAC[:0], w.prev...), w.boots
	w.durable.Store(w.seq)
	if w.failing.Load() {
		w.failing.Store(false)
		w.log.Warn("audit trail writes recovered")
	}
	return true
}

func (w *Writer) setErr(err error) {
	if !w.failing.Swap(true) {
		w.log.WithError(err).Error("audit trail write failed")
	}
	w.retryAt = w.now().Add(time.Second)
	w.errMu.Lock()
	w.lastErr = fmt.Errorf("audit write: %w", err)
	w.errMu.Unlock()
}

// rotate closes the active file under its rotated name and starts a new
// one whose header names it. If the new file cannot be created, writing
// continues into the old one (now under its rotated name) and the rotation
// is retried; nothing is lost and the chain is unchanged.
func (w *Writer) rotate(now time.Time) {
	if w.old == nil {
		if !w.sync() {
			return
		}
		name := chain.RotatedName(w.fileStart, w.fileFirst)
		if err := w.fs.Rename(filepath.Join(w.o.Dir, chain.ActiveName), filepath.Join(w.o.Dir, name)); err != nil {
			w.rotateFailed(err)
			return
		}
		w.old, w.oldName = w.f, name
	}
	f, err := w.fs.OpenFile(filepath.Join(w.o.Dir, chain.ActiveName), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		w.rotateFailed(err)
		return
	}
	if !w.sync() { // everything so far belongs to the old file
		f.Close()
		return
	}
	_ = w.old.Close()
	old := w.oldName
	var sum *index.Summary
	if !w.idx.Incomplete && w.idx.Lines() > 0 && w.idx.FirstSeq() == w.fileFirst {
		sum = w.idx.Finish(old, string(w.prev))
	}
	w.idx = index.NewBuilder()
	w.f, w.old, w.oldName = f, nil, ""
	w.rotateFail = false
	_ = w.fs.SyncDir(w.o.Dir)
	w.fileBytes, w.fileFirst, w.fileStart = 0, w.seq+1, now
	w.keepFrom.Store(w.fileFirst)
	w.rotations.Add(1)
	w.writeEvent(Event{Time: now, Event: KindAuditHeader, Severity: Notice, Stage: StageSystem,
		Reason: reason.TrailRotated, Detail: chain.PreviousDetail(old, w.prev)})
	w.janitor.rotated(filepath.Join(w.o.Dir, old), sum)
}

func (w *Writer) rotateFailed(err error) {
	if !w.rotateFail {
		w.log.WithError(err).Error("audit trail rotation failed; still writing to the current file, retrying")
	}
	w.rotateFail = true
	w.retryAt = w.now().Add(time.Second)
}

// checkpoint hands a signed checkpoint of the durable state to the
// checkpointer.
func (w *Writer) checkpoint(now time.Time) {
	w.lastCP = now
	if w.syncedMAC == nil {
		return
	}
	w.cp.submit(chain.Checkpoint{Time: now, Node: w.o.Node, Boot: w.boot, Seq: w.syncedSeq,
		MAC: string(w.syncedMAC), Count: w.syncedCount})
}
