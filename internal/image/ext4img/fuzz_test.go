package ext4img

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/sparse"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv/memlimit"
)

// fuzzMaxDisk caps the decoded disk size, fuzzReadBudget the file bytes
// one input may read, fuzzMaxAlloc what one input may allocate.
const (
	fuzzMaxDisk    = 256 << 20
	fuzzReadBudget = 32 << 20
	fuzzMaxAlloc   = 512 << 20
)

var limitOnce sync.Once

// fuzzTree is a small tree for seed images: a file with holes, one over 12
// blocks of 1 KiB, fast and slow symlinks, nested and hashed directories.
func fuzzTree(t testing.TB) string {
	src := t.TempDir()
	testenv.WriteFileMode(t, filepath.Join(src, "a.ko"), text(300), 0o644)
	testenv.WriteFileMode(t, filepath.Join(src, "k/d/b.ko"), append(text(2000), make([]byte, 20_000)...), 0o4755)
	testenv.WriteFileMode(t, filepath.Join(src, "k/c.ko"), text(13_000), 0o600)
	for _, n := range []string{"m1", "m2", "m3", "m4", "m5", "m6"} {
		testenv.WriteFileMode(t, filepath.Join(src, "many", n), []byte(n), 0o644)
	}
	os.Symlink("a.ko", filepath.Join(src, "l"))
	os.Symlink("k/d/../../very/long/target/path/beyond/sixty/bytes/in/length.ko", filepath.Join(src, "k/slow"))
	return src
}

// text returns n bytes of printable filler (it keeps seed files small).
func text(n int) []byte {
	return []byte(strings.Repeat("0123456789abcdef", n/16+1)[:n])
}

// seedImages returns encoded images made by mke2fs (several layouts) and
// by our writer. Missing tools just mean fewer seeds (the committed corpus
// in testdata/fuzz still applies).
func seedImages(t testing.TB) [][]byte {
	var out [][]byte
	if _, err := exec.LookPath("mke2fs"); err == nil {
		src := fuzzTree(t)
		for _, opts := range [][]string{
			{"-t", "ext4", "-b", "1024", "-O", "^has_journal"},
			{"-t", "ext4", "-b", "1024", "-O", "^has_journal,metadata_csum,dir_index,^64bit", "-I", "128"},
			{"-t", "ext2", "-b", "1024"},
			{"-t", "ext4", "-b", "4096", "-O", "^has_journal,^resize_inode"},
		} {
			b, err := os.ReadFile(mkfs(t, src, "2M", opts...))
			if err == nil {
				out = append(out, sparse.Encode(b))
			}
		}
	}
	root := &Node{Mode: fs.ModeDir | 0o755, Children: []*Node{
		{Name: "a.ko", Mode: 0o644, Size: 9000, Data: text(9000)},
		{Name: "d", Mode: fs.ModeDir | 0o755, Children: []*Node{
			{Name: "l", Mode: fs.ModeSymlink | 0o777, Target: "../a.ko"},
		}},
	}}
	return append(out, sparse.Encode(writeImage(t, root)))
}

// FuzzFS opens a (sparse-encoded) disk as a filesystem and reads all of it
// through the fs.FS API: every directory listed, every entry Lstat'ed,
// every symlink read, every regular file opened and read in part or in
// full. It must not panic, must keep memory bounded (the address space is
// capped, and each input's allocations are checked), and must only report
// valid, clean paths.
func FuzzFS(f *testing.F) {
	for _, s := range seedImages(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		limitOnce.Do(func() { memlimit.LimitProcess(2 << 30) })
		img := sparse.Decode(in, fuzzMaxDisk)
		before := memlimit.TotalAlloc()
		efs, err := OpenNamed(img, img.Size(), "fuzz.img")
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("Open: unexpected error kind: %v", err)
			}
			return
		}
		budget := int64(fuzzReadBudget)
		fs.WalkDir(efs, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // reported corruption: skip the subtree
			}
			if !fs.ValidPath(p) || path.Clean(p) != p {
				t.Fatalf("WalkDir gave an unclean path %q", p)
			}
			fuzzEntry(t, efs, p, d, &budget)
			return nil
		})
		if got := memlimit.TotalAlloc() - before; got > fuzzMaxAlloc {
			t.Fatalf("one input allocated %d MiB", got>>20)
		}
	})
}

// fuzzEntry checks one entry through the fs.FS API.
func fuzzEntry(t *testing.T, efs *FS, p string, d fs.DirEntry, budget *int64) {
	fi, err := efs.Lstat(p)
	if err != nil {
		return
	}
	if fi.Mode().Type() != d.Type() {
		t.Fatalf("%s: Lstat type %v, ReadDir type %v", p, fi.Mode().Type(), d.Type())
	}
	switch {
	case d.Type() == fs.ModeSymlink:
		if _, err := efs.Open(p); !errors.Is(err, ErrSymlink) {
			t.Fatalf("%s: Open of a symlink: %v", p, err)
		}
		efs.ReadLink(p)
	case d.Type().IsRegular():
		fuzzRead(t, efs, p, fi.Size(), budget)
	case d.IsDir():
		if f, err := efs.Open(p); err == nil {
			f.(fs.ReadDirFile).ReadDir(2)
			f.Close()
		}
	}
}

// fuzzRead reads a regular file: whole with ReadFile if it is small and
// the budget allows, else its first and last 64 KiB through ReadAt.
func fuzzRead(t *testing.T, efs *FS, p string, size int64, budget *int64) {
	if size <= 1<<20 && *budget >= size {
		*budget -= size
		b, err := efs.ReadFile(p)
		if err == nil && int64(len(b)) != size {
			t.Fatalf("%s: ReadFile returned %d bytes of %d", p, len(b), size)
		}
		return
	}
	f, err := efs.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for _, off := range []int64{0, size - int64(len(buf))} {
		if *budget < int64(len(buf)) {
			return
		}
		*budget -= int64(len(buf))
		n, err := f.(io.ReaderAt).ReadAt(buf, max(off, 0))
		if n > len(buf) || (n < len(buf) && err == nil) {
			t.Fatalf("%s: ReadAt = %d, %v", p, n, err)
		}
	}
}
