package gateway

import rtmetrics "runtime/metrics"

// The memory figures of Stats come from runtime/metrics, which reads the
// runtime's counters without stopping the world. runtime.ReadMemStats
// stops it: every goroutine, every event loop among them, waits until all
// have reached a safe point, and on a busy machine a loop whose thread is
// off its core holds the others up for as long. /v1/stats is polled
// (every 20 ms by the stall bench while it waits for a mass close) and
// the watchdog reads Stats every second, so each read paused every
// connection.

// memNames are the runtime/metrics samples Stats reads, in memSample
// order.
var memNames = [...]string{
	"/memory/classes/heap/objects:bytes",  // MemStats.HeapAlloc
	"/memory/classes/heap/unused:bytes",   // HeapInuse − HeapAlloc
	"/memory/classes/heap/free:bytes",     // HeapIdle − HeapReleased
	"/memory/classes/heap/released:bytes", // HeapReleased
	"/memory/classes/total:bytes",         // Sys
}

const (
	memObjects = iota
	memUnused
	memFree
	memReleased
	memTotal
)

// readMemory fills st's heap and runtime memory fields.
func readMemory(st *Stats) {
	var s [len(memNames)]rtmetrics.Sample
	for i, name := range memNames {
		s[i].Name = name
	}
	rtmetrics.Read(s[:])
	v := func(i int) uint64 {
		if s[i].Value.Kind() != rtmetrics.KindUint64 {
			return 0 // not in this runtime
		}
		return s[i].Value.Uint64()
	}
	st.HeapLiveBytes = v(memObjects)
	st.HeapInuse = v(memObjects) + v(memUnused)
	st.HeapReleased = v(memReleased)
	st.HeapSysBytes = st.HeapInuse + v(memFree) + v(memReleased)
	st.RuntimeSys = v(memTotal)
}
