package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

const sde = 1700000000

// synthetic makes a staged tree root/lib/modules/<rel> with the cases a
// module tree can hold: modules of several sizes, an empty file, unusual
// modes, fast and slow symlinks, an empty directory, a directory with
// hundreds of entries, and the build/source symlinks WSL must not see.
func synthetic(t *testing.T, root, rel string) string {
	md := filepath.Join(root, "lib", "modules", rel)
	testenv.WriteFileMode(t, filepath.Join(md, "kernel/drivers/net/a.ko"), testenv.RandBytes(1, 100_000), 0o644)
	testenv.WriteFileMode(t, filepath.Join(md, "kernel/drivers/net/empty.ko"), nil, 0o644)
	testenv.WriteFileMode(t, filepath.Join(md, "kernel/big.ko"), testenv.RandBytes(2, 5<<20+123), 0o644)
	testenv.WriteFileMode(t, filepath.Join(md, "modules.order"), []byte("kernel/drivers/net/a.ko\nkernel/big.ko\n"), 0o644)
	testenv.WriteFileMode(t, filepath.Join(md, "extra/suid"), []byte("#!/bin/sh\n"), 0o4755|os.ModeSetuid)
	testenv.WriteFileMode(t, filepath.Join(md, "extra/private"), []byte("x"), 0o600)
	testenv.WriteFileMode(t, filepath.Join(md, "extra/readonly"), []byte("y"), 0o444)
	testenv.WriteFileMode(t, filepath.Join(md, "closed/inner"), []byte("z"), 0o644)
	os.Chmod(filepath.Join(md, "closed"), 0o700)
	for i := 0; i < 300; i++ {
		testenv.WriteFileMode(t, filepath.Join(md, "many", fmt.Sprintf("module-with-a-rather-long-name-%03d.ko", i)), []byte(fmt.Sprint(i)), 0o644)
	}
	os.MkdirAll(filepath.Join(md, "emptydir"), 0o755)
	os.Symlink("drivers/net/a.ko", filepath.Join(md, "kernel/fast-link"))
	os.Symlink(strings.Repeat("long/", 30)+"target.ko", filepath.Join(md, "kernel/slow-link"))
	os.Symlink("/usr/src/linux-headers-"+rel, filepath.Join(md, "build"))
	os.Symlink("/usr/src/linux-source", filepath.Join(md, "source"))
	return md
}

// compareTrees checks that got holds exactly want's entries (minus those
// skip reports), with the same types, permission bits, bytes and symlink
// targets. An empty lost+found at the top of got is allowed.
func compareTrees(t *testing.T, want, got string, skip func(rel string) bool) {
	t.Helper()
	compareTreesMode(t, want, got, skip, 0)
}

