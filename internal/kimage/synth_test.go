package kimage_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// Synthetic kernels: export tables laid out the way
// include/asm-generic/vmlinux.lds.h links them, for the layouts no built
// kernel here has (the __kflagstab proposal, no CRCs) and for the fuzz
// seeds.

// synthSyms returns n exports with a mix of GPL-ness and namespaces.
func synthSyms(n int) []kimage.Export {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]kimage.Export, n)
	for i := range out {
		out[i] = kimage.Export{Name: synthName(r, i), CRC: r.Uint32(), GPL: i%3 == 0}
		if i%7 == 0 {
			out[i].Namespace = "SYNTH_NS"
		}
	}
	return out
}

func synthName(r *rand.Rand, i int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz_"
	b := make([]byte, 4+r.IntN(20))
	for j := range b {
		b[j] = letters[r.IntN(len(letters))]
	}
	return string(b) + "_" + strconv.Itoa(i) // unique
}

// synthLayout selects what synthTables lays out.
type synthLayout struct {
	flags bool // one __ksymtab + __kflagstab, else __ksymtab + __ksymtab_gpl
	crcs  bool // __kcrctab tables (CONFIG_MODVERSIONS)
	gap   int  // bytes between the last table and the strings (0 in a kernel)
}

// synthSection is one laid-out table: name, offset and size in the image.
type synthSection struct {
	name      string
	off, size int
}

// synthTables lays out syms in a flat image after pad bytes of noise,
// followed by noise; it returns the image and the table sections.
func synthTables(syms []kimage.Export, l synthLayout, pad int) ([]byte, []synthSection) {
	r := rand.New(rand.NewPCG(3, 4))
	var tables [][]kimage.Export
	if l.flags {
		tables = [][]kimage.Export{sortedSyms(syms, func(kimage.Export) bool { return true })}
	} else {
		tables = [][]kimage.Export{
			sortedSyms(syms, func(e kimage.Export) bool { return !e.GPL }),
			sortedSyms(syms, func(e kimage.Export) bool { return e.GPL }),
		}
	}
	n := len(syms)
	img := noise(r, pad)
	start := len(img)
	img = append(img, make([]byte, 12*n)...)
	crcAt := len(img)
	if l.crcs {
		img = append(img, make([]byte, 4*n)...)
	}
	flagsAt := len(img)
	if l.flags {
		img = append(img, make([]byte, n)...)
	}
	img = append(img, make([]byte, l.gap)...)
	strAt := len(img)
	i := 0
	for _, tab := range tables {
		for _, s := range tab {
			img = writeEntry(img, start+12*i, s)
			if l.crcs {
				binary.LittleEndian.PutUint32(img[crcAt+4*i:], s.CRC)
			}
			if l.flags && s.GPL {
				img[flagsAt+i] = 1
			}
			i++
		}
	}
	secs := []synthSection{{"__ksymtab", start, 12 * len(tables[0])}}
	if !l.flags {
		secs = append(secs, synthSection{"__ksymtab_gpl", start + 12*len(tables[0]), 12 * len(tables[1])})
	}
	if l.crcs {
		secs = append(secs, synthSection{"__kcrctab", crcAt, 4 * len(tables[0])})
		if !l.flags {
			secs = append(secs, synthSection{"__kcrctab_gpl", crcAt + 4*len(tables[0]), 4 * len(tables[1])})
		}
	}
	if l.flags {
		secs = append(secs, synthSection{"__kflagstab", flagsAt, n})
	}
	secs = append(secs, synthSection{"__ksymtab_strings", strAt, len(img) - strAt})
	return append(img, noise(r, pad)...), secs
}

