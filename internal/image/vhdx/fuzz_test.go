package vhdx

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

// FuzzOpen opens a (sparse-encoded) VHDX file and reads its virtual disk:
// around every block boundary and, for small disks, all of it. It must not
// panic, must keep memory bounded, and ReadAt must honour io.ReaderAt.
// Seeds are our writer's output and, with qemu-img, its dynamic and fixed
// VHDX files.
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
		readAround(t, d.ReadAt, d.Size(), int64(d.BlockSize()))
		if got := memlimit.TotalAlloc() - before; got > 2*uint64(len(in))+(256<<20) {
			t.Fatalf("one input allocated %d MiB", got>>20)
		}
	})
}

// seedImages returns encoded VHDX files: our writer's, and qemu-img's
// dynamic and fixed ones when it is installed.
func seedImages(t testing.TB) [][]byte {
	dir := t.TempDir()
	p := filepath.Join(dir, "ours.vhdx")
	blk := make([]byte, mib)
	copy(blk, "some data in block 1")
	writeDisk(t, p, 5*mib+512, map[int64][]byte{1: blk, 5: blk})
	seeds := []string{p}
	if qemu, err := exec.LookPath("qemu-img"); err == nil {
		raw := filepath.Join(dir, "d.raw")
		os.WriteFile(raw, append(make([]byte, 3*mib), []byte("some data at 3 MiB")...), 0o644)
		for i, o := range []string{"subformat=dynamic", "subformat=fixed"} {
			out := filepath.Join(dir, string(rune('a'+i))+".vhdx")
			if exec.Command(qemu, "convert", "-f", "raw", "-O", "vhdx", "-o", o, raw, out).Run() == nil {
				seeds = append(seeds, out)
			}
		}
	}
	var enc [][]byte
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			enc = append(enc, sparse.Encode(b))
		}
	}
	return enc
}

// readAround reads 4 KiB on both sides of up to 64 block boundaries, and
// the whole disk if it is at most 4 MiB, checking the ReaderAt contract.
func readAround(t *testing.T, readAt func([]byte, int64) (int, error), size, block int64) {
	buf := make([]byte, 8192)
	for i := int64(0); i < 64 && i*block <= size; i++ {
		off := max(i*block-4096, 0)
		n, err := readAt(buf, off)
		if n > len(buf) || (n < len(buf) && err == nil) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
	}
	if size <= 4<<20 {
		all := make([]byte, size)
		if n, err := readAt(all, 0); n != len(all) && err == nil {
			t.Fatalf("whole-disk ReadAt = %d, nil", n)
		}
	}
	if n, err := readAt(buf, size); n != 0 || err == nil {
		t.Fatalf("ReadAt at the end = %d, %v", n, err)
	}
}
