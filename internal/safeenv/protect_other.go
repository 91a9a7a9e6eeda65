//go:build !linux

package safeenv

// Protect does nothing outside Linux (the action runs on Linux runners).
func Protect() error { return nil }

// Dumpable reports true outside Linux: nothing makes the process
// undumpable there.
func Dumpable() (bool, error) { return true, nil }
