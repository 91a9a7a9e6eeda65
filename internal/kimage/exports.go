package kimage

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Export is one symbol exported by the kernel image.
type Export struct {
	// Name is the symbol name.
	Name string
	// CRC is its modversions CRC (from __kcrctab).
	CRC uint32
	// GPL is set for EXPORT_SYMBOL_GPL symbols.
	GPL bool
	// Namespace is the symbol namespace ("" for none).
	Namespace string
}

// Layout is the arrangement of the export tables.
type Layout int

// Export table layouts.
const (
	// LayoutGPLTables: __ksymtab and __ksymtab_gpl, with the parallel
	// CRC tables __kcrctab and __kcrctab_gpl (every released kernel).
	LayoutGPLTables Layout = iota + 1
	// LayoutFlagsTable: one __ksymtab with the parallel __kcrctab and
	// __kflagstab (one byte per symbol, bit 0 = GPL only), as proposed by
	// the 2025 kbuild series "scalable symbol flags with __kflagstab".
	LayoutFlagsTable
)

// String names the tables of the layout.
func (l Layout) String() string {
	switch l {
	case LayoutGPLTables:
		return "__ksymtab+__ksymtab_gpl"
	case LayoutFlagsTable:
		return "__ksymtab+__kflagstab"
	}
	return fmt.Sprintf("Layout(%d)", int(l))
}

// EntryFormat describes one struct kernel_symbol entry.
type EntryFormat struct {
	// Size is the entry size in bytes.
	Size int
	// Relative is set for PREL32 entries (CONFIG_HAVE_ARCH_PREL32_RELOCATIONS):
	// each field is a signed 32-bit offset from the field itself.
	// Otherwise the fields are absolute pointers.
	Relative bool
	// Namespace is set when entries have a namespace field (Linux 5.4+).
	Namespace bool
}

func (e EntryFormat) fields() int {
	if e.Namespace {
		return 3
	}
	return 2
}

func (e EntryFormat) width() int { return e.Size / e.fields() }

// String describes the format, e.g. "12-byte PREL32".
func (e EntryFormat) String() string {
	kind := "absolute"
	if e.Relative {
		kind = "PREL32"
	}
	ns := ""
	if !e.Namespace {
		ns = ", no namespace"
	}
	return fmt.Sprintf("%d-byte %s%s", e.Size, kind, ns)
}

// entryFormats are the struct kernel_symbol layouts, tried in order.
var entryFormats = []EntryFormat{
	{Size: 12, Relative: true, Namespace: true},   // value, name, namespace offsets
	{Size: 8, Relative: true, Namespace: false},   // before Linux 5.4
	{Size: 24, Relative: false, Namespace: true},  // 64-bit pointers
	{Size: 16, Relative: false, Namespace: false}, // 64-bit pointers, before 5.4
	{Size: 12, Relative: false, Namespace: true},  // 32-bit pointers
	{Size: 8, Relative: false, Namespace: false},  // 32-bit pointers, before 5.4
}

// ExportTable is what Exports reads.
type ExportTable struct {
	// Layout is the table layout found.
	Layout Layout
	// Entry is the entry format found.
	Entry EntryFormat
	// Scanned is set when the tables were found by their structure (an
	// arm64 Image, or an ELF without section headers), not by name.
	Scanned bool
	// Symbols in table order (__ksymtab, then __ksymtab_gpl).
	Symbols []Export
}

// region is a run of bytes at an address.
type region struct {
	addr uint64
	data []byte
}

func (r region) contains(a uint64) bool { return a >= r.addr && a-r.addr < uint64(len(r.data)) }

// tables are the located export tables, before decoding.
type tables struct {
	layout  Layout
	syms    [2]region // __ksymtab, __ksymtab_gpl (empty for LayoutFlagsTable)
	crcs    [2]region // __kcrctab, __kcrctab_gpl
	flags   []byte    // __kflagstab (LayoutFlagsTable)
	strs    region    // __ksymtab_strings
	order   binary.ByteOrder
	is64    bool
	scanned bool
}

