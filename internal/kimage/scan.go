package kimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// The structural search for export tables in a flat image, where an
// address difference is an offset difference (an arm64 Image, or one
// loadable segment of an ELF). Only little-endian 12-byte PREL32 entries
// (value, name, namespace) are searched for: the format of every kernel
// since 5.4 on arm64 and x86_64.

const (
	scanEntry  = 12  // PREL32 entry size
	minRun     = 16  // fewer entries are not taken for an export table
	maxNameLen = 512 // KSYM_NAME_LEN
	maxTrim    = 3   // leading entries tried off a run that does not fit
)

// scanTables locates the export tables in img.
func scanTables(img []byte) (*tables, error) {
	start, n := longestRun(img)
	if n < minRun {
		return nil, fmt.Errorf("no run of %d or more PREL32 symbol entries in %d bytes: %w", minRun, len(img), ErrNoExports)
	}
	var firstErr error
	for k := 0; k <= maxTrim && n-k >= minRun; k++ {
		t, err := fitTables(img, start+k*scanEntry, n-k)
		if err == nil || errors.Is(err, ErrNoModversions) {
			return t, err
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// longestRun returns the longest run of consecutive plausible entries.
func longestRun(img []byte) (start, n int) {
	for r := 0; r < scanEntry; r += 4 {
		cur, curStart := 0, 0
		for o := r; o+scanEntry <= len(img); o += scanEntry {
			if !plausibleEntry(img, o) {
				cur = 0
				continue
			}
			if cur == 0 {
				curStart = o
			}
			cur++
			if cur > n {
				start, n = curStart, cur
			}
		}
	}
	return start, n
}

// plausibleEntry reports whether the 12 bytes at o look like a PREL32
// kernel_symbol: the name offset leads to a NUL-terminated identifier and
// the namespace offset is 0 or leads to a NUL-terminated printable string.
func plausibleEntry(img []byte, o int) bool {
	le := binary.LittleEndian
	name := o + 4 + int(int32(le.Uint32(img[o+4:])))
	if _, ok := scanString(img, name, isNameByte); !ok || name >= len(img) || img[name] == 0 {
		return false
	}
	ns := int32(le.Uint32(img[o+8:]))
	if ns == 0 {
		return true
	}
	_, ok := scanString(img, o+8+int(ns), isNSByte)
	return ok
}

func isNameByte(c byte) bool {
	return c == '_' || c == '.' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isNSByte(c byte) bool { return c > ' ' && c < 0x7f }

// scanString returns the length of the NUL-terminated string at off if it
// is in img, short and made of bytes accepted by ok.
func scanString(img []byte, off int, ok func(byte) bool) (int, bool) {
	if off < 0 || off >= len(img) {
		return 0, false
	}
	for i := off; i < len(img) && i-off <= maxNameLen; i++ {
		if img[i] == 0 {
			return i - off, true
		}
		if !ok(img[i]) {
			return 0, false
		}
	}
	return 0, false
}

// fitTables checks that the n entries at start are followed by their CRC
// (and flags) tables and then by the strings they point to, and splits
// __ksymtab from __ksymtab_gpl.
func fitTables(img []byte, start, n int) (*tables, error) {
	le := binary.LittleEndian
	end := start + n*scanEntry
	lo, hi := len(img), 0
	names := make([][]byte, n)
	for i := range n {
		o := start + i*scanEntry
		for k := 1; k <= 2; k++ {
			v := int32(le.Uint32(img[o+4*k:]))
			if v == 0 {
				continue
			}
			t := o + 4*k + int(v)
			l, _ := scanString(img, t, isNSByte)
			lo, hi = min(lo, t), max(hi, t+l+1)
			if k == 1 {
				names[i] = img[t : t+l]
			}
		}
	}
	if lo < end {
		return nil, fmt.Errorf("%d entries at %#x: strings at %#x before the table end %#x: %w", n, start, lo, end, ErrUnknownLayout)
	}
	t := &tables{order: le, is64: true, scanned: true, strs: region{addr: uint64(lo), data: img[lo:hi]}}
	switch gap := lo - end; gap {
	case 4 * n:
		return t, t.splitGPL(img, start, n, names)
	case 5 * n:
		return t, t.fitFlags(img, start, n, names)
	case 0, n:
		return nil, fmt.Errorf("%d entries at %#x followed by their strings: %w", n, start, ErrNoModversions)
	default:
		return nil, fmt.Errorf("%d entries at %#x, strings %d bytes after them (want %d for CRCs, %d for CRCs and flags): %w",
			n, start, gap, 4*n, 5*n, ErrUnknownLayout)
	}
}

// descents returns the indexes where names go down.
func descents(names [][]byte) []int {
	var out []int
	for i := 1; i < len(names); i++ {
		if bytes.Compare(names[i], names[i-1]) < 0 {
			out = append(out, i)
		}
	}
	return out
}

// splitGPL fills a LayoutGPLTables table: __ksymtab, __ksymtab_gpl, then
// their CRC tables.
func (t *tables) splitGPL(img []byte, start, n int, names [][]byte) error {
	d := descents(names)
	if len(d) != 1 {
		return fmt.Errorf("%d entries at %#x with CRCs: names go down %d times, want once (between __ksymtab and __ksymtab_gpl): %w",
			n, start, len(d), ErrUnknownLayout)
	}
	n1 := d[0]
	crc := start + n*scanEntry
	t.layout = LayoutGPLTables
	t.syms[0] = flat(img, start, n1*scanEntry)
	t.syms[1] = flat(img, start+n1*scanEntry, (n-n1)*scanEntry)
	t.crcs[0] = flat(img, crc, 4*n1)
	t.crcs[1] = flat(img, crc+4*n1, 4*(n-n1))
	return nil
}

// fitFlags fills a LayoutFlagsTable table: __ksymtab, __kcrctab,
// __kflagstab.
func (t *tables) fitFlags(img []byte, start, n int, names [][]byte) error {
	if d := descents(names); len(d) != 0 {
		return fmt.Errorf("%d entries at %#x with CRCs and flags: names not sorted: %w", n, start, ErrUnknownLayout)
	}
	crc := start + n*scanEntry
	flags := img[crc+4*n : crc+5*n]
	for i, f := range flags {
		if f&^3 != 0 { // KSYM_FLAG_GPL_ONLY, KSYM_FLAG_PROTECTED
			return fmt.Errorf("symbol %d: unknown flags %#x: %w", i, f, ErrUnknownLayout)
		}
	}
	t.layout = LayoutFlagsTable
	t.syms[0] = flat(img, start, n*scanEntry)
	t.crcs[0] = flat(img, crc, 4*n)
	t.flags = flags
	return nil
}

func flat(img []byte, off, n int) region {
	return region{addr: uint64(off), data: img[off : off+n]}
}
