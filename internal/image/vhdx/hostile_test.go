package vhdx

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv/memlimit"
)

// TestQemuMade reads VHDX files made by qemu-img convert (dynamic with 8
// MiB blocks and a ZERO-state BAT, fixed, and dynamic with 32 MiB blocks)
// and compares them with the raw disk.
func TestQemuMade(t *testing.T) {
	dir := t.TempDir()
	raw := make([]byte, 40*mib+4096)
	for i, seed := range []int64{1, 2, 3} {
		copy(raw[(i*13+1)*mib:], pattern(seed))
	}
	rawPath := filepath.Join(dir, "d.raw")
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{"subformat=dynamic", "subformat=fixed", "subformat=dynamic,block_size=33554432"} {
		t.Run(o, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "q.vhdx")
			testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", o, rawPath, p)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Open(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, d.Size())
			if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, raw) {
				t.Fatalf("content differs (%v)", err)
			}
		})
	}
}

// ourDisk writes a small VHDX with our writer and returns its bytes.
func ourDisk(t *testing.T) []byte {
	p := filepath.Join(t.TempDir(), "d.vhdx")
	writeDisk(t, p, 8*mib, map[int64][]byte{1: pattern(7)})
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// metaEntry returns the metadata table entry of item g.
func metaEntry(t *testing.T, b []byte, g GUID) []byte {
	for i := 0; i < int(le.Uint16(b[metaOffset+10:])); i++ {
		e := b[metaOffset+32+32*i : metaOffset+64+32*i]
		if GUID(e[:16]) == g {
			return e
		}
	}
	t.Fatalf("no metadata item %s", g)
	return nil
}

// regionEntry returns region table entry of region g in table copy off.
func regionEntry(t *testing.T, b []byte, off int, g GUID) []byte {
	for i := 0; i < int(le.Uint32(b[off+8:])); i++ {
		e := b[off+16+32*i : off+48+32*i]
		if GUID(e[:16]) == g {
			return e
		}
	}
	t.Fatalf("no region %s", g)
	return nil
}

// fixRegions recomputes both region table checksums.
func fixRegions(b []byte) {
	for _, off := range []int{region1Offset, region2Offset} {
		tb := b[off : off+regionSize]
		le.PutUint32(tb[4:], checksum(tb, 4))
	}
}

// TestHostile covers the security review's cases (a zero-length metadata
// item with an offset past the region panicked; a region whose offset plus
// length overflows allocated 4 GiB from a small file) and other offsets
// and lengths that overflow or leave the file.
func TestHostile(t *testing.T) {
	orig := ourDisk(t)
	cases := map[string]struct {
		edit func(t *testing.T, b []byte)
		want string
	}{
		"zero-length metadata item past the region": {func(t *testing.T, b []byte) {
			e := metaEntry(t, b, guidPage83)
			le.PutUint32(e[16:], 0x7FFFFFFF)
			le.PutUint32(e[20:], 0)
		}, `"virtual disk ID" missing or short`},
		"metadata item past the region": {func(t *testing.T, b []byte) {
			le.PutUint32(metaEntry(t, b, guidVirtualSize)[16:], 0xFFFFFFF0)
			le.PutUint32(metaEntry(t, b, guidVirtualSize)[20:], 0x20)
		}, "outside the"},
		"region offset plus length overflows": {func(t *testing.T, b []byte) {
			for _, off := range []int{region1Offset, region2Offset} {
				e := regionEntry(t, b, off, guidMetadataRegion)
				le.PutUint64(e[16:], 0x7FFFFFFFFFF00000)
				le.PutUint32(e[24:], 0xFFF00000)
			}
			fixRegions(b)
		}, "past the end of the file"},
		"BAT region of 4 GiB": {func(t *testing.T, b []byte) {
			for _, off := range []int{region1Offset, region2Offset} {
				le.PutUint32(regionEntry(t, b, off, guidBATRegion)[24:], 0xFFF00000)
			}
			fixRegions(b)
		}, "past the end of the file"},
		"overlapping regions": {func(t *testing.T, b []byte) {
			for _, off := range []int{region1Offset, region2Offset} {
				le.PutUint64(regionEntry(t, b, off, guidBATRegion)[16:], metaOffset)
			}
			fixRegions(b)
		}, "overlaps"},
		"block offset near 2^64": {func(t *testing.T, b []byte) {
			le.PutUint64(b[batOffset+8:], 0xFFFFFFFFFFF00000|stateFullyPresent)
		}, "block 1 at file offset"},
		"block over the BAT": {func(t *testing.T, b []byte) {
			le.PutUint64(b[batOffset+8:], batOffset|stateFullyPresent)
		}, "overlaps the BAT"},
		"virtual size above 64 TiB": {func(t *testing.T, b []byte) {
			e := metaEntry(t, b, guidVirtualSize)
			le.PutUint64(b[metaOffset+int(le.Uint32(e[16:])):], 1<<62)
		}, "virtual size"},
	}
	memlimit.Limit(t, 1<<30)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			b := bytes.Clone(orig)
			c.edit(t, b)
			var err error
			memlimit.Check(t, 64<<20, func() { _, err = Open(bytes.NewReader(b), int64(len(b))) })
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want a format error mentioning %q", err, c.want)
			}
		})
	}
}
