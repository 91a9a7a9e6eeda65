package kmodule

import (
	"debug/elf"
	"fmt"
)

// This file reads a module's export tables the way the kernel's loader
// sees them. A .ko is a relocatable object: the fields of its
// struct kernel_symbol entries (value, name, namespace; PREL32 offsets on
// x86_64 and arm64, pointers elsewhere) hold nothing until relocated, so
// names and namespaces are found through the relocation section of each
// table (.rela__ksymtab, .rela__ksymtab_gpl): symbol value plus addend is
// an offset into __ksymtab_strings. The tables are modpost's output, laid
// out by scripts/module.lds.S: __ksymtab and __ksymtab_gpl sorted by name,
// with the parallel __kcrctab and __kcrctab_gpl (one 32-bit CRC per
// entry), or, with the 2025 kbuild series, one __ksymtab with the parallel
// __kcrctab and __kflagstab (one byte per entry, bit 0 = GPL only).

// reloc is one relocation: symbol index and explicit addend.
type reloc struct {
	sym    uint32
	addend int64
}

// exportTables holds what the ksymtab walk needs.
type exportTables struct {
	f       *elfFile
	strIdx  int
	strs    []byte
	symtab  []byte
	symSize int
}

// ksymtab returns the module's exports from its export tables, or nil if
// it has none.
func (f *elfFile) ksymtab() ([]Symbol, error) {
	ksym, gpl, flagsIdx := f.section("__ksymtab"), f.section("__ksymtab_gpl"), f.section("__kflagstab")
	if ksym < 0 && gpl < 0 {
		return nil, nil
	}
	if flagsIdx >= 0 && gpl >= 0 {
		return nil, fmt.Errorf("export tables: both __ksymtab_gpl and __kflagstab: unknown layout")
	}
	t, err := f.newExportTables()
	if err != nil {
		return nil, fmt.Errorf("export tables: %w", err)
	}
	var flags []byte
	if flagsIdx >= 0 {
		if flags, err = f.sectionData(flagsIdx); err != nil {
			return nil, fmt.Errorf("__kflagstab: %w", err)
		}
	}
	var out []Symbol
	for _, tab := range []struct {
		idx      int
		crcName  string
		gplTable bool
	}{{ksym, "__kcrctab", false}, {gpl, "__kcrctab_gpl", true}} {
		if tab.idx < 0 {
			continue
		}
		syms, err := t.table(tab.idx, f.section(tab.crcName))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.sections[tab.idx].name, err)
		}
		if flags != nil && len(flags) != len(syms) {
			return nil, fmt.Errorf("__kflagstab: %d flags for %d symbols", len(flags), len(syms))
		}
		for i := range syms {
			syms[i].GPL = tab.gplTable || (flags != nil && flags[i]&1 != 0)
		}
		out = append(out, syms...)
	}
	return out, nil
}

func (f *elfFile) newExportTables() (*exportTables, error) {
	t := &exportTables{f: f, strIdx: f.section("__ksymtab_strings")}
	if t.strIdx < 0 {
		return nil, fmt.Errorf("no __ksymtab_strings section")
	}
	var err error
	if t.strs, err = f.sectionData(t.strIdx); err != nil {
		return nil, fmt.Errorf("__ksymtab_strings: %w", err)
	}
	for i := range f.sections {
		if f.sections[i].typ == elf.SHT_SYMTAB {
			if t.symtab, err = f.sectionData(i); err != nil {
				return nil, fmt.Errorf("symbols: %w", err)
			}
			break
		}
	}
	t.symSize = 24
	if f.class == elf.ELFCLASS32 {
		t.symSize = 16
	}
	return t, nil
}

// table reads the entries of the export table in section idx, with CRCs
// from the parallel CRC table crcIdx (-1 if none).
func (t *exportTables) table(idx, crcIdx int) ([]Symbol, error) {
	f := t.f
	data, err := f.sectionData(idx)
	if err != nil || len(data) == 0 {
		return nil, err
	}
	rels, rela, err := f.relocations(idx)
	if err != nil {
		return nil, err
	}
	w, nfields, err := t.entryShape(rels)
	if err != nil {
		return nil, err
	}
	size := w * nfields
	if len(data)%size != 0 {
		return nil, fmt.Errorf("size %d is not a multiple of the %d-byte entry", len(data), size)
	}
	crcs, err := t.crcs(crcIdx, len(data)/size)
	if err != nil {
		return nil, err
	}
	out := make([]Symbol, len(data)/size)
	for i := range out {
		off := uint64(i * size)
		name, ok, err := t.str(rels, rela, data, off+uint64(w), w)
		if err == nil && (!ok || name == "") {
			err = fmt.Errorf("no name")
		}
		var ns string
		if err == nil && nfields == 3 {
			ns, _, err = t.str(rels, rela, data, off+uint64(2*w), w)
		}
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		out[i] = Symbol{Name: name, Namespace: ns}
		if crcs != nil {
			out[i].CRC, out[i].HasCRC = crcs[i], true
		}
	}
	return out, nil
}

// entryShape derives the field width (4 for PREL32, else the pointer size)
// from where entry 0's name relocation is, and the number of fields (3
// with a namespace, Linux 5.4+; 2 before) from what the third field
// refers to: a string (or nothing: a NULL namespace) or, with two fields,
// the next entry's symbol.
func (t *exportTables) entryShape(rels map[uint64]reloc) (w, nfields int, err error) {
	switch {
	case hasKey(rels, 4):
		w = 4
	case hasKey(rels, 8):
		w = 8
	default:
		return 0, 0, fmt.Errorf("no relocation for the first entry's name")
	}
	r, ok := rels[uint64(2*w)]
	if !ok {
		return w, 3, nil
	}
	if _, shndx, err := t.symbol(r.sym); err == nil && int(shndx) == t.strIdx {
		return w, 3, nil
	}
	return w, 2, nil
}

