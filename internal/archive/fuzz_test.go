package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Limits of one fuzz input: the decompressed tar stream (Options.MaxBytes),
// and what one extraction may allocate in all.
const (
	fuzzMaxBytes = 16 << 20
	fuzzMaxAlloc = 512 << 20
)

// FuzzExtract unpacks arbitrary bytes and checks the invariants of
// Extract: no panic; nothing written outside the destination and no
// temporary directory left next to it; on success only directories,
// regular files and symlinks with clean relative names, every symlink
// resolving (by the kernel, and by os.Root) inside the tree; and bounded
// memory. The seeds are real archives: made by GNU tar at test time (gnu,
// pax and ustar formats, gzip, xz and zstd), a slice of the Debian kernel
// source tarball when it is installed, and hostile ones (also in
// testdata/fuzz/FuzzExtract).
func FuzzExtract(f *testing.F) {
	for _, s := range gnuTarSeeds(f) {
		f.Add(s, uint8(0))
		f.Add(s, uint8(1))
	}
	for _, s := range kernelSliceSeeds(f) {
		f.Add(s, uint8(1))
	}
	for _, s := range hostileSeeds(f) {
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, strip uint8) {
		base := t.TempDir()
		sentinel := filepath.Join(base, "sentinel")
		if err := os.WriteFile(sentinel, []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		parent := filepath.Join(base, "p", "q")
		dest := filepath.Join(parent, "out")
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := Extract(context.Background(), bytes.NewReader(data), dest, Options{StripComponents: int(strip % 3), MaxBytes: fuzzMaxBytes})
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > fuzzMaxAlloc {
			t.Errorf("extraction allocated %d MiB (limit %d MiB)", d>>20, fuzzMaxAlloc>>20)
		}
		checkOutside(t, base, sentinel, parent, err == nil)
		if err == nil {
			checkTree(t, dest)
		}
	})
}

