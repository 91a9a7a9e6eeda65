//go:build !unix

package kmodule

import "os"

// mapFile reads p into memory (no mmap on this platform).
func mapFile(p string) (data []byte, release func(), err error) {
	b, err := os.ReadFile(p)
	return b, func() {}, err
}
