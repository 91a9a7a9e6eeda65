// Package memlimit bounds the memory of tests and fuzz targets that read
// hostile images: Limit caps the process's address space just above what
// it uses now, so a reader that tries to allocate gigabytes dies with
// "fatal error: out of memory" (a failed test, or a fuzzer crasher)
// instead of driving the machine into the OOM killer; TotalAlloc measures
// what a call allocated.
package memlimit

import (
	"runtime"
	"sync"
	"testing"
)

var mu sync.Mutex

// TotalAlloc returns the bytes allocated so far by the process.
func TotalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// Check fails t if fn allocates more than max bytes (in this process, so
// run it without parallel tests).
func Check(t testing.TB, max uint64, fn func()) {
	t.Helper()
	before := TotalAlloc()
	fn()
	if got := TotalAlloc() - before; got > max {
		t.Errorf("allocated %d MiB, more than the %d MiB allowed", got>>20, max>>20)
	}
}