// checkOutside checks that base holds only the sentinel (unchanged) and
// parent, which holds only out when the extraction succeeded.
func checkOutside(t *testing.T, base, sentinel, parent string, ok bool) {
	t.Helper()
	if b, err := os.ReadFile(sentinel); err != nil || string(b) != "keep" {
		t.Fatalf("sentinel outside the destination changed: %q %v", b, err)
	}
	var got []string
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == filepath.Join(parent, "out") {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(base, p)
		got = append(got, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := ".,p,p/q,sentinel"
	if strings.Join(got, ",") != want {
		t.Fatalf("outside the destination: %v, want %s", got, want)
	}
	ents, _ := os.ReadDir(parent)
	if ok && (len(ents) != 1 || ents[0].Name() != "out") || !ok && len(ents) != 0 {
		t.Fatalf("next to the destination (success %v): %v", ok, ents)
	}
}

// checkTree checks the unpacked tree: clean names, allowed types, and
// symlinks that resolve inside it.
func checkTree(t *testing.T, dest string) {
	t.Helper()
	realDest, err := filepath.EvalSymlinks(dest)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	err = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dest {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		if filepath.Clean(rel) != rel || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
			t.Errorf("unclean name %q", rel)
		}
		switch d.Type() {
		case 0, fs.ModeDir:
		case fs.ModeSymlink:
			checkLink(t, root, realDest, p, rel)
		default:
			t.Errorf("%s: unexpected file type %v", rel, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func checkLink(t *testing.T, root *os.Root, realDest, p, rel string) {
	t.Helper()
	target, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.IsAbs(target) {
		t.Errorf("%s -> %s: absolute", rel, target)
	}
	if r, err := filepath.EvalSymlinks(p); err == nil && r != realDest && !strings.HasPrefix(r, realDest+"/") {
		t.Errorf("%s -> %s resolves outside the tree, to %s", rel, target, r)
	}
	if _, err := root.Stat(rel); err != nil && strings.Contains(err.Error(), "escapes") {
		t.Errorf("%s -> %s: %v", rel, target, err)
	}
}

// gnuTarSeeds makes archives of a small tree with GNU tar: files, an
// executable, a deep directory, a long name, a relative symlink, a link
// through a directory link and a hard link, in the gnu, pax and ustar
// formats, plain and compressed by every compressor on the machine.
func gnuTarSeeds(f *testing.F) [][]byte {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		return nil
	}
	src := f.TempDir()
	must := func(err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	top := filepath.Join(src, "top")
	long := strings.Repeat("long-directory-name-", 6)
	must(os.MkdirAll(filepath.Join(top, "arch", "x86", "include", long), 0o755))
	must(os.WriteFile(filepath.Join(top, "Makefile"), []byte("obj-m += m.o\n"), 0o644))
	must(os.WriteFile(filepath.Join(top, "build.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(top, "arch", "x86", "include", long, "a.h"), []byte("#define A 1\n"), 0o644))
	must(os.Symlink("arch/x86/include", filepath.Join(top, "inc")))
	must(os.Symlink("../../../Makefile", filepath.Join(top, "arch", "x86", "include", "mk")))
	must(os.Link(filepath.Join(top, "Makefile"), filepath.Join(top, "Kbuild")))
	var out [][]byte
	for _, format := range []string{"gnu", "pax", "ustar"} {
		for _, z := range []string{"", "--gzip", "--xz", "--zstd"} {
			args := []string{"-c", "--format=" + format, "-C", src, "top"}
			if z != "" {
				args = append([]string{z}, args...)
			}
			b, err := exec.Command(tarBin, args...).Output()
			if err != nil {
				continue // the ustar format refuses the long name; a compressor may be missing
			}
			out = append(out, b)
		}
	}
	return out
}

// kernelSliceSeeds returns the first entries of Debian's kernel source
// tarball (when installed), rewritten as a tar of about 512 KiB, plain and
// gzipped, and the raw first 256 KiB of its decompressed stream.
func kernelSliceSeeds(f *testing.F) [][]byte {
	fh, err := os.Open("/usr/src/linux-source-6.12.tar.xz")
	if err != nil {
		return nil
	}
	defer fh.Close()
	xr, err := xz.NewReader(fh)
	if err != nil {
		f.Fatal(err)
	}
	raw := make([]byte, 4<<20)
	if _, err := io.ReadFull(xr, raw); err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(bytes.NewReader(raw))
	for buf.Len() < 512<<10 {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if err := tw.WriteHeader(h); err != nil {
			f.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			f.Fatal(err)
		}
	}
	tw.Close()
	return [][]byte{buf.Bytes(), gz(f, buf.Bytes()), raw[:256<<10]}
}

// hostileSeeds are archives Extract must refuse (or bound).
func hostileSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, entries := range [][]entry{
		{{name: "top/../../etc/passwd", body: "x", typ: tar.TypeReg}},
		{{name: "top/l", link: "/etc", typ: tar.TypeSymlink}},
		{{name: "top/l", link: ".", typ: tar.TypeSymlink}, {name: "top/l/../../../escape", body: "x", typ: tar.TypeReg}},
		{{name: "top/d", link: ".", typ: tar.TypeSymlink}, {name: "top/d/d/d/l", link: "../../../etc/passwd", typ: tar.TypeSymlink}},
		{{name: "top/sub/", typ: tar.TypeDir}, {name: "top/sub/l", link: "../x", typ: tar.TypeSymlink}, {name: "top/h", link: "top/sub/l", typ: tar.TypeLink}},
		{{name: "top/l", link: "b/c/../..", typ: tar.TypeSymlink}, {name: "top/b", link: ".", typ: tar.TypeSymlink}, {name: "top/c/", typ: tar.TypeDir}},
		{{name: "top/a", link: "b", typ: tar.TypeSymlink}, {name: "top/b", link: "a", typ: tar.TypeSymlink}, {name: "top/a/x", body: "x", typ: tar.TypeReg}},
		{{name: "top/dev", typ: tar.TypeChar}},
	} {
		out = append(out, mkTarTB(tb, entries))
	}
	// 64 MiB of zeros (over fuzzMaxBytes) in a 64 KiB gzip stream.
	var bomb bytes.Buffer
	tw := tar.NewWriter(&bomb)
	tw.WriteHeader(&tar.Header{Name: "top/zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: 64 << 20})
	tw.Write(make([]byte, 64<<20))
	tw.Close()
	out = append(out, gz(tb, bomb.Bytes()))
	out = append(out, zstdHugeWindow, xzHugeDict(tb))
	return out
}

// zstdHugeWindow is an empty zstd frame that asks for a 512 MiB window.
var zstdHugeWindow = []byte{0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x98, 0x01, 0x00, 0x00}

// xzHugeDict is a small xz stream whose first block header says its
// LZMA2 dictionary is 1.5 GiB.
func xzHugeDict(tb testing.TB) []byte {
	var b bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 8 << 20}.NewWriter(&b)
	if err != nil {
		tb.Fatal(err)
	}
	w.Write(mkTarTB(tb, []entry{{name: "top/a", body: "a", typ: tar.TypeReg}}))
	w.Close()
	data := b.Bytes()
	size, ok := xzDictSize(data)
	if !ok || size != 8<<20 {
		tb.Fatalf("xz seed: dictionary %d %v", size, ok)
	}
	// The LZMA2 filter flags are ID 0x21, one properties byte, and the
	// dictionary code: 22 is 8 MiB, 37 is 1.5 GiB.
	hdr := data[xzStreamHeader : xzStreamHeader+(int(data[xzStreamHeader])+1)*4]
	i := bytes.Index(hdr, []byte{0x21, 0x01, 22})
	if i < 0 {
		tb.Fatal("xz seed: no LZMA2 filter flags in the block header")
	}
	hdr[i+2] = 37
	binary.LittleEndian.PutUint32(hdr[len(hdr)-4:], crc32.ChecksumIEEE(hdr[:len(hdr)-4]))
	return data
}

func gz(tb testing.TB, b []byte) []byte {
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return z.Bytes()
}

// mkTarTB is mkTar for any testing.TB.
func mkTarTB(tb testing.TB, entries []entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

// TestExtractLimits checks the bounds the fuzz target relies on: the
// decompressed size, the zstd window and the xz dictionary.
func TestExtractLimits(t *testing.T) {
	var bomb bytes.Buffer
	tw := tar.NewWriter(&bomb)
	tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: 8 << 20})
	tw.Write(make([]byte, 8<<20))
	tw.Close()
	var zs bytes.Buffer
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(bomb.Bytes())
	zw.Close()
	for name, c := range map[string]struct {
		data []byte
		max  int64
	}{
		"gzip-over-max-bytes": {gz(t, bomb.Bytes()), 1 << 20},
		"zstd-over-max-bytes": {zs.Bytes(), 1 << 20},
		"zstd-huge-window":    {zstdHugeWindow, 0},
		"xz-huge-dictionary":  {xzHugeDict(t), 0},
	} {
		t.Run(name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out")
			_, err := Extract(context.Background(), bytes.NewReader(c.data), dest, Options{MaxBytes: c.max})
			if err == nil {
				t.Fatal("accepted")
			}
			if c.max > 0 && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v does not wrap ErrTooLarge", err)
			}
			if _, serr := os.Lstat(dest); !os.IsNotExist(serr) {
				t.Fatal("destination left behind")
			}
		})
	}
	// Within the limit, the same archive unpacks.
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := Extract(context.Background(), bytes.NewReader(zs.Bytes()), dest, Options{MaxBytes: 9 << 20}); err != nil {
		t.Fatal(err)
	}
}

// TestExtractSparseOverLimit: a PAX sparse entry of 10 GiB (a 200 byte
// archive) is over MaxBytes although its stream is tiny.
func TestExtractSparseOverLimit(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("no tar")
	}
	src := t.TempDir()
	f, err := os.Create(filepath.Join(src, "hole"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(10 << 30)
	f.WriteAt([]byte("x"), 10<<30)
	f.Close()
	data, err := exec.Command(tarBin, "--sparse", "--format=pax", "-cz", "-C", src, "hole").Output()
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	_, err = Extract(context.Background(), bytes.NewReader(data), dest, Options{MaxBytes: 16 << 20})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%d byte sparse archive of 10 GiB: %v, want ErrTooLarge", len(data), err)
	}
}