// writeEntry appends s's strings to img and fills the PREL32 entry at e.
func writeEntry(img []byte, e int, s kimage.Export) []byte {
	le := binary.LittleEndian
	name := len(img)
	img = append(img, s.Name...)
	img = append(img, 0)
	ns := name + len(s.Name) // an empty namespace shares the name's NUL
	if s.Namespace != "" {
		ns = len(img)
		img = append(img, s.Namespace...)
		img = append(img, 0)
	}
	le.PutUint32(img[e:], uint32(int32(-e)))         // value: the image start
	le.PutUint32(img[e+4:], uint32(int32(name-e-4))) // name
	le.PutUint32(img[e+8:], uint32(int32(ns-(e+8)))) // namespace
	return img
}

func sortedSyms(syms []kimage.Export, keep func(kimage.Export) bool) []kimage.Export {
	var out []kimage.Export
	for _, s := range syms {
		if keep(s) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func noise(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// synthELF wraps a flat image in a minimal x86_64 ET_EXEC ELF whose
// section headers name the tables.
func synthELF(img []byte, secs []synthSection) []byte {
	const base, dataOff = 0xffffffff81000000, 0x1000
	le := binary.LittleEndian
	shstr := []byte{0}
	nameOff := make([]int, len(secs))
	for i, s := range secs {
		nameOff[i] = len(shstr)
		shstr = append(append(shstr, s.name...), 0)
	}
	out := make([]byte, dataOff)
	copy(out, "\x7fELF\x02\x01\x01")
	le.PutUint16(out[16:], 2)  // ET_EXEC
	le.PutUint16(out[18:], 62) // EM_X86_64
	le.PutUint32(out[20:], 1)
	le.PutUint16(out[52:], 64) // e_ehsize
	le.PutUint16(out[58:], 64) // e_shentsize
	out = append(out, img...)
	strOff := len(out)
	out = append(out, shstr...)
	shoff := len(out)
	le.PutUint64(out[40:], uint64(shoff))
	le.PutUint16(out[60:], uint16(len(secs)+2))
	le.PutUint16(out[62:], uint16(len(secs)+1))
	sh := make([]byte, 64) // the null section
	for i, s := range secs {
		h := make([]byte, 64)
		le.PutUint32(h, uint32(nameOff[i]))
		le.PutUint32(h[4:], 1) // SHT_PROGBITS
		le.PutUint64(h[8:], 2) // SHF_ALLOC
		le.PutUint64(h[16:], base+uint64(s.off))
		le.PutUint64(h[24:], dataOff+uint64(s.off))
		le.PutUint64(h[32:], uint64(s.size))
		sh = append(sh, h...)
	}
	h := make([]byte, 64)
	le.PutUint32(h[4:], 3) // SHT_STRTAB
	le.PutUint64(h[24:], uint64(strOff))
	le.PutUint64(h[32:], uint64(len(shstr)))
	return append(append(out, sh...), h...)
}

func sortedExports(s []kimage.Export) []kimage.Export {
	out := append([]kimage.Export(nil), s...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func TestSynthLayouts(t *testing.T) {
	syms := synthSyms(500)
	for _, tc := range []struct {
		name   string
		layout synthLayout
		want   kimage.Layout
		err    error
	}{
		{"gpl-tables", synthLayout{crcs: true}, kimage.LayoutGPLTables, nil},
		{"flags-table", synthLayout{flags: true, crcs: true}, kimage.LayoutFlagsTable, nil},
		{"gpl-tables-no-crcs", synthLayout{}, 0, kimage.ErrNoModversions},
		{"flags-table-no-crcs", synthLayout{flags: true}, 0, kimage.ErrNoModversions},
	} {
		img, secs := synthTables(syms, tc.layout, 4096)
		for _, via := range []string{"scan", "elf"} {
			var et *kimage.ExportTable
			var err error
			if via == "scan" {
				et, err = kimage.ScanFlat(img)
			} else {
				et, err = exportsOf(synthELF(img, secs))
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("%s via %s: %v, want %v", tc.name, via, err, tc.err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s via %s: %v", tc.name, via, err)
			}
			if et.Layout != tc.want || et.Scanned != (via == "scan") {
				t.Errorf("%s via %s: layout %v, scanned %v", tc.name, via, et.Layout, et.Scanned)
			}
			if !reflect.DeepEqual(sortedExports(et.Symbols), sortedExports(syms)) {
				t.Errorf("%s via %s: exports differ", tc.name, via)
			}
		}
	}
}

// TestUnknownLayouts: tables this package does not know are refused.
func TestUnknownLayouts(t *testing.T) {
	syms := synthSyms(200)
	img, secs := synthTables(syms, synthLayout{crcs: true}, 1024)
	both := append(append([]synthSection(nil), secs...), synthSection{"__kflagstab", secs[0].off, 200})
	short := append([]synthSection(nil), secs...)
	short[2].size -= 4 // one CRC fewer than symbols
	for name, data := range map[string][]byte{
		"gpl-and-flags":     synthELF(img, both),
		"crc-count":         synthELF(img, short),
		"scan-extra-gap":    gapImage(syms), // strings not right after the CRCs
		"scan-flags-values": badFlags(t, syms),
	} {
		var err error
		if strings.HasPrefix(name, "scan-") {
			_, err = kimage.ScanFlat(data)
		} else {
			_, err = exportsOf(data)
		}
		if !errors.Is(err, kimage.ErrUnknownLayout) {
			t.Errorf("%s: %v, want ErrUnknownLayout", name, err)
		}
	}
}

func gapImage(syms []kimage.Export) []byte {
	img, _ := synthTables(syms, synthLayout{crcs: true, gap: 8}, 1024)
	return img
}

func badFlags(t *testing.T, syms []kimage.Export) []byte {
	img, secs := synthTables(syms, synthLayout{flags: true, crcs: true}, 1024)
	for _, s := range secs {
		if s.name == "__kflagstab" {
			img[s.off+3] = 0x80
			return img
		}
	}
	t.Fatal("no __kflagstab")
	return nil
}

func exportsOf(data []byte) (*kimage.ExportTable, error) {
	f, err := kimage.NewFile(bytes.NewReader(data), int64(len(data)), nil)
	if err != nil {
		return nil, err
	}
	return f.Exports()
}

// TestDecompressionBomb: a bzImage whose 128 KiB zstd payload expands to
// 4 GiB, and a 300 MiB gzip'ed "vmlinux", are refused with ErrTooLarge at
// the size limit, allocating a bounded amount on the way.
func TestDecompressionBomb(t *testing.T) {
	bz, _, _ := testVmlinux(t)
	bomb := withPayload(bz, append(testenv.ZstdZeros(4<<30), le32(0)...))
	var err error
	alloc := testenv.Allocated(func() { _, err = kimage.NewFile(bytes.NewReader(bomb), int64(len(bomb)), nil) })
	if !errors.Is(err, kimage.ErrTooLarge) {
		t.Fatalf("4 GiB zstd payload: %v, want ErrTooLarge", err)
	}
	if alloc > 3*kimage.DefaultMaxSize {
		t.Errorf("4 GiB zstd payload: %d MiB allocated, limit %d MiB", alloc>>20, kimage.DefaultMaxSize>>20)
	}
	t.Logf("4 GiB zstd bomb: %v; %d MiB allocated", err, alloc>>20)

	gz := testenv.GzipZeros(300 << 20)
	const small = 16 << 20
	alloc = testenv.Allocated(func() {
		_, err = kimage.NewFile(bytes.NewReader(gz), int64(len(gz)), &kimage.Options{MaxSize: small})
	})
	if !errors.Is(err, kimage.ErrTooLarge) || alloc > 4*small {
		t.Fatalf("300 MiB gzip, 16 MiB limit: %v, %d MiB allocated", err, alloc>>20)
	}
	t.Logf("300 MiB gzip bomb, 16 MiB limit: %v; %d MiB allocated", err, alloc>>20)
}
