package audit_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/query"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// `audit query --count-by` counts a folded mass close as the closes it
// stands for: conn_close and client_closed count every close, though the
// trail holds a few lines.
func TestMassCloseCountBy(t *testing.T) {
	tt := audit.NewTestTrail(t)
	w, err := audit.Open(tt.Opts())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now()
	const n = 3000
	for i := 0; i < n; i++ {
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		w.Emit(audit.Event{Time: base.Add(time.Duration(i) * 50 * time.Microsecond), Event: audit.KindConnClose,
			Severity: audit.Info, Stage: audit.StageClose, Reason: reason.ClientClosed, Code: 1006, IP: ip,
			CountedPrefix: netip.PrefixFrom(ip, 32), Conn: uint64(i + 1)})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r := runQuery(t, tt.Dir, query.Filter{}, false)
	closeLines := 0
	for _, l := range r.lines {
		if strings.Contains(l, `"event":"conn_close"`) {
			closeLines++
		}
	}
	if closeLines == 0 || closeLines > audit.DefaultCloseFoldAfter+2 {
		t.Fatalf("%d conn_close lines for %d closes", closeLines, n)
	}
	counted := map[string]int64{}
	for _, k := range []query.Key{query.KeyEvent, query.KeyReason} {
		for _, c := range r.counts[k] {
			counted[c.Value] = c.N
		}
	}
	if counted["conn_close"] != n || counted["client_closed"] != n {
		t.Fatalf("count-by: conn_close %d, client_closed %d, want %d", counted["conn_close"], counted["client_closed"], n)
	}
	if rep := tt.Verify(t); !rep.OK() {
		t.Fatalf("trail does not verify: %+v", rep)
	}
}
