package testenv

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Lock takes an exclusive flock on the file p (created, with its parent
// directories, if missing) and returns the function that releases it:
// test packages running at once take turns to make a shared cache entry.
func Lock(t testing.TB, p string) (unlock func()) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }
}
