package vhd

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/sparse"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv/memlimit"
)

var limitOnce sync.Once

// FuzzOpen opens a (sparse-encoded) VHD file and reads its virtual disk
// around block boundaries and, for small disks, whole. It must not panic,
// must keep memory bounded, and ReadAt must honour io.ReaderAt. Seeds are
// fixed and dynamic VHDs made by qemu-img.
func FuzzOpen(f *testing.F) {
	for _, s := range seedImages(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		limitOnce.Do(func() { memlimit.LimitProcess(2 << 30) })
		img := sparse.Decode(in, 1<<30)
		before := memlimit.TotalAlloc()
		d, err := Open(img, img.Size())
		if err != nil {
			return
		}
		block := d.blockSize
		if !d.Dynamic() {
			block = 1 << 20
		}
		buf := make([]byte, 8192)
		for i := int64(0); i < 64 && i*block <= d.Size(); i++ {
			off := max(i*block-4096, 0)
			if n, err := d.ReadAt(buf, off); n > len(buf) || (n < len(buf) && err == nil) {
				t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
			}
		}
		if d.Size() <= 4<<20 {
			all := make([]byte, d.Size())
			if n, err := d.ReadAt(all, 0); n != len(all) && err == nil {
				t.Fatalf("whole-disk ReadAt = %d, nil", n)
			}
		}
		if got := memlimit.TotalAlloc() - before; got > 2*uint64(len(in))+(256<<20) {
			t.Fatalf("one input allocated %d MiB", got>>20)
		}
	})
}

// seedImages returns encoded fixed and dynamic VHDs made by qemu-img (none
// without it; the committed corpus in testdata/fuzz still applies).
func seedImages(t testing.TB) [][]byte {
	qemu, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "d.raw")
	b := make([]byte, 5<<20)
	copy(b[3<<20:], []byte("some data in the second block"))
	copy(b[len(b)-100:], []byte("tail"))
	os.WriteFile(raw, b, 0o644)
	var seeds [][]byte
	for _, sub := range []string{"fixed", "dynamic"} {
		out := filepath.Join(dir, sub+".vhd")
		if exec.Command(qemu, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat="+sub, raw, out).Run() == nil {
			if v, err := os.ReadFile(out); err == nil {
				seeds = append(seeds, sparse.Encode(v))
			}
		}
	}
	return seeds
}
