package audit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Options configure a Writer.
type Options struct {
	Dir         string        // audit directory (created 0700); the file is Dir/audit.log (0600)
	KeyFile     string        // reserved for the hash chain key
	Node        string        // node name written into every event
	Fsync       time.Duration // fsync interval; 0 means after every event
	RotateBytes int64         // reserved for rotation
	Retain      time.Duration // reserved for retention
	FailClosed  bool          // Healthy reports false while writes fail
	QueueSize   int           // bounded queue between Emit and the file (default 8192 events, ~2 MiB)
	Log         *logrus.Logger
}

// Writer writes events as logrus JSON lines from one goroutine fed by a
// bounded queue, so Emit never blocks on I/O. It is safe for use by
// multiple goroutines.
type Writer struct {
	o       Options
	q       chan Event
	done    chan struct{}
	closing sync.Once
	closed  atomic.Bool

	f   *os.File
	buf *bufio.Writer
	log *logrus.Logger

	seq     atomic.Uint64
	written atomic.Uint64
	dropped atomic.Uint64
	failing atomic.Bool
	durable atomic.Uint64
	errMu   sync.Mutex
	lastErr error
}

// Open creates the directory and file and starts the writer goroutine.
func Open(o Options) (*Writer, error) {
	if o.QueueSize <= 0 {
		o.QueueSize = 8192
	}
	if o.Fsync < 0 {
		o.Fsync = 0
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit dir: %w", err)
	}
	_ = os.Chmod(o.Dir, 0o700)
	path := filepath.Join(o.Dir, "audit.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit file: %w", err)
	}
	w := &Writer{o: o, q: make(chan Event, o.QueueSize), done: make(chan struct{}), f: f,
		buf: bufio.NewWriterSize(f, 64<<10)}
	w.log = logrus.New()
	w.log.SetOutput(w.buf)
	w.log.SetFormatter(&logrus.JSONFormatter{
		TimestampFormat:   time.RFC3339Nano,
		DisableHTMLEscape: true,
		FieldMap:          logrus.FieldMap{logrus.FieldKeyTime: "time", logrus.FieldKeyMsg: "event", logrus.FieldKeyLevel: "level"},
	})
	go w.run()
	return w, nil
}

// Emit queues e. When the queue is full the event is counted as dropped and
// an audit_dropped event reports the count as soon as there is room.
func (w *Writer) Emit(e Event) {
	if w.closed.Load() {
		w.dropped.Add(1)
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	select {
	case w.q <- e:
	default:
		w.dropped.Add(1)
	}
}

// Healthy is false while writes fail.
func (w *Writer) Healthy() bool { return !w.failing.Load() }

// LastDurableSeq is the highest sequence number known fsynced.
func (w *Writer) LastDurableSeq() uint64 { return w.durable.Load() }

// Stats counts what the writer did.
type Stats struct {
	Written uint64 `json:"written"`
	Dropped uint64 `json:"dropped"`
	Queued  int    `json:"queued"`
}

// Stats returns current counters.
func (w *Writer) Stats() Stats {
	return Stats{Written: w.written.Load(), Dropped: w.dropped.Load(), Queued: len(w.q)}
}

// Close writes every queued event, fsyncs and closes the file.
func (w *Writer) Close() error {
	w.closing.Do(func() {
		w.closed.Store(true)
		close(w.q)
	})
	<-w.done
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.lastErr
}

func (w *Writer) run() {
	defer close(w.done)
	interval := w.o.Fsync
	if interval == 0 {
		interval = time.Hour // every event is synced below
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	reported := uint64(0)
	for {
		select {
		case e, ok := <-w.q:
			if !ok {
				w.finish()
				return
			}
			if d := w.dropped.Load(); d > reported {
				w.write(Event{Time: time.Now(), Event: "audit_dropped", Severity: Critical, Stage: StageSystem,
					Count: int64(d - reported), Detail: "events lost: the audit queue was full"})
				reported = d
			}
			w.write(e)
			if !w.drain() {
				w.finish()
				return
			}
			if w.o.Fsync == 0 {
				w.sync()
			} else if w.buf.Buffered() > 32<<10 {
				w.flush()
			}
		case <-t.C:
			w.sync()
		}
	}
}

// drain writes what is already queued (up to a batch) before the disk is
// touched again; false once the queue is closed.
func (w *Writer) drain() bool {
	for n := 0; n < 1024; n++ {
		select {
		case e, ok := <-w.q:
			if !ok {
				return false
			}
			w.write(e)
		default:
			return true
		}
	}
	return true
}

// finish makes everything written durable and closes the file.
func (w *Writer) finish() {
	w.sync()
	if err := w.f.Close(); err != nil {
		w.setErr(err)
	}
}

func (w *Writer) write(e Event) {
	seq := w.seq.Add(1)
	f := logrus.Fields{"seq": seq, "severity": e.Severity.String()}
	if w.o.Node != "" {
		f["node"] = w.o.Node
	}
	add := func(k, v string) {
		if v != "" {
			f[k] = Cap(v)
		}
	}
	add("ip", e.IP)
	add("peer_ip", e.PeerIP)
	add("counted_prefix", e.CountedPrefix)
	add("stage", string(e.Stage))
	add("proto", e.Proto)
	add("userId", e.UserID)
	add("topic", e.Topic)
	add("reason", e.Reason)
	add("detail", e.Detail)
	add("token_fp", e.TokenFP)
	add("actor", e.Actor)
	if e.Conn != 0 {
		f["conn"] = e.Conn
	}
	if e.Code != 0 {
		f["code"] = e.Code
	}
	if e.Event == "conn_close" {
		f["duration_ms"] = e.DurationMS
	}
	if e.Count != 0 {
		f["count"] = e.Count
	}
	w.log.WithFields(f).WithTime(e.Time.UTC()).Info(e.Event)
	w.written.Add(1)
}

func (w *Writer) flush() {
	if err := w.buf.Flush(); err != nil {
		w.setErr(err)
		return
	}
}

func (w *Writer) sync() {
	if err := w.buf.Flush(); err != nil {
		w.setErr(err)
		return
	}
	if err := w.f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		w.setErr(err)
		return
	}
	w.durable.Store(w.seq.Load())
	w.failing.Store(false)
}

func (w *Writer) setErr(err error) {
	w.failing.Store(true)
	w.errMu.Lock()
	w.lastErr = fmt.Errorf("audit write: %w", err)
	w.errMu.Unlock()
	w.o.Log.WithError(err).Error("audit trail write failed")
}
