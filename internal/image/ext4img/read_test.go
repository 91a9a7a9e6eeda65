package ext4img

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// mkfsVariants are mke2fs option sets covering the layouts the reader
// supports: extents and block maps, 1, 4 and 64 KiB blocks, 32- and
// 64-byte group descriptors, 128- and 256-byte inodes, htree directories,
// metadata_csum, journals and flex_bg.
var mkfsVariants = []struct {
	name string
	size string
	opts []string
}{
	{"ext4-4k", "64M", []string{"-t", "ext4", "-b", "4096"}},
	{"ext4-1k-csum-htree", "64M", []string{"-t", "ext4", "-b", "1024", "-O", "metadata_csum,dir_index"}},
	{"ext4-no64bit-128", "64M", []string{"-t", "ext4", "-O", "^64bit", "-I", "128"}},
	{"ext4-64k", "128M", []string{"-t", "ext4", "-b", "65536"}},
	{"ext2-1k", "64M", []string{"-t", "ext2", "-b", "1024"}},
	{"ext3-4k", "64M", []string{"-t", "ext3", "-b", "4096"}},
}

// TestDebugfsAgrees reads mke2fs-made images of sourceTree and checks every
// directory listing against debugfs (inode, mode, owner, size), every file
// against its source bytes and every symlink target.
func TestDebugfsAgrees(t *testing.T) {
	src := sourceTree(t, true)
	for _, v := range mkfsVariants {
		t.Run(v.name, func(t *testing.T) {
			img := mkfs(t, src, v.size, v.opts...)
			fsck(t, img)
			efs := openImg(t, img)
			n := 0
			err := fs.WalkDir(efs, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				n++
				if d.IsDir() {
					checkListing(t, efs, img, p)
				}
				return checkEntry(t, efs, src, p, d)
			})
			if err != nil {
				t.Fatal(err)
			}
			if n < 410 {
				t.Errorf("walked %d entries", n)
			}
		})
	}
}

