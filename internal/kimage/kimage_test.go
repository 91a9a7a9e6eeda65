package kimage_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// symversLines formats exports as the vmlinux lines of Module.symvers,
// sorted.
func symversLines(syms []kimage.Export) []string {
	out := make([]string, len(syms))
	for i, s := range syms {
		e := "EXPORT_SYMBOL"
		if s.GPL {
			e += "_GPL"
		}
		out[i] = fmt.Sprintf("0x%08x\t%s\tvmlinux\t%s\t%s", s.CRC, s.Name, e, s.Namespace)
	}
	sort.Strings(out)
	return out
}

// vmlinuxLines returns the vmlinux lines of a Module.symvers file, sorted.
func vmlinuxLines(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Split(sc.Text(), "\t")[2] == "vmlinux" {
			out = append(out, sc.Text())
		}
	}
	sort.Strings(out)
	if len(out) < 1000 {
		t.Fatalf("%s: only %d vmlinux lines", path, len(out))
	}
	return out
}

// requireLines fails unless got equals want, showing a few differences.
func requireLines(t testing.TB, what string, got, want []string) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	in := map[string]bool{}
	for _, l := range got {
		in[l] = true
	}
	n := 0
	for _, l := range want {
		if !in[l] && n < 5 {
			t.Errorf("%s: missing %q", what, l)
			n++
		}
	}
	t.Fatalf("%s: %d lines, want %d", what, len(got), len(want))
}

// openExports opens path and reads its exports.
func openExports(t testing.TB, path string) (*kimage.File, *kimage.ExportTable) {
	t.Helper()
	f, err := kimage.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	et, err := f.Exports()
	if err != nil {
		t.Fatal(err)
	}
	return f, et
}

// writeTemp writes data to a new file called name.
func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	vmlinuxOnce sync.Once
	vmlinuxData []byte
)

// testVmlinux returns the test kernel's bzImage, its decompressed vmlinux
// ELF and its Module.symvers.
func testVmlinux(t testing.TB) (bz, vmlinux []byte, symvers string) {
	t.Helper()
	k := buildtest.TestKernel(t)
	bz, err := os.ReadFile(k.Image())
	if err != nil {
		t.Fatal(err)
	}
	vmlinuxOnce.Do(func() {
		f, err := kimage.Open(k.Image(), nil)
		if err == nil {
			vmlinuxData = f.Data()
		}
	})
	if vmlinuxData == nil {
		t.Fatal("cannot decompress the test bzImage")
	}
	return bz, vmlinuxData, k.Symvers()
}

func TestTestKernelBzImage(t *testing.T) {
	k := buildtest.TestKernel(t)
	f, et := openExports(t, k.Image())
	if f.Format != kimage.FormatBzImage || f.Compression != kimage.Gzip || f.Machine != elf.EM_X86_64 {
		t.Errorf("format %v, compression %v, machine %v", f.Format, f.Compression, f.Machine)
	}
	if f.Release() != k.Meta.Release {
		t.Errorf("release %q, want %q", f.Release(), k.Meta.Release)
	}
	if et.Layout != kimage.LayoutGPLTables || et.Scanned || et.Entry.Size != 12 || !et.Entry.Relative {
		t.Errorf("layout %v, entry %v, scanned %v", et.Layout, et.Entry, et.Scanned)
	}
	requireLines(t, "bzImage", symversLines(et.Symbols), vmlinuxLines(t, k.Symvers()))
}

// TestDebianVmlinuz reads a distribution kernel nobody here built:
// Debian's relocatable (KASLR) vmlinuz, xz-compressed with the x86 BCJ
// filter, against the Module.symvers of its linux-headers package.
func TestDebianVmlinuz(t *testing.T) {
	root, rel := testenv.DebianModules(t)
	want := testenv.DebianSymvers(t)
	f, et := openExports(t, filepath.Join(root, "boot", "vmlinuz-"+rel))
	if f.Format != kimage.FormatBzImage || f.Compression != kimage.XZ || f.Release() != rel {
		t.Errorf("format %v, compression %v, release %q", f.Format, f.Compression, f.Release())
	}
	requireLines(t, "Debian vmlinuz", symversLines(et.Symbols), vmlinuxLines(t, want))
}

