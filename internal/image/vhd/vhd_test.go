package vhd

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv/memlimit"
)

// rawDisk writes a 10 MiB raw disk of random 64 KiB runs between zeros,
// with a partial last sector run, and returns its path and bytes.
func rawDisk(t *testing.T) (string, []byte) {
	b := make([]byte, 10<<20)
	rng := rand.New(rand.NewSource(1))
	for off := 0; off < len(b); off += 1 << 20 {
		n := rng.Intn(3 << 16)
		rng.Read(b[off : off+n])
	}
	rng.Read(b[len(b)-700:])
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

// convert makes a VHD of the raw disk with qemu-img.
func convert(t *testing.T, raw, sub string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), sub+".vhd")
	testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat="+sub, raw, p)
	return p
}

func open(t *testing.T, p string) (*Disk, []byte) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return d, b
}

// TestQemuAgrees reads fixed and dynamic VHDs made by qemu-img: the size
// qemu-img info reports, the content qemu-img compare confirms, and reads
// at offsets that cross sectors and blocks.
func TestQemuAgrees(t *testing.T) {
	raw, want := rawDisk(t)
	for _, sub := range []string{"fixed", "dynamic"} {
		t.Run(sub, func(t *testing.T) {
			p := convert(t, raw, sub)
			testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vpc", raw, p)
			d, _ := open(t, p)
			var info struct {
				VirtualSize int64 `json:"virtual-size"`
			}
			json.Unmarshal([]byte(testenv.Run(t, "qemu-img", "info", "--output=json", p)), &info)
			// qemu-img reports a fixed disk's file size (footer included)
			// as its virtual size; the footer's current size is 512 less.
			if sub == "fixed" {
				info.VirtualSize -= footerSize
			}
			if d.Size() != info.VirtualSize || d.Dynamic() != (sub == "dynamic") {
				t.Fatalf("size %d dynamic %v; qemu-img says %d", d.Size(), d.Dynamic(), info.VirtualSize)
			}
			got := make([]byte, d.Size())
			if n, err := d.ReadAt(got, 0); n != len(got) || (err != nil && err.Error() != "EOF") {
				t.Fatalf("ReadAt = %d, %v", n, err)
			}
			if !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[len(want):], make([]byte, len(got)-len(want))) {
				t.Fatal("content differs from the raw disk")
			}
			rng := rand.New(rand.NewSource(2))
			for i := 0; i < 200; i++ {
				off := rng.Int63n(int64(len(want)))
				buf := make([]byte, rng.Intn(3<<20))
				n, _ := d.ReadAt(buf, off)
				if !bytes.Equal(buf[:n], got[off:off+int64(n)]) {
					t.Fatalf("ReadAt(%d, %d) differs", off, len(buf))
				}
			}
		})
	}
}

// setFooter writes footer f at off with a fresh checksum.
func setFooter(b []byte, off int, edit func(f []byte)) {
	f := b[off : off+footerSize]
	edit(f)
	be.PutUint32(f[64:], checksum(f, 64))
}

func TestDamage(t *testing.T) {
	raw, _ := rawDisk(t)
	_, dyn := open(t, convert(t, raw, "dynamic"))
	_, fixed := open(t, convert(t, raw, "fixed"))
	openB := func(b []byte) error {
		_, err := Open(bytes.NewReader(b), int64(len(b)))
		return err
	}
	// A dynamic disk whose trailing footer is damaged uses the copy at 0.
	d := bytes.Clone(dyn)
	d[len(d)-footerSize+70] ^= 0xFF
	if err := openB(d); err != nil {
		t.Errorf("dynamic disk with a damaged footer: %v", err)
	}
	f := bytes.Clone(fixed)
	f[len(f)-footerSize+70] ^= 0xFF
	if err := openB(f); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("fixed disk with a damaged footer: %v", err)
	}
	if err := openB(dyn[:len(dyn)-3<<20]); !errors.Is(err, ErrFormat) {
		t.Errorf("truncated dynamic disk: %v", err)
	}
	if err := openB(fixed[:1000]); !errors.Is(err, ErrFormat) {
		t.Errorf("truncated fixed disk: %v", err)
	}
}

// TestHostileSizes are the security review's cases: a current size near
// 2^63 (a panic in openDynamic before), and header, table and block
// offsets that overflow int64 arithmetic.
func TestHostileSizes(t *testing.T) {
	raw, _ := rawDisk(t)
	_, dyn := open(t, convert(t, raw, "dynamic"))
	_, fixed := open(t, convert(t, raw, "fixed"))
	tail := len(dyn) - footerSize
	hdrOff := int(be.Uint64(dyn[16:]))
	setHeader := func(b []byte, edit func(h []byte)) {
		h := b[hdrOff : hdrOff+dynHeaderSize]
		edit(h)
		be.PutUint32(h[36:], checksum(h, 36))
	}
	cases := map[string]struct {
		base []byte
		edit func(b []byte)
		want string
	}{
		"current size near 2^63": {dyn, func(b []byte) {
			setFooter(b, tail, func(f []byte) { be.PutUint64(f[48:], 1<<63-512) })
		}, "current size"},
		"fixed size near 2^64": {fixed, func(b []byte) {
			setFooter(b, len(b)-footerSize, func(f []byte) { be.PutUint64(f[48:], 1<<64-512) })
		}, "fixed disk"},
		"header offset overflows": {dyn, func(b []byte) {
			setFooter(b, tail, func(f []byte) { be.PutUint64(f[16:], 1<<64-512) })
		}, "dynamic header offset"},
		"table offset overflows": {dyn, func(b []byte) {
			setHeader(b, func(h []byte) { be.PutUint64(h[16:], 1<<63-4) })
		}, "block table"},
		"block size 2^31": {dyn, func(b []byte) {
			setHeader(b, func(h []byte) { be.PutUint32(h[32:], 1<<31) })
		}, "block size"},
	}
	memlimit.Limit(t, 1<<30)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			b := bytes.Clone(c.base)
			c.edit(b)
			var err error
			memlimit.Check(t, 64<<20, func() { _, err = Open(bytes.NewReader(b), int64(len(b))) })
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want a format error about %q", err, c.want)
			}
		})
	}
}
