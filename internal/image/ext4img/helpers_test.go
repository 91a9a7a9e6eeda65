package ext4img

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// runTool runs an external tool in the C locale and returns its combined
// output; it fails the test if the tool fails.
func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testenv.Tool(t, name), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return testenv.RunCmd(t, cmd)
}

// mkfs makes an image of size (mke2fs syntax) from src with mke2fs -d.
func mkfs(t testing.TB, src, size string, opts ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	args := append([]string{"-q", "-F", "-E", "root_owner=0:0"}, opts...)
	runTool(t, "mke2fs", append(args, "-d", src, img, size)...)
	return img
}

// fsck runs e2fsck -fn and fails the test if it finds anything.
func fsck(t testing.TB, img string) {
	t.Helper()
	runTool(t, "e2fsck", "-fn", img)
}

// sourceTree makes a tree with what the reader must handle: files of many
// sizes (direct, single and double indirect blocks with 1 KiB blocks),
// zero blocks that mke2fs stores as holes (in the middle and at the end),
// fast and slow symlinks, a setuid file, an empty directory and a
// directory big enough to be hashed.
func sourceTree(t testing.TB, withLinks bool) string {
	src := t.TempDir()
	testenv.WriteFileMode(t, filepath.Join(src, "a.ko"), testenv.RandBytes(1, 100_000), 0o644)
	testenv.WriteFileMode(t, filepath.Join(src, "empty"), nil, 0o644)
	testenv.WriteFileMode(t, filepath.Join(src, "kernel/drivers/net/big.ko"), testenv.RandBytes(2, 900_000), 0o644)
	holes := append(append(testenv.RandBytes(3, 5000), make([]byte, 70_000)...), testenv.RandBytes(4, 3000)...)
	testenv.WriteFileMode(t, filepath.Join(src, "kernel/holes.ko"), append(holes, make([]byte, 50_000)...), 0o644)
	testenv.WriteFileMode(t, filepath.Join(src, "suid"), []byte("#!/bin/sh\n"), 0o4755)
	testenv.WriteFileMode(t, filepath.Join(src, "private"), []byte("x"), 0o600)
	for i := 0; i < 400; i++ {
		testenv.WriteFileMode(t, filepath.Join(src, "many", fmt.Sprintf("module-with-a-long-name-%03d.ko", i)), []byte(fmt.Sprint(i)), 0o644)
	}
	if err := os.MkdirAll(filepath.Join(src, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if withLinks {
		os.Symlink("a.ko", filepath.Join(src, "fast-link"))
		os.Symlink(strings.Repeat("long/", 30)+"target.ko", filepath.Join(src, "kernel/slow-link"))
		os.Symlink("drivers", filepath.Join(src, "kernel/dirlink"))
	}
	return src
}

// openImg opens an image file with OpenNamed.
func openImg(t testing.TB, img string) *FS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	efs, err := OpenNamed(f, fi.Size(), img)
	if err != nil {
		t.Fatal(err)
	}
	return efs
}

// lsEntry is one line of debugfs "ls -p".
type lsEntry struct {
	ino, mode, uid, gid, name, size string
}

func debugfsLs(t testing.TB, img, dir string) map[string]lsEntry {
	t.Helper()
	out := map[string]lsEntry{}
	for _, line := range strings.Split(testenv.Debugfs(t, img, "ls -p /"+dir), "\n") {
		f := strings.Split(line, "/")
		if len(f) != 8 || f[1] == "0" || f[5] == "." || f[5] == ".." {
			continue
		}
		out[f[5]] = lsEntry{f[1], f[2], f[3], f[4], f[5], f[6]}
	}
	return out
}

// unixMode formats a Go mode as debugfs prints it (octal with the type).
func octalMode(m fs.FileMode) string {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	switch m.Type() {
	case fs.ModeDir:
		v |= 0o040000
	case fs.ModeSymlink:
		v |= 0o120000
	case 0:
		v |= 0o100000
	}
	return fmt.Sprintf("%06o", v)
}

// sameBytes compares two byte slices with a short message.
func sameBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes differ from the expected %d", what, len(got), len(want))
	}
}
