//go:build unix

package kmodule

import (
	"os"
	"syscall"
)

// mapFile maps p read-only into memory. The returned data is valid until
// release is called; nothing derived from it may keep referencing it.
func mapFile(p string) (data []byte, release func(), err error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := st.Size()
	if size == 0 || size != int64(int(size)) || !st.Mode().IsRegular() {
		b, err := os.ReadFile(p)
		return b, func() {}, err
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		b, err := os.ReadFile(p)
		return b, func() {}, err
	}
	return b, func() { syscall.Munmap(b) }, nil
}
