package frame

import (
	"fmt"
	"testing"
)

// The event loop reuses one read buffer for every connection: whatever Feed
// keeps must be copied, never aliased. Feed each chunk from a scratch buffer
// that is overwritten right after.
func TestFeedCopiesWhatItKeeps(t *testing.T) {
	in := cat(text(`{"op":"subscribe","id":1,"topic":"t1","userId":"s1","token":"abcdefghijklmnopqrstuvwxyz012345"}`), text("second"))
	for _, plan := range [][]int{{1, 1, 1, 1, 1, 1, 47, 1000}, {6, 50, 1000}, {3, 3, 2, 1000}, {7, 1000}} {
		var p Parser
		var r record
		scratch := make([]byte, 4096)
		off := 0
		for _, k := range plan {
			k = min(k, len(in)-off)
			if k == 0 {
				break
			}
			copy(scratch, in[off:off+k])
			if err := p.Feed(scratch[:k], nil, &r); err != nil {
				t.Fatalf("plan %v: %v", plan, err)
			}
			for i := range scratch {
				scratch[i] = 0xEE // the loop reads the next connection's bytes here
			}
			off += k
		}
		if fmt.Sprint(r.events) != fmt.Sprintf("[msg 1 %q msg 1 \"second\"]", `{"op":"subscribe","id":1,"topic":"t1","userId":"s1","token":"abcdefghijklmnopqrstuvwxyz012345"}`) {
			t.Fatalf("plan %v: %q", plan, r.events)
		}
	}
}