// Exports reads the kernel's export tables. With section headers they are
// found by name. Without (an arm64 Image is a raw memory image), they are
// found by structure: the longest run of 12-byte PREL32 entries whose name
// and namespace offsets lead to NUL-terminated strings, followed exactly
// by its CRC table (4 bytes per entry) and, for LayoutFlagsTable, its
// flags table (1 byte per entry), followed by the strings the entries
// point to; this is the order include/asm-generic/vmlinux.lds.h links them
// in. __ksymtab and __ksymtab_gpl are each sorted by name, so the one
// place where the names go down splits them.
func (f *File) Exports() (*ExportTable, error) {
	var t *tables
	var err error
	if f.elf != nil {
		t, err = f.elfTables()
	} else {
		t, err = scanTables(f.raw)
	}
	if err != nil {
		return nil, f.errorf("%w", err)
	}
	et, err := t.decode()
	if err != nil {
		return nil, f.errorf("%w", err)
	}
	return et, nil
}

// elfTables finds the export tables of an ELF vmlinux by section name, or
// by structure in its loadable segments when it has no section headers.
func (f *File) elfTables() (*tables, error) {
	ef := f.elf
	t := &tables{order: ef.ByteOrder, is64: ef.Class == elf.ELFCLASS64}
	if len(ef.Sections) <= 1 {
		return f.scanSegments()
	}
	var flags region
	want := []struct {
		name string
		r    *region
	}{
		{"__ksymtab", &t.syms[0]}, {"__ksymtab_gpl", &t.syms[1]},
		{"__kcrctab", &t.crcs[0]}, {"__kcrctab_gpl", &t.crcs[1]},
		{"__kflagstab", &flags}, {"__ksymtab_strings", &t.strs},
	}
	got := map[string]bool{}
	for _, w := range want {
		r, ok, err := f.section(w.name)
		if err != nil {
			return nil, err
		}
		*w.r, got[w.name] = r, ok
	}
	t.flags = flags.data
	switch {
	case !got["__ksymtab"] && !got["__ksymtab_gpl"]:
		return nil, ErrNoExports
	case !got["__ksymtab_strings"]:
		return nil, fmt.Errorf("no __ksymtab_strings section: %w", ErrUnknownLayout)
	case got["__kflagstab"] && (got["__ksymtab_gpl"] || got["__kcrctab_gpl"]):
		return nil, fmt.Errorf("both __ksymtab_gpl and __kflagstab: %w", ErrUnknownLayout)
	case got["__kflagstab"]:
		t.layout = LayoutFlagsTable
	default:
		t.layout = LayoutGPLTables
	}
	return t, nil
}

// section reads the named section, if there is one.
func (f *File) section(name string) (region, bool, error) {
	s := f.elf.Section(name)
	if s == nil {
		return region{}, false, nil
	}
	if s.Type == elf.SHT_NOBITS {
		return region{}, false, fmt.Errorf("section %s has no data: %w", name, ErrUnknownLayout)
	}
	if s.Size > uint64(f.limit) {
		return region{}, false, fmt.Errorf("section %s of %d bytes: %w", name, s.Size, ErrTooLarge)
	}
	d, err := s.Data()
	if err != nil {
		return region{}, false, fmt.Errorf("section %s: %w", name, wrapEOF(err))
	}
	return region{addr: s.Addr, data: d}, true, nil
}

// scanSegments looks for the export tables in each loadable segment of an
// ELF without section headers.
func (f *File) scanSegments() (*tables, error) {
	err := error(ErrNoExports)
	for _, p := range f.elf.Progs {
		if p.Type != elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		if p.Filesz > uint64(f.limit) {
			return nil, fmt.Errorf("segment of %d bytes: %w", p.Filesz, ErrTooLarge)
		}
		data := make([]byte, p.Filesz)
		if _, rerr := io.ReadFull(p.Open(), data); rerr != nil {
			return nil, fmt.Errorf("segment at %#x: %w", p.Off, wrapEOF(rerr))
		}
		t, serr := scanTables(data)
		if serr == nil {
			return t, nil
		}
		if !errors.Is(serr, ErrNoExports) {
			err = serr
		}
	}
	return nil, err
}

