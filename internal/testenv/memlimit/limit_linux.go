//go:build linux && !race

package memlimit

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"testing"
)

// Limit sets the soft RLIMIT_AS of the process to its current virtual size
// plus extra bytes, until t's cleanup. Builds with -race (whose shadow
// memory needs terabytes of address space) and other systems have no
// limit; the TotalAlloc checks still apply there.
func Limit(t testing.TB, extra uint64) {
	mu.Lock()
	defer mu.Unlock()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &old); err != nil {
		t.Logf("memlimit: %v", err)
		return
	}
	lim := old
	lim.Cur = min(vmSize()+extra, old.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &lim); err != nil {
		t.Logf("memlimit: %v", err)
		return
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		syscall.Setrlimit(syscall.RLIMIT_AS, &old)
	})
}

// LimitProcess sets the soft RLIMIT_AS for the rest of the process's life
// (fuzz workers, which have no cleanup to undo it).
func LimitProcess(extra uint64) {
	mu.Lock()
	defer mu.Unlock()
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_AS, &lim) == nil {
		lim.Cur = min(vmSize()+extra, lim.Max)
		syscall.Setrlimit(syscall.RLIMIT_AS, &lim)
	}
}

// vmSize reads VmSize from /proc/self/status, in bytes.
func vmSize() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 1 << 40
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmSize:")); ok {
			kb, err := strconv.ParseUint(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 1 << 40
}
