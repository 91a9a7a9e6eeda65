package vhdx

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

func TestCRC32CVector(t *testing.T) {
	if got := crc32.Checksum([]byte("123456789"), castagnoli); got != 0xE3069283 {
		t.Fatalf("CRC-32C = %#x", got)
	}
}

// writeDisk writes a VHDX of size bytes whose content is given by data
// (block index -> 1 MiB of content); other blocks are zero.
func writeDisk(t testing.TB, path string, size int64, data map[int64][]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += mib {
		n := min(mib, size-off)
		if b, ok := data[off/mib]; ok {
			if _, err := w.Write(b[:n]); err != nil {
				t.Fatal(err)
			}
		} else if err := w.WriteZeros(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// pattern is a MiB of pseudo-random bytes.
func pattern(seed int64) []byte { return testenv.RandBytes(seed, mib) }

// TestQemuAgrees writes a small disk with a mix of zero and data blocks
// (and a partial last block), and checks it with qemu-img check and
// qemu-img compare against the raw content, and with our reader.
func TestQemuAgrees(t *testing.T) {
	dir := t.TempDir()
	size := int64(20*mib + 512*3)
	data := map[int64][]byte{0: pattern(1), 3: pattern(2), 4: pattern(3), 19: pattern(4), 20: pattern(5)}
	half := make([]byte, mib) // a block that is zero except for one byte
	half[mib-1] = 1
	data[7] = half
	p := filepath.Join(dir, "d.vhdx")
	writeDisk(t, p, size, data)
	raw := make([]byte, size)
	for i, b := range data {
		copy(raw[i*mib:], b[:min(mib, size-i*mib)])
	}
	rawPath := filepath.Join(dir, "d.raw")
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "qemu-img", "check", p)
	if out := testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vhdx", rawPath, p); !strings.Contains(out, "identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}
	info := testenv.Run(t, "qemu-img", "info", "--output=json", p)
	if !strings.Contains(info, fmt.Sprintf(`"virtual-size": %d`, size)) || !strings.Contains(info, `"cluster-size": 1048576`) {
		t.Fatalf("qemu-img info: %s", info)
	}
	fi, _ := os.Stat(p)
	if want := int64(4*mib + 6*mib); fi.Size() != want { // 4 MiB of structures + 6 non-zero blocks
		t.Errorf("file size %d, want %d (zero blocks must not be stored)", fi.Size(), want)
	}
	f, _ := os.Open(p)
	defer f.Close()
	d, err := Open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	if d.Size() != size || d.LogicalSectorSize() != 512 || d.PhysicalSectorSize() != 4096 || d.BlockSize() != mib {
		t.Fatalf("geometry %d %d %d %d", d.Size(), d.LogicalSectorSize(), d.PhysicalSectorSize(), d.BlockSize())
	}
	got := make([]byte, size)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, raw) {
		t.Fatal("reader content differs from the raw disk")
	}
	// No holes: every 4 KiB of the file is allocated.
	if out := testenv.Run(t, "du", "-B1", "--apparent-size", p); !strings.HasPrefix(out, fmt.Sprint(fi.Size())) {
		t.Fatalf("du: %s", out)
	}
	if out := testenv.Run(t, "du", "-B1", p); !strings.HasPrefix(out, fmt.Sprint(fi.Size())) {
		t.Errorf("file has holes: du reports %s for %d bytes", strings.Fields(out)[0], fi.Size())
	}
}

// TestOver4GiB exercises the sector-bitmap interleave of the BAT: a 9 GiB
// disk has bitmap entries after payload blocks 4095 and 8191.
func TestOver4GiB(t *testing.T) {
	dir := t.TempDir()
	size := int64(9 << 30)
	blocks := []int64{0, 4095, 4096, 4097, 8191, 8192, 9215}
	data := map[int64][]byte{}
	for _, b := range blocks {
		data[b] = bytes.Repeat([]byte{byte(b%251 + 1)}, mib)
	}
	p := filepath.Join(dir, "big.vhdx")
	writeDisk(t, p, size, data)
	testenv.Run(t, "qemu-img", "check", p)
	for _, b := range blocks {
		cmd := fmt.Sprintf("read -P %d %d %d", b%251+1, b*mib, mib)
		if out := testenv.Run(t, "qemu-io", "-r", "-f", "vhdx", "-c", cmd, p); strings.Contains(out, "Pattern verification failed") {
			t.Fatalf("block %d: %s", b, out)
		}
	}
	// A zero block next to a bitmap slot.
	if out := testenv.Run(t, "qemu-io", "-r", "-f", "vhdx", "-c", fmt.Sprintf("read -P 0 %d %d", 4098*mib, mib), p); strings.Contains(out, "failed") {
		t.Fatal(out)
	}
	f, _ := os.Open(p)
	defer f.Close()
	fi, _ := f.Stat()
	d, err := Open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, mib)
	for _, b := range blocks {
		if _, err := d.ReadAt(buf, b*mib); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, data[b]) {
			t.Fatalf("block %d differs", b)
		}
	}
}

// TestDamage checks the fallback to header 2, and that corruption of both
// headers, the region tables, or truncation is reported.
func TestDamage(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.vhdx")
	writeDisk(t, p, 8*mib, map[int64][]byte{2: pattern(9), 7: pattern(10)})
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	open := func(b []byte) error {
		_, err := Open(bytes.NewReader(b), int64(len(b)))
		return err
	}
	if err := open(orig); err != nil {
		t.Fatal(err)
	}
	h1 := bytes.Clone(orig)
	h1[header1Offset+0x100] ^= 0xFF
	if err := open(h1); err != nil {
		t.Fatalf("header 1 damaged: %v (want fallback to header 2)", err)
	}
	q := filepath.Join(dir, "h1.vhdx")
	os.WriteFile(q, h1, 0o644)
	testenv.Run(t, "qemu-img", "check", q) // qemu agrees header 2 is usable
	both := bytes.Clone(h1)
	both[header2Offset+0x100] ^= 0xFF
	if err := open(both); err == nil || !strings.Contains(err.Error(), "both headers") {
		t.Fatalf("both headers damaged: %v", err)
	}
	regs := bytes.Clone(orig)
	regs[region1Offset+0x100] ^= 1
	regs[region2Offset+0x100] ^= 1
	if err := open(regs); err == nil || !strings.Contains(err.Error(), "region") {
		t.Fatalf("region tables damaged: %v", err)
	}
	trunc := orig[:len(orig)-mib/2]
	if err := open(trunc); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("truncated: %v", err)
	}
	if err := open(orig[:1000]); err == nil {
		t.Fatal("1000-byte file opened")
	}
}

func TestReproducibleAndGUIDs(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	writeDisk(t, a, 4*mib, map[int64][]byte{1: pattern(1)})
	writeDisk(t, b, 4*mib, map[int64][]byte{1: pattern(1)})
	p := pattern(1)
	p[100] ^= 1
	writeDisk(t, c, 4*mib, map[int64][]byte{1: p})
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	bc, _ := os.ReadFile(c)
	if !bytes.Equal(ba, bb) {
		t.Fatal("two writes of the same content differ")
	}
	if bytes.Equal(ba[:mib], bc[:mib]) {
		t.Fatal("headers identical for different content: GUIDs are not derived from the content")
	}
	g := mustGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
	if g.String() != "2DC27766-F623-4200-9D64-115E9BFD4A08" || g[0] != 0x66 || g[4] != 0x23 || g[6] != 0x00 || g[7] != 0x42 {
		t.Fatalf("GUID encoding %x %s", g[:], g)
	}
}