// checkListing compares ReadDir of dir with debugfs ls -p.
func checkListing(t *testing.T, efs *FS, img, dir string) {
	t.Helper()
	if dir == "." {
		dir = ""
	}
	want := debugfsLs(t, img, dir)
	ents, err := efs.ReadDir(path.Join(".", dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(want) {
		t.Errorf("/%s: %d entries, debugfs lists %d", dir, len(ents), len(want))
	}
	for _, e := range ents {
		w, ok := want[e.Name()]
		info, _ := e.Info()
		in := info.Sys().(*Inode)
		size := fmt.Sprint(in.Size)
		if e.IsDir() {
			size = ""
		}
		got := lsEntry{fmt.Sprint(in.Ino), octalMode(in.Mode), fmt.Sprint(in.UID), fmt.Sprint(in.GID), e.Name(), size}
		if !ok || got != w {
			t.Errorf("/%s: %+v, debugfs says %+v", path.Join(dir, e.Name()), got, w)
		}
	}
}

// checkEntry compares one entry with the source tree.
func checkEntry(t *testing.T, efs *FS, src, p string, d fs.DirEntry) error {
	if p == "." || p == "lost+found" {
		return nil
	}
	host := filepath.Join(src, filepath.FromSlash(p))
	switch d.Type() {
	case fs.ModeSymlink:
		want, _ := os.Readlink(host)
		got, err := efs.ReadLink(p)
		if err != nil || got != want {
			t.Errorf("%s: ReadLink = %q, %v; want %q", p, got, err, want)
		}
	case 0:
		want, _ := os.ReadFile(host)
		got, err := efs.ReadFile(p)
		if err != nil {
			return err
		}
		sameBytes(t, p, got, want)
	}
	return nil
}

// TestFSConformance runs testing/fstest over images without symlinks
// (fstest opens every entry, and Open refuses symlinks).
func TestFSConformance(t *testing.T) {
	src := sourceTree(t, false)
	for _, v := range mkfsVariants[:2] {
		t.Run(v.name, func(t *testing.T) {
			efs := openImg(t, mkfs(t, src, v.size, v.opts...))
			if err := fstest.TestFS(efs, "a.ko", "kernel/drivers/net/big.ko", "many/module-with-a-long-name-399.ko", "emptydir"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSymlinksNotFollowed checks that no operation follows a symlink, that
// the refusals wrap ErrSymlink and fs.ErrInvalid, and that Lstat, ReadLink
// and ReadDir report symlinks.
func TestSymlinksNotFollowed(t *testing.T) {
	src := sourceTree(t, true)
	img := mkfs(t, src, "64M", "-t", "ext4")
	efs := openImg(t, img)
	for _, p := range []string{"fast-link", "kernel/slow-link", "kernel/dirlink", "kernel/dirlink/net/big.ko", "kernel/dirlink/net"} {
		_, err1 := efs.Open(p)
		_, err2 := efs.Stat(p)
		_, err3 := efs.ReadFile(p)
		_, err4 := efs.ReadDir(p)
		for i, err := range []error{err1, err2, err3, err4} {
			if !errors.Is(err, ErrSymlink) || !errors.Is(err, fs.ErrInvalid) || !strings.Contains(err.Error(), img) {
				t.Errorf("%s: operation %d: err = %v, want ErrSymlink naming the image", p, i, err)
			}
		}
		if strings.Count(p, "/") > 1 {
			if _, err := efs.Lstat(p); !errors.Is(err, ErrSymlink) {
				t.Errorf("Lstat(%s) through a symlink: %v", p, err)
			}
			continue
		}
		fi, err := efs.Lstat(p)
		if err != nil || fi.Mode().Type() != fs.ModeSymlink {
			t.Errorf("Lstat(%s) = %v, %v", p, fi, err)
		}
		want, _ := os.Readlink(filepath.Join(src, p))
		if got, err := efs.ReadLink(p); got != want || err != nil {
			t.Errorf("ReadLink(%s) = %q, %v", p, got, err)
		}
	}
	if _, err := efs.ReadLink("a.ko"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("ReadLink of a regular file: %v", err)
	}
	ents, err := efs.ReadDir("kernel")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]fs.FileMode{}
	for _, e := range ents {
		types[e.Name()] = e.Type()
	}
	if types["dirlink"] != fs.ModeSymlink || types["slow-link"] != fs.ModeSymlink || types["drivers"] != fs.ModeDir {
		t.Errorf("ReadDir(kernel) types %v", types)
	}
	// fs.ReadLink and fs.Lstat use the ReadLinkFS methods.
	if got, err := fs.ReadLink(efs, "fast-link"); got != "a.ko" || err != nil {
		t.Errorf("fs.ReadLink = %q, %v", got, err)
	}
}

func TestInvalidPaths(t *testing.T) {
	efs := openImg(t, mkfs(t, sourceTree(t, false), "64M", "-t", "ext4"))
	for _, p := range []string{"/a.ko", "", "./a.ko", "kernel/../a.ko", "kernel//holes.ko", "kernel/", ".."} {
		if _, err := efs.Open(p); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want fs.ErrInvalid", p, err)
		}
		if _, err := efs.ReadFile(p); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("ReadFile(%q) = %v, want fs.ErrInvalid", p, err)
		}
	}
	for _, p := range []string{"nope", "kernel/nope", "a.ko/x"} {
		if _, err := efs.Stat(p); err == nil || (!errors.Is(err, fs.ErrNotExist) && !strings.Contains(err.Error(), "not a directory")) {
			t.Errorf("Stat(%q) = %v", p, err)
		}
	}
	if _, err := efs.ReadFile("kernel"); err == nil {
		t.Error("ReadFile of a directory succeeded")
	}
	if _, err := efs.ReadDir("a.ko"); err == nil {
		t.Error("ReadDir of a file succeeded")
	}
}

// TestOpenedFile checks ReadAt, Seek, Read and Close of an opened file and
// a directory's ReadDir(n).
func TestOpenedFile(t *testing.T) {
	src := sourceTree(t, false)
	efs := openImg(t, mkfs(t, src, "64M", "-t", "ext4", "-b", "1024"))
	want, _ := os.ReadFile(filepath.Join(src, "kernel/holes.ko"))
	f, err := efs.Open("kernel/holes.ko")
	if err != nil {
		t.Fatal(err)
	}
	ra := f.(io.ReaderAt)
	buf := make([]byte, 10_000)
	for _, off := range []int64{0, 4000, 74_000, int64(len(want)) - 5000} {
		n, err := ra.ReadAt(buf, off)
		if n != min(len(buf), len(want)-int(off)) || (err != nil && err != io.EOF) || !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
			t.Errorf("ReadAt(%d) = %d, %v", off, n, err)
		}
	}
	if n, err := ra.ReadAt(buf, int64(len(want))); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at EOF = %d, %v", n, err)
	}
	if pos, err := f.(io.Seeker).Seek(-100, io.SeekEnd); err != nil || pos != int64(len(want))-100 {
		t.Fatalf("Seek = %d, %v", pos, err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(rest, want[len(want)-100:]) {
		t.Errorf("Read after Seek: %d bytes, %v", len(rest), err)
	}
	f.Close()
	if _, err := ra.ReadAt(buf, 0); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("ReadAt after Close: %v", err)
	}
	d, err := efs.Open("many")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	total := 0
	for {
		ents, err := d.(fs.ReadDirFile).ReadDir(7)
		total += len(ents)
		if err == io.EOF {
			break
		}
		if err != nil || len(ents) == 0 {
			t.Fatalf("ReadDir(7): %d, %v", len(ents), err)
		}
	}
	if total != 400 {
		t.Errorf("ReadDir(7) loop returned %d entries", total)
	}
}

// TestConcurrentReads reads every file from many goroutines at once (run
// with -race) through ReadFile and a shared opened file's ReadAt.
func TestConcurrentReads(t *testing.T) {
	src := sourceTree(t, false)
	efs := openImg(t, mkfs(t, src, "64M", "-t", "ext4", "-b", "1024", "-O", "dir_index"))
	var files []string
	fs.WalkDir(efs, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	shared, err := efs.Open("kernel/drivers/net/big.ko")
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	want, _ := os.ReadFile(filepath.Join(src, "kernel/drivers/net/big.ko"))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < len(files); i += 8 {
				got, err := efs.ReadFile(files[i])
				host, _ := os.ReadFile(filepath.Join(src, files[i]))
				if err != nil || !bytes.Equal(got, host) {
					t.Errorf("%s: %v", files[i], err)
				}
			}
			buf := make([]byte, 4096)
			for off := int64(g * 1000); off < int64(len(want)); off += 50_000 {
				n, _ := shared.(io.ReaderAt).ReadAt(buf, off)
				if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					t.Errorf("shared ReadAt(%d) differs", off)
				}
			}
		}(g)
	}
	wg.Wait()
}

// TestLazyGDT reads an image with the group descriptors read one at a
// time, as for tables too large to keep in memory.
func TestLazyGDT(t *testing.T) {
	src := sourceTree(t, false)
	img := mkfs(t, src, "64M", "-t", "ext4", "-b", "1024")
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	efs, err := openFS(f, fi.Size(), img, 0)
	if err != nil {
		t.Fatal(err)
	}
	if efs.gdt != nil {
		t.Fatal("descriptor table read into memory")
	}
	got, err := efs.ReadFile("kernel/drivers/net/big.ko")
	want, _ := os.ReadFile(filepath.Join(src, "kernel/drivers/net/big.ko"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadFile: %v", err)
	}
}

// TestInlineDataRefused checks that inline data, which the reader does not
// support, is a clear error naming the inode.
func TestInlineDataRefused(t *testing.T) {
	src := t.TempDir()
	testenv.WriteFileMode(t, filepath.Join(src, "tiny"), []byte("inline"), 0o644)
	img := mkfs(t, src, "8M", "-t", "ext4", "-O", "inline_data")
	efs := openImg(t, img)
	_, err := efs.ReadFile("tiny")
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "inline data") || !strings.Contains(err.Error(), img) {
		t.Fatalf("err = %v", err)
	}
}

// TestOwnWriter reads back an image made by Plan/WriteTo, and checks it
// with e2fsck and debugfs too.
func TestOwnWriter(t *testing.T) {
	root := &Node{Mode: fs.ModeDir | 0o755, Children: []*Node{
		{Name: "a.ko", Mode: 0o644, Size: 70_000, Data: testenv.RandBytes(5, 70_000)},
		{Name: "d", Mode: fs.ModeDir | 0o755, Children: []*Node{
			{Name: "l", Mode: fs.ModeSymlink | 0o777, Target: "../a.ko"},
			{Name: "e", Mode: 0o600, Size: 0, Data: []byte{}},
		}},
	}}
	raw := writeImage(t, root)
	img := filepath.Join(t.TempDir(), "own.img")
	if err := os.WriteFile(img, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	fsck(t, img)
	efs := openImg(t, img)
	checkListing(t, efs, img, ".")
	checkListing(t, efs, img, "d")
	got, err := efs.ReadFile("a.ko")
	sameBytes(t, "a.ko", got, testenv.RandBytes(5, 70_000))
	if err != nil {
		t.Fatal(err)
	}
	if tgt, err := efs.ReadLink("d/l"); tgt != "../a.ko" || err != nil {
		t.Errorf("ReadLink = %q, %v", tgt, err)
	}
	fi, err := efs.Stat("d/e")
	if err != nil || fi.Size() != 0 || fi.Mode() != 0o600 || fi.ModTime().Unix() != 1700000000 {
		t.Errorf("Stat(d/e) = %v, %v", fi, err)
	}
}

// writeImage plans and writes a small image into memory.
func writeImage(t testing.TB, root *Node) []byte {
	t.Helper()
	im, err := Plan(root, Options{Time: 1700000000, SlackBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := im.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBigDirectoryCache walks two directories that do not fit the cache
// together and looks up each of their entries: each is parsed about once,
// not once per lookup (which made hostile huge directories quadratic).
func TestBigDirectoryCache(t *testing.T) {
	src := t.TempDir()
	for _, d := range []string{"big1", "big2"} {
		for i := 0; i < 2000; i++ {
			testenv.WriteFileMode(t, filepath.Join(src, d, fmt.Sprintf("entry-%04d", i)), nil, 0o644)
		}
	}
	efs := openImg(t, mkfs(t, src, "16M", "-t", "ext4"))
	efs.dirs.max = 130_000 // one big directory (2000 × 58 bytes) fits, not two
	n := 0
	err := fs.WalkDir(efs, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			_, err = efs.Lstat(p)
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := efs.dirs.parsed.Load(); got > 20 {
		t.Errorf("%d directory parses for %d entries in 4 directories", got, n)
	}
}
