package gateway

import (
	"runtime"
	"testing"
)

// readMemory's figures are ReadMemStats' (without its stop of the world):
// read back to back after a collection they agree within a few percent.
func TestReadMemoryMatchesMemStats(t *testing.T) {
	keep := make([][]byte, 0, 1000)
	for range 1000 {
		keep = append(keep, make([]byte, 4096))
	}
	runtime.GC()
	var st Stats
	readMemory(&st)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	runtime.KeepAlive(keep)
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"heap_live_bytes", st.HeapLiveBytes, ms.HeapAlloc},
		{"heap_inuse_bytes", st.HeapInuse, ms.HeapInuse},
		{"heap_sys_bytes", st.HeapSysBytes, ms.HeapSys},
		{"heap_released_bytes", st.HeapReleased, ms.HeapReleased},
		{"runtime_sys_bytes", st.RuntimeSys, ms.Sys},
	} {
		lo, hi := c.want-c.want/20, c.want+c.want/20+64<<10
		if c.got < lo || c.got > hi || (c.want > 0 && c.got == 0) {
			t.Errorf("%s: %d, ReadMemStats %d", c.name, c.got, c.want)
		}
	}
	if st.HeapLiveBytes < 4<<20 {
		t.Errorf("heap_live_bytes %d with 4 MiB held", st.HeapLiveBytes)
	}
}