// TestArm64Image reads the arm64 test kernel's raw Image (no section
// headers: the tables are found by structure), gzip'ed, xz'ed with the
// ARM64 BCJ filter, and in EFI zboot wrappers.
func TestArm64Image(t *testing.T) {
	if testing.Short() {
		t.Skip("arm64 test kernel")
	}
	k := buildtest.TestKernelArm64(t)
	want := vmlinuxLines(t, k.Symvers())
	img, err := os.ReadFile(k.Image())
	if err != nil {
		t.Fatal(err)
	}
	f, et := openExports(t, k.Image())
	if f.Format != kimage.FormatArm64Image || f.Machine != elf.EM_AARCH64 || !et.Scanned || f.Release() != k.Meta.Release {
		t.Errorf("format %v, machine %v, scanned %v, release %q", f.Format, f.Machine, et.Scanned, f.Release())
	}
	requireLines(t, "Image", symversLines(et.Symbols), want)

	gz := run(t, img, "gzip", "-n", "-9")
	zst := run(t, img, "zstd", "-19", "-q")
	cases := []struct {
		name   string
		data   []byte
		format kimage.Format
		comp   kimage.Compression
	}{
		{"Image.gz", gz, kimage.FormatArm64Image, kimage.Gzip},
		{"Image.xz", run(t, img, "xz", "--check=crc32", "--threads=1", "--arm64", "--lzma2=lp=2,lc=2,dict=32MiB"), kimage.FormatArm64Image, kimage.XZ},
		{"vmlinuz.efi-gzip", zboot(gz, "gzip", false), kimage.FormatZboot, kimage.Gzip},
		{"vmlinuz.efi-zstd", zboot(append(zst, le32(len(img))...), "zstd", true), kimage.FormatZboot, kimage.Zstd},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, et := openExports(t, writeTemp(t, tc.name, tc.data))
			if f.Format != tc.format || f.Compression != tc.comp {
				t.Errorf("format %v, compression %v", f.Format, f.Compression)
			}
			requireLines(t, tc.name, symversLines(et.Symbols), want)
		})
	}
}

// zboot wraps a compressed payload in an EFI zboot header
// (drivers/firmware/efi/libstub/zboot-header.S); a zstd payload carries
// the size trailer, which the header's size excludes.
func zboot(payload []byte, comp string, trailer bool) []byte {
	h := make([]byte, 0x200)
	copy(h, "MZ\x00\x00zimg")
	binary.LittleEndian.PutUint32(h[8:], uint32(len(h)))
	size := len(payload)
	if trailer {
		size -= 4
	}
	binary.LittleEndian.PutUint32(h[12:], uint32(size))
	copy(h[0x18:], comp)
	binary.LittleEndian.PutUint32(h[0x38:], 0x818223cd) // LINUX_PE_MAGIC
	return append(h, payload...)
}

func le32(n int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(n)) }

// run pipes in through a compressor of the host.
func run(t testing.TB, in []byte, tool string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(testenv.Tool(t, tool), args...)
	cmd.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v: %s", tool, args, err, stderr.Bytes())
	}
	return out.Bytes()
}

// withPayload returns a copy of bzImage bz with its payload replaced.
func withPayload(bz, payload []byte) []byte {
	setup := int(bz[0x1f1])
	if setup == 0 {
		setup = 4
	}
	off := (setup+1)*512 + int(binary.LittleEndian.Uint32(bz[0x248:]))
	out := append(bytes.Clone(bz[:off]), payload...)
	binary.LittleEndian.PutUint32(out[0x24c:], uint32(len(payload)))
	return append(out, make([]byte, 4096)...) // what follows the payload
}