// decode reads the entries of located tables.
func (t *tables) decode() (*ExportTable, error) {
	size, err := t.entrySize()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, ef := range entryFormats {
		if ef.Size != size || (t.scanned && ef != entryFormats[0]) {
			continue
		}
		if !ef.Relative && (ef.width() == 8) != t.is64 {
			continue
		}
		syms, err := t.decodeWith(ef)
		if err == nil {
			return &ExportTable{Layout: t.layout, Entry: ef, Scanned: t.scanned, Symbols: syms}, nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no entry format of %d bytes", size)
	}
	return nil, fmt.Errorf("%s: %w: %w", t.layout, lastErr, ErrUnknownLayout)
}

// entrySize derives the entry size from the CRC tables: one 32-bit CRC
// per entry.
func (t *tables) entrySize() (int, error) {
	size := 0
	for i := range 2 {
		s, c := len(t.syms[i].data), len(t.crcs[i].data)
		if s == 0 && c == 0 {
			continue
		}
		if c == 0 {
			return 0, ErrNoModversions
		}
		if c%4 != 0 || s%(c/4) != 0 {
			return 0, fmt.Errorf("%d bytes of symbols for %d bytes of CRCs: %w", s, c, ErrUnknownLayout)
		}
		e := s / (c / 4)
		if size != 0 && e != size {
			return 0, fmt.Errorf("entry sizes %d and %d: %w", size, e, ErrUnknownLayout)
		}
		size = e
	}
	if size == 0 {
		return 0, ErrNoExports
	}
	if t.layout == LayoutFlagsTable && len(t.flags) != len(t.crcs[0].data)/4 {
		return 0, fmt.Errorf("%d flags for %d symbols: %w", len(t.flags), len(t.crcs[0].data)/4, ErrUnknownLayout)
	}
	return size, nil
}

// decodeWith decodes every entry with format ef.
func (t *tables) decodeWith(ef EntryFormat) ([]Export, error) {
	var out []Export
	for ti, st := range t.syms {
		n := len(st.data) / ef.Size
		for i := range n {
			entry := st.data[i*ef.Size : (i+1)*ef.Size]
			base := st.addr + uint64(i*ef.Size)
			name, ok, err := t.field(ef, entry, base, 1)
			if err == nil && (!ok || name == "") {
				err = errors.New("empty name")
			}
			var ns string
			if err == nil && ef.Namespace {
				ns, _, err = t.field(ef, entry, base, 2)
			}
			if err != nil {
				return nil, fmt.Errorf("%s entry %d (%s): %w", tableName(ti), i, ef, err)
			}
			gpl := ti == 1 || (t.flags != nil && t.flags[i]&1 != 0)
			crc := t.order.Uint32(t.crcs[ti].data[4*i:])
			out = append(out, Export{Name: name, CRC: crc, GPL: gpl, Namespace: ns})
		}
	}
	return out, nil
}

func tableName(i int) string {
	if i == 1 {
		return "__ksymtab_gpl"
	}
	return "__ksymtab"
}

// field reads string field k of an entry at address base. A zero field is
// a NULL pointer: ok is false.
func (t *tables) field(ef EntryFormat, entry []byte, base uint64, k int) (s string, ok bool, err error) {
	w := ef.width()
	var target uint64
	switch {
	case ef.Relative:
		v := int32(t.order.Uint32(entry[k*w:]))
		if v == 0 {
			return "", false, nil
		}
		target = base + uint64(k*w) + uint64(int64(v))
	case w == 8:
		target = t.order.Uint64(entry[k*w:])
	default:
		target = uint64(t.order.Uint32(entry[k*w:]))
	}
	if target == 0 {
		return "", false, nil
	}
	if !t.strs.contains(target) {
		return "", false, fmt.Errorf("string at %#x outside __ksymtab_strings [%#x, %#x)",
			target, t.strs.addr, t.strs.addr+uint64(len(t.strs.data)))
	}
	b := t.strs.data[target-t.strs.addr:]
	end := bytes.IndexByte(b, 0)
	if end < 0 {
		return "", false, fmt.Errorf("string at %#x not terminated", target)
	}
	return string(b[:end]), true, nil
}