func hasKey(m map[uint64]reloc, k uint64) bool { _, ok := m[k]; return ok }

// str resolves the string field of width w at off of a table: the
// relocated target, an offset into __ksymtab_strings. ok is false for a
// field without relocation (a NULL pointer).
func (t *exportTables) str(rels map[uint64]reloc, rela bool, data []byte, off uint64, w int) (string, bool, error) {
	r, found := rels[off]
	if !found {
		return "", false, nil
	}
	value, shndx, err := t.symbol(r.sym)
	if err != nil {
		return "", false, err
	}
	if int(shndx) != t.strIdx {
		return "", false, fmt.Errorf("field at %#x refers to section %d, not __ksymtab_strings", off, shndx)
	}
	addend := r.addend
	if !rela {
		addend = t.f.implicitAddend(data, off, w)
	}
	target := value + uint64(addend)
	if target >= uint64(len(t.strs)) {
		return "", false, fmt.Errorf("field at %#x: string offset %#x outside __ksymtab_strings (%d bytes)", off, target, len(t.strs))
	}
	return cstring(t.strs, int(target)), true, nil
}

// implicitAddend reads the addend of a REL relocation from the field.
func (f *elfFile) implicitAddend(data []byte, off uint64, w int) int64 {
	if off+uint64(w) > uint64(len(data)) {
		return 0
	}
	if w == 8 {
		return int64(f.order.Uint64(data[off:]))
	}
	return int64(int32(f.order.Uint32(data[off:])))
}

// symbol returns the value and section index of symbol i.
func (t *exportTables) symbol(i uint32) (uint64, uint16, error) {
	off := uint64(i) * uint64(t.symSize)
	if i == 0 || off+uint64(t.symSize) > uint64(len(t.symtab)) {
		return 0, 0, fmt.Errorf("relocation against symbol %d: out of range", i)
	}
	e := t.symtab[off:]
	o := t.f.order
	if t.symSize == 24 {
		return o.Uint64(e[8:]), o.Uint16(e[6:]), nil
	}
	return uint64(o.Uint32(e[4:])), o.Uint16(e[14:]), nil
}

// crcs reads the CRC table crcIdx for n entries: nil without one. CRCs are
// literal 32-bit words (Linux 5.19+), or relocations against absolute
// __crc_ symbols (older kernels).
func (t *exportTables) crcs(crcIdx, n int) ([]uint64, error) {
	f := t.f
	if crcIdx < 0 {
		return nil, nil
	}
	data, err := f.sectionData(crcIdx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.sections[crcIdx].name, err)
	}
	if len(data) != 4*n {
		return nil, fmt.Errorf("%s: %d bytes for %d symbols", f.sections[crcIdx].name, len(data), n)
	}
	rels, rela, err := f.relocations(crcIdx)
	if err != nil {
		return nil, err
	}
	out := make([]uint64, n)
	for i := range out {
		off := uint64(4 * i)
		out[i] = uint64(f.order.Uint32(data[off:]))
		r, ok := rels[off]
		if !ok {
			continue
		}
		value, shndx, err := t.symbol(r.sym)
		if err != nil {
			return nil, err
		}
		if shndx != uint16(elf.SHN_ABS) {
			return nil, fmt.Errorf("%s: CRC %d relocated against section %d, not an absolute __crc_ symbol", f.sections[crcIdx].name, i, shndx)
		}
		addend := r.addend
		if !rela {
			addend = int64(int32(out[i]))
		}
		out[i] = (value + uint64(addend)) & 0xffffffff
	}
	return out, nil
}

// relocations returns the relocations applying to section target, by
// offset, and whether they carry explicit addends (RELA).
func (f *elfFile) relocations(target int) (map[uint64]reloc, bool, error) {
	out := map[uint64]reloc{}
	rela := false
	for i := range f.sections {
		s := &f.sections[i]
		if (s.typ != elf.SHT_RELA && s.typ != elf.SHT_REL) || int(s.info) != target {
			continue
		}
		d, err := f.sectionData(i)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", s.name, err)
		}
		rela = s.typ == elf.SHT_RELA
		size := relocSize(f.class, rela)
		if len(d)%size != 0 {
			return nil, false, fmt.Errorf("%s: size %d is not a multiple of %d: %w", s.name, len(d), size, errTruncated)
		}
		for off := 0; off < len(d); off += size {
			o, r := f.decodeReloc(d[off:off+size], rela)
			out[o] = r
		}
	}
	return out, rela, nil
}

func relocSize(c elf.Class, rela bool) int {
	switch {
	case c == elf.ELFCLASS64 && rela:
		return 24
	case c == elf.ELFCLASS64:
		return 16
	case rela:
		return 12
	}
	return 8
}

// decodeReloc decodes one REL or RELA entry.
func (f *elfFile) decodeReloc(e []byte, rela bool) (uint64, reloc) {
	o := f.order
	if f.class == elf.ELFCLASS64 {
		r := reloc{sym: uint32(o.Uint64(e[8:]) >> 32)}
		if rela {
			r.addend = int64(o.Uint64(e[16:]))
		}
		return o.Uint64(e), r
	}
	r := reloc{sym: o.Uint32(e[4:]) >> 8}
	if rela {
		r.addend = int64(int32(o.Uint32(e[8:])))
	}
	return uint64(o.Uint32(e)), r
}