// TestCompressions rebuilds the test bzImage with every compression the
// kernel offers, made with the host's tools and kbuild's options
// (scripts/Makefile.lib, scripts/xz_wrap.sh): each but gzip is followed
// by the uncompressed size (size_append).
func TestCompressions(t *testing.T) {
	bz, vmlinux, symvers := testVmlinux(t)
	want := vmlinuxLines(t, symvers)
	cases := []struct {
		comp kimage.Compression
		tool string
		args []string
	}{
		{kimage.Gzip, "gzip", []string{"-n", "-f", "-9"}},
		{kimage.Bzip2, "bzip2", []string{"-9"}},
		{kimage.LZMA, "lzma", []string{"-9"}},
		{kimage.XZ, "xz", []string{"--check=crc32", "--threads=1", "--x86", "--lzma2=,dict=128MiB"}},
		{kimage.LZ4, "lz4", []string{"-l", "-9", "-", "-"}},
		{kimage.Zstd, "zstd", []string{"-22", "--ultra", "-q"}},
	}
	for _, tc := range cases {
		t.Run(tc.comp.String(), func(t *testing.T) {
			t.Parallel() // the compressors take seconds each
			payload := run(t, vmlinux, tc.tool, tc.args...)
			if tc.comp != kimage.Gzip {
				payload = append(payload, le32(len(vmlinux))...)
			}
			p := writeTemp(t, "bzImage."+tc.comp.String(), withPayload(bz, payload))
			f, et := openExports(t, p)
			if f.Format != kimage.FormatBzImage || f.Compression != tc.comp || f.Size != int64(len(vmlinux)) {
				t.Errorf("format %v, compression %v, size %d", f.Format, f.Compression, f.Size)
			}
			requireLines(t, tc.comp.String(), symversLines(et.Symbols), want)
		})
	}
}

// stripSections returns an ELF without section headers.
func stripSections(b []byte) []byte {
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint64(b[0x28:], 0) // e_shoff
	binary.LittleEndian.PutUint16(b[0x3c:], 0) // e_shnum
	binary.LittleEndian.PutUint16(b[0x3e:], 0) // e_shstrndx
	return b
}

// TestVmlinuxELF reads the plain vmlinux, compressed as a whole, and
// without section headers: the structural search (the arm64 method) must
// find what the section headers say, on the test kernel and on Debian's.
func TestVmlinuxELF(t *testing.T) {
	_, vmlinux, symvers := testVmlinux(t)
	want := vmlinuxLines(t, symvers)
	for _, tc := range []struct {
		name    string
		data    []byte
		comp    kimage.Compression
		scanned bool
	}{
		{"vmlinux", vmlinux, kimage.None, false},
		{"vmlinux.zst", run(t, vmlinux, "zstd", "-3", "-q"), kimage.Zstd, false},
		{"vmlinux-stripped", stripSections(vmlinux), kimage.None, true},
	} {
		f, et := openExports(t, writeTemp(t, tc.name, tc.data))
		if f.Format != kimage.FormatELF || f.Compression != tc.comp || et.Scanned != tc.scanned {
			t.Errorf("%s: format %v, compression %v, scanned %v", tc.name, f.Format, f.Compression, et.Scanned)
		}
		requireLines(t, tc.name, symversLines(et.Symbols), want)
	}
	root, rel := testenv.DebianModules(t)
	deb, err := kimage.Open(filepath.Join(root, "boot", "vmlinuz-"+rel), nil)
	if err != nil {
		t.Fatal(err)
	}
	byName, err := deb.Exports()
	if err != nil {
		t.Fatal(err)
	}
	_, scanned := openExports(t, writeTemp(t, "vmlinux-deb", stripSections(deb.Data())))
	if !scanned.Scanned {
		t.Error("Debian vmlinux without sections: not scanned")
	}
	requireLines(t, "Debian, scanned", symversLines(scanned.Symbols), symversLines(byName.Symbols))
}

