//go:build !linux || race

package memlimit

import "testing"

// Limit does nothing on this build (see the Linux, non-race version).
func Limit(t testing.TB, extra uint64) {}

// LimitProcess does nothing on this build.
func LimitProcess(extra uint64) {}
