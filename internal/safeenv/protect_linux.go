package safeenv

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Protect makes this process not dumpable (prctl PR_SET_DUMPABLE 0): the
// kernel then refuses other processes of the same user, the children this
// process starts among them, access to its /proc/<pid>/environ, mem, maps
// and fd links, and ptrace, so build code cannot read the token from the
// process that holds it. Processes with CAP_SYS_PTRACE (root) are not
// stopped by this. Children start dumpable again (execve resets it) and
// get their environment from Environ. Call it first thing in main.
func Protect() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("safeenv: prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}

// Dumpable reports whether this process is dumpable (prctl
// PR_GET_DUMPABLE).
func Dumpable() (bool, error) {
	v, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		return false, fmt.Errorf("safeenv: prctl(PR_GET_DUMPABLE): %w", err)
	}
	return v != 0, nil
}