// compareTreesMode is compareTrees ignoring the mode bits in ignore.
func compareTreesMode(t *testing.T, want, got string, skip func(rel string) bool, ignore fs.FileMode) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		if rel == "." {
			return nil
		}
		if skip != nil && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		seen[rel] = true
		wi, _ := os.Lstat(p)
		gi, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			t.Errorf("%s: missing: %v", rel, err)
			return nil
		}
		if wi.Mode()&^ignore != gi.Mode()&^ignore {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		switch {
		case wi.Mode()&fs.ModeSymlink != 0:
			wt, _ := os.Readlink(p)
			gt, _ := os.Readlink(filepath.Join(got, rel))
			if wt != gt {
				t.Errorf("%s: target %q, want %q", rel, gt, wt)
			}
		case wi.Mode().IsRegular():
			if !sameFile(t, p, filepath.Join(got, rel)) {
				t.Errorf("%s: content differs", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(got, p)
		if err != nil || rel == "." {
			return err
		}
		if skip != nil && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if rel == "lost+found" {
			if ents, _ := os.ReadDir(p); len(ents) != 0 {
				t.Errorf("lost+found is not empty")
			}
			return filepath.SkipDir
		}
		if !seen[rel] {
			t.Errorf("%s: unexpected entry", rel)
		}
		return nil
	})
}

func sameFile(t *testing.T, a, b string) bool {
	ha, hb := fileHash(t, a), fileHash(t, b)
	return ha == hb
}

func fileHash(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkVHDX runs the independent checkers on a built image and returns the
// directory debugfs dumped the filesystem to.
func checkVHDX(t *testing.T, res *Result) string {
	t.Helper()
	dir := t.TempDir()
	testenv.Run(t, "qemu-img", "check", res.Path)
	raw := filepath.Join(dir, "raw.img")
	testenv.Run(t, "qemu-img", "convert", "-O", "raw", res.Path, raw)
	if h := fileHash(t, raw); h != res.RawSHA256 {
		t.Errorf("raw sha256 %s, Result says %s", h, res.RawSHA256)
	}
	if h := fileHash(t, res.Path); h != res.SHA256 {
		t.Errorf("vhdx sha256 %s, Result says %s", h, res.SHA256)
	}
	out, err := exec.Command(testenv.Tool(t, "e2fsck"), "-fn", raw).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	if out := testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vhdx", raw, res.Path); !strings.Contains(out, "identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}
	dump := filepath.Join(dir, "dump")
	os.Mkdir(dump, 0o755)
	testenv.Run(t, "debugfs", "-R", "rdump / "+dump, raw)
	// Owner and times, as debugfs sees them.
	st := testenv.Run(t, "debugfs", "-R", "stat /", raw)
	for _, f := range []string{"ctime", "atime", "mtime", "crtime"} {
		if !strings.Contains(st, fmt.Sprintf("%s: 0x%08x:00000000", f, sde)) {
			t.Errorf("debugfs stat /: no %s of %d:\n%s", f, sde, st)
		}
	}
	if !strings.Contains(st, "User:     0   Group:     0") {
		t.Errorf("debugfs stat /: owner not root:\n%s", st)
	}
	os.Remove(raw)
	return dump
}

func TestDebianTree(t *testing.T) {
	root, rel := testenv.DebianModules(t)
	dir := t.TempDir()
	opts := Options{ModuleDir: filepath.Join(root, "lib", "modules", rel), Release: rel, Slack: DefaultSlack, SourceDateEpoch: sde}
	res, err := Build(context.Background(), opts, filepath.Join(dir, "a.vhdx"), nil)
	if err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(root, "lib", "modules", rel)
	t.Logf("%d files, %d dirs, disk %d, vhdx %d, %d blocks stored", res.Files, res.Dirs, res.DiskSize, res.Size, res.StoredBlocks)
	if res.Files < 4000 {
		t.Fatalf("only %d files", res.Files)
	}
	dump := checkVHDX(t, res)
	compareTrees(t, md, dump, nil)
	// Sizing: content plus metadata plus slack, not much more.
	if limit := res.ContentBytes + res.ContentBytes/10 + DefaultSlack + 8<<20; res.DiskSize > limit {
		t.Errorf("disk of %d bytes for %d bytes of content", res.DiskSize, res.ContentBytes)
	}
	// Our own reader agrees.
	d, err := OpenDisk(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ex := filepath.Join(t.TempDir(), "x")
	if _, err := Extract(context.Background(), d, ex, false); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, md, ex, nil)
	// The in-place file system reads the same tree, concurrently.
	compareFS(t, md, res.Path)
	// Reproducible: a second build elsewhere gives the same bytes.
	res2, err := Build(context.Background(), opts, filepath.Join(t.TempDir(), "b.vhdx"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res2.SHA256 != res.SHA256 || res2.RawSHA256 != res.RawSHA256 {
		t.Fatalf("second build differs: %s vs %s", res2.SHA256, res.SHA256)
	}
}

func TestLayoutsAndContent(t *testing.T) {
	const rel = "6.6.87.2-microsoft-standard-WSL2"
	src := t.TempDir()
	md := synthetic(t, src, rel)
	devel := filepath.Join(t.TempDir(), "devel")
	testenv.WriteFileMode(t, filepath.Join(devel, "Makefile"), []byte("obj-m :=\n"), 0o644)
	testenv.WriteFileMode(t, filepath.Join(devel, "scripts/mod/modpost"), testenv.RandBytes(3, 4000), 0o755)
	os.Symlink("../include", filepath.Join(devel, "scripts/inc"))
	headers := filepath.Join(t.TempDir(), "headers")
	testenv.WriteFileMode(t, filepath.Join(headers, "include/linux/types.h"), []byte("#define X\n"), 0o644)
	dropped := func(r string) bool { return r == "build" || r == "source" }
	out := t.TempDir()

	t.Run("flat", func(t *testing.T) {
		res, err := Build(context.Background(), Options{ModuleDir: filepath.Join(src, "lib", "modules", rel), Release: rel, Devel: devel, SourceDateEpoch: sde}, filepath.Join(out, "flat.vhdx"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.DevelBytes == 0 || res.ModulesBytes == 0 {
			t.Errorf("byte counts %+v", res)
		}
		dump := checkVHDX(t, res)
		// debugfs rdump chowns after chmod, which clears setuid: check it
		// with debugfs stat instead.
		compareTreesMode(t, md, dump, dropped, fs.ModeSetuid)
		compareTrees(t, devel, filepath.Join(dump, "build"), nil)
		raw := filepath.Join(t.TempDir(), "raw")
		testenv.Run(t, "qemu-img", "convert", "-O", "raw", res.Path, raw)
		if st := testenv.Run(t, "debugfs", "-R", "stat /extra/suid", raw); !strings.Contains(st, "Mode:  04755") {
			t.Errorf("setuid bit lost:\n%s", st)
		}
	})
	t.Run("nested", func(t *testing.T) {
		res, err := Build(context.Background(), Options{ModuleDir: filepath.Join(src, "lib", "modules", rel), Release: rel, Layout: LayoutNested, Headers: headers, SourceDateEpoch: sde}, filepath.Join(out, "nested.vhdx"), nil)
		if err != nil {
			t.Fatal(err)
		}
		dump := checkVHDX(t, res)
		top, _ := os.ReadDir(dump)
		var names []string
		for _, e := range top {
			names = append(names, e.Name())
		}
		if strings.Join(names, ",") != rel+",lost+found" {
			t.Fatalf("top level %v", names)
		}
		compareTreesMode(t, md, filepath.Join(dump, rel, "modules"), dropped, fs.ModeSetuid)
		compareTrees(t, headers, filepath.Join(dump, rel, "linux-headers"), nil)
		// Our reader: owner root, times from SOURCE_DATE_EPOCH everywhere.
		d, err := OpenDisk(res.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		n := 0
		if err := Walk(d, func(e Entry) error {
			n++
			if e.UID != 0 || e.GID != 0 || e.MTime != sde {
				t.Errorf("/%s: owner %d:%d mtime %d", e.Path, e.UID, e.GID, e.MTime)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if want := res.Files + res.Dirs + res.Symlinks + 2; n != want { // + root and lost+found
			t.Errorf("walked %d entries, want %d", n, want)
		}
	})
	t.Run("headers need nested", func(t *testing.T) {
		_, err := Build(context.Background(), Options{ModuleDir: filepath.Join(src, "lib", "modules", rel), Release: rel, Headers: headers}, filepath.Join(out, "h.vhdx"), nil)
		if err == nil || !strings.Contains(err.Error(), "nested") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestReproducible(t *testing.T) {
	const rel = "6.1.0-test"
	a, b := t.TempDir(), t.TempDir()
	synthetic(t, a, rel)
	synthetic(t, b, rel)
	// Different host mtimes and owners must not matter.
	os.Chtimes(filepath.Join(b, "lib/modules", rel, "modules.order"), bytesTime(1), bytesTime(1))
	build := func(src string) *Result {
		res, err := Build(context.Background(), Options{ModuleDir: filepath.Join(src, "lib", "modules", rel), Release: rel, SourceDateEpoch: sde}, filepath.Join(t.TempDir(), "m.vhdx"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	ra, rb := build(a), build(b)
	if ra.SHA256 != rb.SHA256 {
		t.Fatalf("same tree, different sha256: %s %s", ra.SHA256, rb.SHA256)
	}
	p := filepath.Join(b, "lib/modules", rel, "kernel/drivers/net/a.ko")
	data, _ := os.ReadFile(p)
	data[5000] ^= 1
	os.WriteFile(p, data, 0o644)
	rc := build(b)
	if rc.SHA256 == ra.SHA256 || rc.RawSHA256 == ra.RawSHA256 {
		t.Fatal("a one-byte change did not change the sha256")
	}
	// A different SOURCE_DATE_EPOCH changes the image too.
	res, err := Build(context.Background(), Options{ModuleDir: filepath.Join(a, "lib", "modules", rel), Release: rel, SourceDateEpoch: sde + 1}, filepath.Join(t.TempDir(), "m.vhdx"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 == ra.SHA256 {
		t.Fatal("SOURCE_DATE_EPOCH does not reach the image")
	}
}

func bytesTime(n int64) (tm timeT) { return unixTime(n) }

// TestVHDRead reads the ext4 inside VHD files made by qemu-img (fixed and
// dynamic), from our image and from an mke2fs image with hashed
// directories and metadata_csum (like WSL's stock modules.vhd).
func TestVHDRead(t *testing.T) {
	const rel = "6.1.0-test"
	src := t.TempDir()
	md := synthetic(t, src, rel)
	dir := t.TempDir()
	res, err := Build(context.Background(), Options{ModuleDir: filepath.Join(src, "lib", "modules", rel), Release: rel, SourceDateEpoch: sde}, filepath.Join(dir, "m.vhdx"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// An mke2fs image of the same tree, with htree directories.
	plain := filepath.Join(t.TempDir(), "plain")
	testenv.Run(t, "cp", "-a", md, plain)
	os.Remove(filepath.Join(plain, "build"))
	os.Remove(filepath.Join(plain, "source"))
	mk := filepath.Join(dir, "mk.img")
	cmd := exec.Command(testenv.Tool(t, "mke2fs"), "-q", "-t", "ext4", "-O", "metadata_csum,dir_index", "-b", "1024", "-d", plain, mk, "64M")
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	if out, err := exec.Command(testenv.Tool(t, "e2fsck"), "-fyD", mk).CombinedOutput(); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("e2fsck -D: %v\n%s", err, out)
	}
	if out := testenv.Run(t, "debugfs", "-R", "htree /many", mk); !strings.Contains(out, "Root node dump") {
		t.Fatalf("no htree directory in the mke2fs image:\n%.500s", out)
	}
	for _, in := range []struct{ name, file, fmt string }{{"ours", res.Path, "vhdx"}, {"mke2fs", mk, "raw"}} {
		for _, sub := range []string{"fixed", "dynamic"} {
			t.Run(in.name+"-"+sub, func(t *testing.T) {
				v := filepath.Join(t.TempDir(), "m.vhd")
				testenv.Run(t, "qemu-img", "convert", "-f", in.fmt, "-O", "vpc", "-o", "subformat="+sub, in.file, v)
				d, err := OpenDisk(v)
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				if d.Format != "vhd-"+sub {
					t.Fatalf("format %s", d.Format)
				}
				ex := filepath.Join(t.TempDir(), "x")
				if _, err := Extract(context.Background(), d, ex, false); err != nil {
					t.Fatal(err)
				}
				// Extract drops the setuid bit of extra/suid (checked in
				// TestExtractDropsSetuid); everything else is kept.
				compareTreesMode(t, plain, ex, nil, fs.ModeSetuid)
			})
		}
	}
}

// TestOver4GiB builds a tree that needs a disk over 4 GiB (a sparse file),
// so the VHDX BAT has sector-bitmap entries.
func TestOver4GiB(t *testing.T) {
	src := t.TempDir()
	md := filepath.Join(src, "lib/modules/big")
	testenv.WriteFileMode(t, filepath.Join(md, "a/small.ko"), testenv.RandBytes(7, 70_000), 0o644)
	f, err := os.Create(filepath.Join(md, "a/huge.bin"))
	if err != nil {
		t.Fatal(err)
	}
	const huge = 4<<30 + 300<<20
	f.WriteAt([]byte("tail"), huge-4)
	f.Close()
	testenv.WriteFileMode(t, filepath.Join(md, "z/after.ko"), testenv.RandBytes(8, 3<<20), 0o644)
	res, err := Build(context.Background(), Options{ModuleDir: filepath.Join(src, "lib", "modules", "big"), Release: "big", SourceDateEpoch: sde}, filepath.Join(t.TempDir(), "big.vhdx"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.DiskSize <= 4<<30+300<<20 {
		t.Fatalf("disk size %d", res.DiskSize)
	}
	testenv.Run(t, "qemu-img", "check", res.Path)
	// The huge file spans dozens of block groups: its extents need a
	// depth-1 extent tree, which e2fsck checks.
	raw := filepath.Join(t.TempDir(), "raw")
	testenv.Run(t, "qemu-img", "convert", "-O", "raw", res.Path, raw)
	if out, err := exec.Command(testenv.Tool(t, "e2fsck"), "-fn", raw).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	if ex := testenv.Run(t, "debugfs", "-R", "ex /a/huge.bin", raw); !strings.Contains(ex, "\n 1/ 1 ") {
		t.Errorf("huge.bin has no depth-1 extent tree:\n%.600s", ex)
	}
	os.Remove(raw)
	if res.Size > 64<<20 {
		t.Errorf("vhdx of %d bytes for a mostly sparse tree", res.Size)
	}
	d, err := OpenDisk(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	err = Walk(d, func(e Entry) error {
		switch e.Path {
		case "a/huge.bin":
			var buf bytes.Buffer
			if _, err := e.WriteTo(tailWriter{&buf}); err != nil {
				return err
			}
			if e.Size != huge || !bytes.HasSuffix(buf.Bytes(), []byte("tail")) {
				return fmt.Errorf("huge.bin: size %d, tail %q", e.Size, buf.Bytes())
			}
		case "a/small.ko", "z/after.ko":
			var buf bytes.Buffer
			if _, err := e.WriteTo(&buf); err != nil {
				return err
			}
			if fileHash(t, filepath.Join(md, e.Path)) != hashOf(buf.Bytes()) {
				return fmt.Errorf("%s differs", e.Path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tailWriter keeps only the last 16 bytes written.
type tailWriter struct{ b *bytes.Buffer }

func (w tailWriter) Write(p []byte) (int, error) {
	w.b.Write(p)
	if w.b.Len() > 16 {
		rest := append([]byte(nil), w.b.Bytes()[w.b.Len()-16:]...)
		w.b.Reset()
		w.b.Write(rest)
	}
	return len(p), nil
}

func hashOf(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func TestBadInput(t *testing.T) {
	const rel = "6.1.0-test"
	build := func(src string, out string, force bool) error {
		_, err := Build(context.Background(), Options{ModuleDir: filepath.Join(src, "lib", "modules", rel), Release: rel, SourceDateEpoch: sde, Force: force}, out, nil)
		return err
	}
	bad := func(name string, prep func(md string), want string) {
		t.Run(name, func(t *testing.T) {
			src := t.TempDir()
			md := filepath.Join(src, "lib/modules", rel)
			testenv.WriteFileMode(t, filepath.Join(md, "kernel/a.ko"), []byte("ko"), 0o644)
			prep(md)
			out := t.TempDir()
			err := build(src, filepath.Join(out, "m.vhdx"), false)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want it to mention %q", err, want)
			}
			assertEmpty(t, out)
		})
	}
	bad("device node", func(md string) {
		if err := syscall.Mknod(filepath.Join(md, "kernel/null"), syscall.S_IFCHR|0o600, 1<<8|3); err != nil {
			testenv.Missing(t, "mknod (needs root): %v", err)
		}
	}, "kernel/null: a character device is not a regular file")
	bad("socket", func(md string) {
		l, err := net.Listen("unix", filepath.Join(md, "kernel/sock"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}, "kernel/sock: a socket is not a regular file")
	bad("fifo", func(md string) {
		if err := syscall.Mkfifo(filepath.Join(md, "fifo"), 0o644); err != nil {
			t.Fatal(err)
		}
	}, "a named pipe")
	bad("newline in a name", func(md string) {
		testenv.WriteFileMode(t, filepath.Join(md, "kernel/bad\nname.ko"), []byte("x"), 0o644)
	}, "contains a newline")
	t.Run("missing source", func(t *testing.T) {
		out := t.TempDir()
		err := build(filepath.Join(out, "nope"), filepath.Join(out, "m.vhdx"), false)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v", err)
		}
		assertEmpty(t, out)
	})
	t.Run("no module tree", func(t *testing.T) {
		src := t.TempDir()
		testenv.WriteFileMode(t, filepath.Join(src, "README"), nil, 0o644)
		out := t.TempDir()
		if err := build(src, filepath.Join(out, "m.vhdx"), false); err == nil || !strings.Contains(err.Error(), "lib/modules/"+rel) {
			t.Fatalf("err = %v", err)
		}
		assertEmpty(t, out)
	})
	src := t.TempDir()
	synthetic(t, src, rel)
	t.Run("output in a missing dir", func(t *testing.T) {
		out := t.TempDir()
		err := build(src, filepath.Join(out, "missing", "m.vhdx"), false)
		if err == nil || !strings.Contains(err.Error(), "missing") {
			t.Fatalf("err = %v", err)
		}
		assertEmpty(t, out)
	})
	out := t.TempDir()
	good := filepath.Join(out, "m.vhdx")
	if err := build(src, good, false); err != nil {
		t.Fatal(err)
	}
	t.Run("existing output", func(t *testing.T) {
		if err := build(src, good, false); !errors.Is(err, atomicfile.ErrExists) {
			t.Fatalf("err = %v", err)
		}
		if err := build(src, good, true); err != nil {
			t.Fatalf("with force: %v", err)
		}
		ents, _ := os.ReadDir(out)
		if len(ents) != 1 {
			t.Fatalf("%d files in the output dir", len(ents))
		}
	})
	orig, _ := os.ReadFile(good)
	damaged := map[string]struct {
		data []byte
		want string
	}{
		"truncated":        {orig[:len(orig)/2], "truncated"},
		"truncated header": {orig[:100_000], "too short"},
		"both headers":     {flip(orig, 0x10000+200, 0x20000+200), "both headers"},
		"ext4 superblock":  {flip(orig, 4<<20+1080), "superblock magic"},
		"ext4 inode table": {zeroRange(orig, 4<<20+inodeTableOffset(t, orig), 4096), "inode 2"},
		"not an image":     {[]byte("hello, world\n"), "superblock"},
	}
	for name, c := range damaged {
		t.Run("ls "+name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "bad.vhdx")
			os.WriteFile(p, c.data, 0o644)
			err := lsAndExtract(p, filepath.Join(dir, "x"))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
			if _, err := os.Lstat(filepath.Join(dir, "x")); err == nil {
				t.Fatal("extract left a directory behind")
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Fatalf("%d entries left in %s", len(ents), dir)
			}
		})
	}
}

func lsAndExtract(p, dest string) error {
	d, err := OpenDisk(p)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := Walk(d, func(Entry) error { return nil }); err != nil {
		if _, xerr := Extract(context.Background(), d, dest, false); xerr == nil {
			return errors.New("walk failed but extract succeeded")
		}
		return err
	}
	return nil
}

func flip(b []byte, offs ...int) []byte {
	c := bytes.Clone(b)
	for _, o := range offs {
		c[o] ^= 0xFF
	}
	return c
}

func zeroRange(b []byte, off, n int) []byte {
	c := bytes.Clone(b)
	clear(c[off : off+n])
	return c
}

// inodeTableOffset returns the byte offset, within the raw disk, of the
// first inode table block (group 0), read from the group descriptor.
func inodeTableOffset(t *testing.T, vhdxBytes []byte) int {
	// The first stored payload block (raw offset 0) is at file offset 4 MiB.
	gd := vhdxBytes[4<<20+4096:]
	return int(uint32(gd[8])|uint32(gd[9])<<8|uint32(gd[10])<<16|uint32(gd[11])<<24) * 4096
}