func TestOpenErrors(t *testing.T) {
	bz, vmlinux, _ := testVmlinux(t)
	root, rel := testenv.DebianModules(t)
	ko, err := os.ReadFile(filepath.Join(root, "lib", "modules", rel, "kernel", "fs", "fat", "fat.ko"))
	if err != nil {
		t.Fatal(err)
	}
	gz := withPayload(bz, run(t, vmlinux, "gzip", "-n", "-1"))
	payloadEnd := len(gz) - 4096
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, kimage.ErrNotKernel},
		{"text", []byte("#!/bin/sh\necho this is not a kernel\n"), kimage.ErrNotKernel},
		{"module", ko, kimage.ErrNotKernel},
		{"bzImage-header-only", bz[:0x230], kimage.ErrTruncated},
		{"bzImage-half", bz[:len(bz)/2], kimage.ErrTruncated},
		{"bzImage-payload-last-byte", bz[:bzPayloadEnd(bz)-1], kimage.ErrTruncated},
		{"gzip-payload-cut", cutPayload(gz, payloadEnd-1000), kimage.ErrTruncated},
		{"lzo-payload", withPayload(bz, append([]byte{0x89, 'L', 'Z', 'O', 0, 0x0d, 0x0a, 0x1a, 0x0a}, make([]byte, 64)...)), kimage.ErrUnknownCompression},
		{"garbage-payload", withPayload(bz, bytes.Repeat([]byte("garbage!"), 64)), kimage.ErrUnknownCompression},
		{"payload-not-elf", withPayload(bz, run(t, []byte(strings.Repeat("not an ELF file\n", 100)), "gzip", "-9")), kimage.ErrNotKernel},
		{"zstd-size-mismatch", withPayload(bz, append(run(t, vmlinux, "zstd", "-1", "-q"), le32(len(vmlinux)+1)...)), kimage.ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTemp(t, tc.name, tc.data)
			f, err := kimage.Open(p, nil)
			if err == nil {
				f.Close()
				t.Fatalf("no error")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %q: want %v and the file name", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// bzPayloadEnd returns where the payload of bzImage b ends.
func bzPayloadEnd(b []byte) int {
	setup := int(b[0x1f1])
	if setup == 0 {
		setup = 4
	}
	le := binary.LittleEndian
	return (setup+1)*512 + int(le.Uint32(b[0x248:])) + int(le.Uint32(b[0x24c:]))
}

// cutPayload shortens the payload of bzImage b (ending at end) to n bytes,
// keeping the header consistent, as a download cut short and repaired
// would.
func cutPayload(b []byte, n int) []byte {
	setup := int(b[0x1f1])
	if setup == 0 {
		setup = 4
	}
	off := (setup+1)*512 + int(binary.LittleEndian.Uint32(b[0x248:]))
	return withPayload(b, b[off:n])
}

// TestNoModversions: a kernel built without CONFIG_MODVERSIONS has
// __ksymtab but no __kcrctab. The test vmlinux with its CRC sections
// renamed is one.
func TestNoModversions(t *testing.T) {
	_, vmlinux, _ := testVmlinux(t)
	b := bytes.Clone(vmlinux)
	le := binary.LittleEndian
	sh := le.Uint64(b[0x28:]) + 64*uint64(le.Uint16(b[0x3e:])) // the section names' header
	off, size := le.Uint64(b[sh+24:]), le.Uint64(b[sh+32:])
	names := b[off : off+size]
	if n := bytes.Count(names, []byte("__kcrctab")); n != 2 {
		t.Fatalf("%d __kcrctab names", n)
	}
	copy(names, bytes.ReplaceAll(names, []byte("__kcrctab"), []byte("__knotcrc")))
	p := writeTemp(t, "vmlinux-nomodversions", b)
	f, err := kimage.Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.Exports()
	if !errors.Is(err, kimage.ErrNoModversions) || !strings.Contains(err.Error(), p) {
		t.Fatalf("Exports: %v, want ErrNoModversions naming the file", err)
	}
	t.Log(err)
}
