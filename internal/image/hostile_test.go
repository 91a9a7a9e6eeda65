package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/image/ext4img"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv/memlimit"
)

// The tests in this file are the security review's reproductions: each
// crafts a hostile image (with real tools where possible, then patches a
// field) and checks that reading it is a clear error wrapping
// ext4img.ErrCorrupt that names the image and the inode or field, with
// bounded memory (memlimit caps the address space, so a reader that tries
// to allocate gigabytes dies instead of swapping the machine).

var le = binary.LittleEndian

// rawImg is a raw ext4 image file being patched.
type rawImg struct {
	path  string
	f     *os.File
	bs    int64
	isize int64
	ipg   uint32
	desc  int64
}

// mkfsRaw makes a raw image of src with mke2fs -d.
func mkfsRaw(t *testing.T, src, size string, opts ...string) *rawImg {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hostile.img")
	args := append([]string{"-q", "-F", "-E", "root_owner=0:0"}, opts...)
	cmd := exec.Command(testenv.Tool(t, "mke2fs"), append(args, "-d", src, p, size)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	return loadRaw(t, p)
}

// ownRaw writes a raw image of root with our writer.
func ownRaw(t *testing.T, root *ext4img.Node, slack int64) *rawImg {
	t.Helper()
	im, err := ext4img.Plan(root, ext4img.Options{Time: sde, SlackBytes: slack})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "hostile.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return loadRaw(t, p)
}

func loadRaw(t *testing.T, p string) *rawImg {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	r := &rawImg{path: p, f: f}
	sb := r.read(1024, 1024)
	r.bs = 1024 << le.Uint32(sb[0x18:])
	r.isize = int64(le.Uint16(sb[0x58:]))
	r.ipg = le.Uint32(sb[0x28:])
	r.desc = 32
	if le.Uint32(sb[0x60:])&0x80 != 0 {
		r.desc = int64(le.Uint16(sb[0xFE:]))
	}
	return r
}

func (r *rawImg) read(off, n int64) []byte {
	b := make([]byte, n)
	r.f.ReadAt(b, off)
	return b
}

func (r *rawImg) write(off int64, b []byte) {
	if _, err := r.f.WriteAt(b, off); err != nil {
		panic(err)
	}
}

func (r *rawImg) put16(off int64, v uint16) { r.write(off, le.AppendUint16(nil, v)) }
func (r *rawImg) put32(off int64, v uint32) { r.write(off, le.AppendUint32(nil, v)) }

// sb returns the file offset of superblock field off.
func sb(off int64) int64 { return 1024 + off }

// inode returns the file offset of inode ino.
func (r *rawImg) inode(ino uint32) int64 {
	first := int64(0)
	if r.bs == 1024 {
		first = 1
	}
	g := int64(ino-1) / int64(r.ipg)
	d := r.read((first+1)*r.bs+g*r.desc, r.desc)
	table := int64(le.Uint32(d[8:]))
	if r.desc >= 64 {
		table |= int64(le.Uint32(d[0x28:])) << 32
	}
	return table*r.bs + int64(ino-1)%int64(r.ipg)*r.isize
}

// ino returns the inode number of path p, from debugfs.
func (r *rawImg) ino(t *testing.T, p string) uint32 {
	out := testenv.Debugfs(t, r.path, "stat "+p)
	m := regexp.MustCompile(`Inode: (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs stat %s:\n%s", p, out)
	}
	n, _ := strconv.Atoi(m[1])
	return uint32(n)
}

// block returns the physical block of logical block l of p, from debugfs.
func (r *rawImg) block(t *testing.T, p string, l int) int64 {
	out := strings.TrimSpace(testenv.Debugfs(t, r.path, fmt.Sprintf("bmap %s %d", p, l)))
	n, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		t.Fatalf("debugfs bmap %s %d: %q", p, l, out)
	}
	return n
}

// walkAll opens img as a raw disk, walks it and reads every regular file
// (through a writer that refuses more than 64 MiB per file), under a
// memory limit, and returns the first error.
func walkAll(t *testing.T, img string) error {
	t.Helper()
	memlimit.Limit(t, 1<<30)
	var err error
	memlimit.Check(t, 256<<20, func() {
		var d *Disk
		if d, err = OpenDisk(img); err != nil {
			return
		}
		defer d.Close()
		err = Walk(d, func(e Entry) error {
			if e.Mode.IsRegular() {
				_, err := e.WriteTo(&limitWriter{n: 64 << 20})
				return err
			}
			return nil
		})
	})
	return err
}

// limitWriter discards up to n bytes, then fails.
type limitWriter struct{ n int64 }

var errTooMuch = errors.New("limitWriter: more bytes than the file can hold")

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.n -= int64(len(p)); w.n < 0 {
		return 0, errTooMuch
	}
	return len(p), nil
}

// wantCorrupt checks that err wraps ErrCorrupt and mentions each of want.
func wantCorrupt(t *testing.T, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, ext4img.ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v, want it to mention %q", err, w)
		}
	}
}

func smallTree(t *testing.T) string {
	src := t.TempDir()
	testenv.WriteFileMode(t, filepath.Join(src, "d/xy"), []byte("xy"), 0o644)
	testenv.WriteFileMode(t, filepath.Join(src, "d/z"), []byte("z"), 0o644)
	testenv.WriteFileMode(t, filepath.Join(src, "d/keep.ko"), testenv.RandBytes(9, 300_000), 0o644)
	testenv.WriteFileMode(t, filepath.Join(src, "zz"), []byte("file"), 0o644)
	return src
}

// TestHostileBlockCountOverflow: s_blocks_count_hi makes blocks × block
// size overflow (a fuzzer found it; Open panicked in makeslice).
func TestHostileBlockCountOverflow(t *testing.T) {
	r := mkfsRaw(t, smallTree(t), "8M", "-t", "ext4", "-b", "4096", "-O", "64bit")
	r.put32(sb(0x150), 1<<21)
	wantCorrupt(t, walkAll(t, r.path), r.path, "s_blocks_count")
}

// TestHostileInodesPerGroup: s_inodes_per_group = 1 (a slice-bounds panic
// in ReadInode).
func TestHostileInodesPerGroup(t *testing.T) {
	r := mkfsRaw(t, smallTree(t), "8M", "-t", "ext4", "-b", "4096")
	r.put32(sb(0x28), 1)
	wantCorrupt(t, walkAll(t, r.path), r.path, "s_inodes_per_group 1")
}

// TestHostileHugeGDT: a 4 MiB dynamic VHD of 1 TiB whose superblock claims
// 2^30 groups (the group descriptor table, 32 GiB, was allocated whole).
func TestHostileHugeGDT(t *testing.T) {
	r := mkfsRaw(t, smallTree(t), "8M", "-t", "ext4", "-b", "1024", "-O", "^64bit")
	r.put32(sb(0x4), 1<<30-1) // blocks: 1 TiB of 1 KiB blocks
	r.put32(sb(0x20), 1)      // one block per group
	r.put32(sb(0x24), 1)
	dir := t.TempDir()
	raw := filepath.Join(dir, "big.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(r.read(0, 4096))
	f.Truncate(1 << 40)
	f.Close()
	vhdPath := filepath.Join(dir, "big.vhd")
	testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", raw, vhdPath)
	os.Remove(raw)
	if fi, _ := os.Stat(vhdPath); fi.Size() > 8<<20 {
		t.Fatalf("VHD of %d bytes", fi.Size())
	}
	wantCorrupt(t, walkAll(t, vhdPath), vhdPath, "s_inodes_count")
}

// extentNode writes an extent node header.
func extentNode(b []byte, entries, max, depth uint16) {
	le.PutUint16(b[0:], 0xF30A)
	le.PutUint16(b[2:], entries)
	le.PutUint16(b[4:], max)
	le.PutUint16(b[6:], depth)
}

// TestHostileExtentFanout: five index blocks, each pointing 340 times at
// the next (no depth check or visited set: out of memory in seconds).
func TestHostileExtentFanout(t *testing.T) {
	r := ownRaw(t, dirNode("", &ext4img.Node{Name: "f", Mode: 0o644, Size: 8192, Data: testenv.RandBytes(1, 8192)}), 1<<20)
	ino := r.ino(t, "/f")
	data := r.block(t, "/f", 0)
	fi, _ := r.f.Stat()
	free := fi.Size()/r.bs - 16 // slack blocks at the end are free
	root := make([]byte, 60)
	extentNode(root, 4, 4, 5)
	for i := 0; i < 4; i++ {
		le.PutUint32(root[12+12*i:], uint32(i))
		le.PutUint32(root[12+12*i+4:], uint32(free))
	}
	r.write(r.inode(ino)+0x28, root)
	for lvl := int64(0); lvl < 5; lvl++ {
		b := make([]byte, r.bs)
		extentNode(b, 340, 340, uint16(4-lvl))
		for i := 0; i < 340; i++ {
			e := b[12+12*i:]
			le.PutUint32(e, uint32(i))
			if lvl == 4 {
				le.PutUint16(e[4:], 1)
				le.PutUint32(e[8:], uint32(data))
			} else {
				le.PutUint32(e[4:], uint32(free+lvl+1))
			}
		}
		r.write((free+lvl)*r.bs, b)
	}
	wantCorrupt(t, walkAll(t, r.path), r.path, fmt.Sprintf("inode %d", ino), "extent")
}

// TestHostileDirSize: a directory whose i_size claims far more than its one
// block (the whole size was buffered: 5 GiB allocated for 1 GiB).
func TestHostileDirSize(t *testing.T) {
	for _, c := range []struct {
		name  string
		size  uint32
		slack int64
		want  string
	}{
		{"1 GiB", 1 << 30, 1 << 20, "larger than the filesystem"},
		{"60 MiB with holes", 60 << 20, 100 << 20, "hole"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := ownRaw(t, dirNode("", dirNode("d", &ext4img.Node{Name: "f", Mode: 0o644, Size: 1, Data: []byte("x")})), c.slack)
			ino := r.ino(t, "/d")
			r.put32(r.inode(ino)+4, c.size)
			wantCorrupt(t, walkAll(t, r.path), r.path, fmt.Sprintf("inode %d", ino), c.want)
		})
	}
}

// TestHostileFileSize: a file whose i_size (64 GiB) is not bounded by its
// blocks or its filesystem (extract wrote 64 GiB of zeros).
func TestHostileFileSize(t *testing.T) {
	r := ownRaw(t, dirNode("", &ext4img.Node{Name: "f", Mode: 0o644, Size: 5, Data: []byte("hello")}), 1<<20)
	ino := r.ino(t, "/f")
	r.put32(r.inode(ino)+0x6C, 16) // i_size_high: 16 << 32 = 64 GiB
	wantCorrupt(t, walkAll(t, r.path), r.path, fmt.Sprintf("inode %d", ino), "i_size")
	d, err := OpenDisk(r.path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out := t.TempDir()
	_, err = Extract(context.Background(), d, filepath.Join(out, "x"), false)
	wantCorrupt(t, err, "i_size")
	assertEmpty(t, out)
}

// TestHostileIndirectFanout: the classic block map's double-indirect block
// points 40 times at the same indirect block (mapRuns followed every one).
func TestHostileIndirectFanout(t *testing.T) {
	r := mkfsRaw(t, smallTree(t), "16M", "-t", "ext2", "-b", "1024")
	ino := r.ino(t, "/d/keep.ko")
	in := r.inode(ino)
	dind := int64(le.Uint32(r.read(in+0x28+13*4, 4)))
	z := r.read(dind*r.bs, 4)
	for i := int64(1); i < 40; i++ {
		r.write(dind*r.bs+4*i, z)
	}
	r.put32(in+4, (12+256+40*256)*1024) // i_size covering all 40
	wantCorrupt(t, walkAll(t, r.path), r.path, fmt.Sprintf("inode %d", ino), "indirect block")
}

// TestHostileDotEntries: a "." or ".." entry other than the first two of a
// directory (it was silently dropped).
func TestHostileDotEntries(t *testing.T) {
	for _, c := range []struct{ from, to string }{{"xy", ".."}, {"z", "."}} {
		t.Run(c.to, func(t *testing.T) {
			r := mkfsRaw(t, smallTree(t), "8M", "-t", "ext4", "-O", "^metadata_csum,^dir_index")
			blk := r.block(t, "/d", 0)
			b := r.read(blk*r.bs, r.bs)
			i := bytes.Index(b, []byte(c.from+"\x00"))
			if i < 8 || int(b[i-2]) != len(c.from) {
				t.Fatalf("no entry %q in the first block of /d", c.from)
			}
			r.write(blk*r.bs+int64(i), []byte(c.to))
			wantCorrupt(t, walkAll(t, r.path), r.path, fmt.Sprintf("second %q entry", c.to))
		})
	}
}

// TestHostileHardLinkedDir: a second name for a directory, in its own
// parent and elsewhere; and a directory linking to the root.
func TestHostileHardLinkedDir(t *testing.T) {
	for _, c := range []struct{ dir, name, target, want string }{
		{"/", "zz", "/d", "hard-linked directory"},
		{"/d", "xy", "/", "links to the root directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := mkfsRaw(t, smallTree(t), "8M", "-t", "ext4", "-O", "^metadata_csum,^dir_index")
			blk := r.block(t, c.dir, 0)
			b := r.read(blk*r.bs, r.bs)
			i := bytes.Index(b, []byte(c.name+"\x00"))
			if i < 8 {
				t.Fatalf("no entry %q in %s", c.name, c.dir)
			}
			r.put32(blk*r.bs+int64(i-8), r.ino(t, c.target))
			wantCorrupt(t, walkAll(t, r.path), r.path, c.want)
		})
	}
}

// countdownCtx is cancelled after its Err has been asked n times: a
// deterministic "SIGTERM in the middle of a file".
type countdownCtx struct {
	context.Context
	n int
}

func (c *countdownCtx) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

// TestExtractCancelInsideFile: cancellation is honoured inside one big file
// (it was checked only between entries), and nothing is left behind.
func TestExtractCancelInsideFile(t *testing.T) {
	r := ownRaw(t, dirNode("", &ext4img.Node{Name: "big", Mode: 0o644, Size: 64 << 20, Data: make([]byte, 64<<20)}), 0)
	d, err := OpenDisk(r.path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out := t.TempDir()
	ctx := &countdownCtx{Context: context.Background(), n: 8}
	if _, err := Extract(ctx, d, filepath.Join(out, "x"), false); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertEmpty(t, out)
}

// TestExtractDropsSetuid: setuid and setgid bits of files and directories
// in the image are not restored (they were).
func TestExtractDropsSetuid(t *testing.T) {
	r := ownRaw(t, dirNode("",
		&ext4img.Node{Name: "suid", Mode: 0o755 | fs.ModeSetuid, Size: 1, Data: []byte("x")},
		&ext4img.Node{Name: "sgid", Mode: 0o755 | fs.ModeSetgid, Size: 1, Data: []byte("x")},
		&ext4img.Node{Name: "dir", Mode: fs.ModeDir | 0o755 | fs.ModeSetgid | fs.ModeSticky},
	), 0)
	d, err := OpenDisk(r.path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	x := filepath.Join(t.TempDir(), "x")
	if _, err := Extract(context.Background(), d, x, false); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{"suid": 0o755, "sgid": 0o755, "dir": fs.ModeDir | 0o755 | fs.ModeSticky} {
		fi, err := os.Lstat(filepath.Join(x, name))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v, %v; want %v", name, fi.Mode(), err, want)
		}
	}
}

// TestExtractHoles: holes in files stay holes in the extracted file (a
// sparse file costs no disk space), and the bytes are right.
func TestExtractHoles(t *testing.T) {
	src := t.TempDir()
	data := append(append(testenv.RandBytes(1, 5000), make([]byte, 8<<20)...), testenv.RandBytes(2, 100)...)
	data = append(data, make([]byte, 8<<20)...)
	testenv.WriteFileMode(t, filepath.Join(src, "sparse.ko"), data, 0o644)
	r := mkfsRaw(t, src, "32M", "-t", "ext4")
	d, err := OpenDisk(r.path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	x := filepath.Join(t.TempDir(), "x")
	if _, err := Extract(context.Background(), d, x, false); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(x, "sparse.ko"))
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if out := testenv.Run(t, "du", "-B1", filepath.Join(x, "sparse.ko")); !strings.HasPrefix(out, "1") || len(strings.Fields(out)[0]) > 6 {
		t.Errorf("extracted file is not sparse: du says %s", strings.Fields(out)[0])
	}
	var buf bytes.Buffer
	err = Walk(d, func(e Entry) error {
		if e.Path == "sparse.ko" {
			_, err := io.Copy(&buf, io.NewSectionReader(entryReader{e}, 0, e.Size))
			return err
		}
		return nil
	})
	if err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("Entry.WriteTo: %v", err)
	}
}

// entryReader adapts Entry.WriteTo to io.ReaderAt for small files.
type entryReader struct{ e Entry }

func (r entryReader) ReadAt(p []byte, off int64) (int, error) {
	var buf bytes.Buffer
	if _, err := r.e.WriteTo(&buf); err != nil {
		return 0, err
	}
	return bytes.NewReader(buf.Bytes()).ReadAt(p, off)
}
