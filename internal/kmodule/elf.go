package kmodule

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// This file is a lean reader for the few parts of an ELF relocatable object
// that a module parser needs (section headers, .symtab/.strtab, .modinfo,
// __ksymtab_strings, __versions and the sections holding __crc_ values). It
// works directly on the file's bytes (often an mmap), copies out only the
// strings it returns and allocates nothing per symbol that is not kept,
// which makes it several times faster than debug/elf for whole trees.

// elfSection is the subset of a section header the parser uses.
type elfSection struct {
	name   string
	typ    elf.SectionType
	flags  elf.SectionFlag
	addr   uint64
	offset uint64
	size   uint64
	link   uint32
	info   uint32
}

// elfFile is a parsed ELF header plus its section headers.
type elfFile struct {
	data     []byte
	class    elf.Class
	order    binary.ByteOrder
	machine  elf.Machine
	sections []elfSection
}

// errTruncated is wrapped by errors about data lying outside the file.
var errTruncated = errors.New("truncated or corrupt ELF file")

// openELF parses the ELF and section headers of raw.
func openELF(raw []byte) (*elfFile, error) {
	if len(raw) < elf.EI_NIDENT || !bytes.HasPrefix(raw, []byte(elf.ELFMAG)) {
		return nil, ErrNotELF
	}
	f := &elfFile{data: raw, class: elf.Class(raw[elf.EI_CLASS])}
	switch elf.Data(raw[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		f.order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		f.order = binary.BigEndian
	default:
		return nil, fmt.Errorf("elf: unknown data encoding %d", raw[elf.EI_DATA])
	}
	var shoff uint64
	var shentsize, shnum, shstrndx int
	switch f.class {
	case elf.ELFCLASS64:
		if len(raw) < 64 {
			return nil, fmt.Errorf("elf header: %w", errTruncated)
		}
		f.machine = elf.Machine(f.order.Uint16(raw[18:]))
		shoff = f.order.Uint64(raw[40:])
		shentsize = int(f.order.Uint16(raw[58:]))
		shnum = int(f.order.Uint16(raw[60:]))
		shstrndx = int(f.order.Uint16(raw[62:]))
		if shentsize != 64 && shnum != 0 {
			return nil, fmt.Errorf("elf: section header size %d, want 64", shentsize)
		}
		shentsize = 64
	case elf.ELFCLASS32:
		if len(raw) < 52 {
			return nil, fmt.Errorf("elf header: %w", errTruncated)
		}
		f.machine = elf.Machine(f.order.Uint16(raw[18:]))
		shoff = uint64(f.order.Uint32(raw[32:]))
		shentsize = int(f.order.Uint16(raw[46:]))
		shnum = int(f.order.Uint16(raw[48:]))
		shstrndx = int(f.order.Uint16(raw[50:]))
		if shentsize != 40 && shnum != 0 {
			return nil, fmt.Errorf("elf: section header size %d, want 40", shentsize)
		}
		shentsize = 40
	default:
		return nil, fmt.Errorf("elf: unknown class %d", raw[elf.EI_CLASS])
	}
	if shoff == 0 {
		return f, nil
	}
	if shoff > uint64(len(raw)) || uint64(len(raw))-shoff < uint64(shentsize) {
		return nil, fmt.Errorf("section headers at %#x: %w", shoff, errTruncated)
	}
	// Extended numbering: the real counts live in section header 0.
	first := f.readSection(raw[shoff:])
	if shnum == 0 {
		shnum = int(first.size)
	}
	if shstrndx == int(elf.SHN_XINDEX) {
		shstrndx = int(first.link)
	}
	if uint64(shnum) > (uint64(len(raw))-shoff)/uint64(shentsize) {
		return nil, fmt.Errorf("%d section headers at %#x: %w", shnum, shoff, errTruncated)
	}
	f.sections = make([]elfSection, shnum)
	for i := range f.sections {
		f.sections[i] = f.readSection(raw[shoff+uint64(i*shentsize):])
	}
	if shstrndx <= 0 || shstrndx >= shnum {
		return f, nil
	}
	names, err := f.sectionData(shstrndx)
	if err != nil {
		return nil, fmt.Errorf("section names: %w", err)
	}
	for i := range f.sections {
		off := int(f.order.Uint32(raw[shoff+uint64(i*shentsize):]))
		f.sections[i].name = cstring(names, off)
	}
	return f, nil
}

// readSection decodes one section header (without its name).
func (f *elfFile) readSection(b []byte) elfSection {
	o := f.order
	if f.class == elf.ELFCLASS64 {
		return elfSection{
			typ: elf.SectionType(o.Uint32(b[4:])), flags: elf.SectionFlag(o.Uint64(b[8:])),
			addr: o.Uint64(b[16:]), offset: o.Uint64(b[24:]), size: o.Uint64(b[32:]),
			link: o.Uint32(b[40:]), info: o.Uint32(b[44:]),
		}
	}
	return elfSection{
		typ: elf.SectionType(o.Uint32(b[4:])), flags: elf.SectionFlag(o.Uint32(b[8:])),
		addr: uint64(o.Uint32(b[12:])), offset: uint64(o.Uint32(b[16:])), size: uint64(o.Uint32(b[20:])),
		link: o.Uint32(b[24:]), info: o.Uint32(b[28:]),
	}
}

// sectionData returns the bytes of section i (nil for SHT_NOBITS).
func (f *elfFile) sectionData(i int) ([]byte, error) {
	if i < 0 || i >= len(f.sections) {
		return nil, fmt.Errorf("section index %d out of range", i)
	}
	s := &f.sections[i]
	if s.typ == elf.SHT_NOBITS {
		return nil, nil
	}
	if s.flags&elf.SHF_COMPRESSED != 0 {
		return nil, fmt.Errorf("section %s: compressed sections are not supported", s.name)
	}
	if s.offset > uint64(len(f.data)) || uint64(len(f.data))-s.offset < s.size {
		return nil, fmt.Errorf("section %s (offset %#x, size %#x): %w", s.name, s.offset, s.size, errTruncated)
	}
	return f.data[s.offset : s.offset+s.size : s.offset+s.size], nil
}

// section returns the index of the first section called name, or -1.
func (f *elfFile) section(name string) int {
	for i := range f.sections {
		if f.sections[i].name == name {
			return i
		}
	}
	return -1
}

// cstring returns the NUL-terminated string at off in b ("" if out of range).
func cstring(b []byte, off int) string {
	if off < 0 || off >= len(b) {
		return ""
	}
	b = b[off:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// cbytes is cstring without the copy.
func cbytes(b []byte, off uint32) []byte {
	if uint64(off) >= uint64(len(b)) {
		return nil
	}
	b = b[off:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return b
}

// parseELF fills m from the uncompressed ELF bytes raw.
func parseELF(raw []byte, m *Module) error {
	f, err := openELF(raw)
	if err != nil {
		return err
	}
	m.Machine = f.machine

	if i := f.section(".modinfo"); i >= 0 {
		d, err := f.sectionData(i)
		if err != nil {
			return fmt.Errorf(".modinfo: %w", err)
		}
		m.ModInfo = parseModInfo(d)
	}

	if err := f.symbols(m); err != nil {
		return err
	}

	if len(m.Exports) == 0 {
		if i := f.section("__ksymtab_strings"); i >= 0 {
			d, err := f.sectionData(i)
			if err != nil {
				return fmt.Errorf("__ksymtab_strings: %w", err)
			}
			for len(d) > 0 {
				n := d
				j := bytes.IndexByte(d, 0)
				if j >= 0 {
					n, d = d[:j], d[j+1:]
				} else {
					d = nil
				}
				if len(n) > 0 {
					m.Exports = append(m.Exports, Symbol{Name: string(n)})
				}
			}
		}
	}

	if err := f.exportTables(m); err != nil {
		return err
	}

	if i := f.section("__versions"); i >= 0 {
		d, err := f.sectionData(i)
		if err != nil {
			return fmt.Errorf("__versions: %w", err)
		}
		f.versions(d, m)
	}
	return nil
}

// symbols reads .symtab: undefined symbols become Needs, __crc_* symbols
// become Exports with their CRC.
func (f *elfFile) symbols(m *Module) error {
	si := -1
	for i := range f.sections {
		if f.sections[i].typ == elf.SHT_SYMTAB {
			si = i
			break
		}
	}
	if si < 0 {
		return nil
	}
	syms, err := f.sectionData(si)
	if err != nil {
		return fmt.Errorf("symbols: %w", err)
	}
	strs, err := f.sectionData(int(f.sections[si].link))
	if err != nil {
		return fmt.Errorf("symbols: string table: %w", err)
	}
	entsize := 24
	if f.class == elf.ELFCLASS32 {
		entsize = 16
	}
	if len(syms)%entsize != 0 {
		return fmt.Errorf("symbols: section size %d is not a multiple of %d: %w", len(syms), entsize, errTruncated)
	}
	o := f.order
	// Count undefined symbols first so Needs is allocated once.
	nUndef := 0
	for off := entsize; off+entsize <= len(syms); off += entsize {
		var shndx uint16
		if entsize == 24 {
			shndx = o.Uint16(syms[off+6:])
		} else {
			shndx = o.Uint16(syms[off+14:])
		}
		if shndx == uint16(elf.SHN_UNDEF) && o.Uint32(syms[off:]) != 0 {
			nUndef++
		}
	}
	m.Needs = make([]Need, 0, nUndef)
	crcData := map[uint16][]byte{}
	for off := entsize; off+entsize <= len(syms); off += entsize {
		e := syms[off : off+entsize]
		var (
			nameOff uint32
			info    byte
			shndx   uint16
			value   uint64
		)
		if entsize == 24 {
			nameOff, info, shndx, value = o.Uint32(e), e[4], o.Uint16(e[6:]), o.Uint64(e[8:])
		} else {
			nameOff, value, info, shndx = o.Uint32(e), uint64(o.Uint32(e[4:])), e[12], o.Uint16(e[14:])
		}
		name := cbytes(strs, nameOff)
		if shndx == uint16(elf.SHN_UNDEF) {
			if len(name) == 0 {
				continue
			}
			m.Needs = append(m.Needs, Need{Symbol: Symbol{Name: string(name)}, Weak: elf.ST_BIND(info) == elf.STB_WEAK})
			continue
		}
		if !bytes.HasPrefix(name, []byte("__crc_")) {
			continue
		}
		crc, err := f.crcValue(shndx, value, crcData)
		if err != nil {
			return fmt.Errorf("symbol %s: %w", name, err)
		}
		m.Exports = append(m.Exports, Symbol{Name: string(name[len("__crc_"):]), CRC: crc, HasCRC: true})
	}
	return nil
}

// crcValue reads the CRC of a __crc_ symbol: the value itself for absolute
// (and other reserved-index) symbols, otherwise the 32-bit word the symbol
// labels in its section.
func (f *elfFile) crcValue(shndx uint16, value uint64, cache map[uint16][]byte) (uint64, error) {
	if shndx >= uint16(elf.SHN_LORESERVE) {
		return value & 0xffffffff, nil
	}
	if int(shndx) >= len(f.sections) {
		return 0, fmt.Errorf("section index %d out of range", shndx)
	}
	sec := &f.sections[shndx]
	d, ok := cache[shndx]
	if !ok {
		if sec.typ == elf.SHT_NOBITS {
			return 0, fmt.Errorf("CRC in NOBITS section %s", sec.name)
		}
		var err error
		if d, err = f.sectionData(int(shndx)); err != nil {
			return 0, err
		}
		cache[shndx] = d
	}
	off := value - sec.addr
	if off > uint64(len(d)) || uint64(len(d))-off < 4 {
		return 0, fmt.Errorf("CRC offset %#x outside section %s", off, sec.name)
	}
	return uint64(f.order.Uint32(d[off:])), nil
}

// versions merges the __versions table into m.Needs: CRCs of needs matched
// by name, and VersionsOnly entries for the rest.
func (f *elfFile) versions(d []byte, m *Module) {
	idx := make(map[string]int, len(m.Needs))
	for i, n := range m.Needs {
		if _, dup := idx[n.Name]; !dup {
			idx[n.Name] = i
		}
	}
	entry, crcSize := 64, 8
	if f.class == elf.ELFCLASS32 {
		crcSize = 4
	}
	// Entries only __versions has (module_layout) are collected apart and
	// added at the end with one exact allocation: appending to Needs
	// (allocated to its exact size) would double it for nearly every
	// module of a tree.
	base := len(m.Needs)
	var extra []Need
	for off := 0; off+entry <= len(d); off += entry {
		e := d[off : off+entry]
		var crc uint64
		if crcSize == 8 {
			crc = f.order.Uint64(e)
		} else {
			crc = uint64(f.order.Uint32(e))
		}
		nb := e[crcSize:]
		if i := bytes.IndexByte(nb, 0); i >= 0 {
			nb = nb[:i]
		}
		if len(nb) == 0 {
			continue
		}
		if i, ok := idx[string(nb)]; ok {
			if i < base {
				m.Needs[i].CRC, m.Needs[i].HasCRC = crc, true
			} else {
				extra[i-base].CRC = crc
			}
			continue
		}
		n := string(nb)
		idx[n] = base + len(extra)
		extra = append(extra, Need{Symbol: Symbol{Name: n, CRC: crc, HasCRC: true}, VersionsOnly: true})
	}
	if len(extra) > 0 {
		all := make([]Need, base, base+len(extra))
		copy(all, m.Needs)
		m.Needs = append(all, extra...)
	}
}

// parseModInfo splits a .modinfo section on runs of NUL bytes into records.
func parseModInfo(d []byte) []KV {
	n := 0
	for i, c := range d {
		if c == 0 && i > 0 && d[i-1] != 0 {
			n++
		}
	}
	out := make([]KV, 0, n+1)
	for len(d) > 0 {
		rec := d
		if j := bytes.IndexByte(d, 0); j >= 0 {
			rec, d = d[:j], d[j+1:]
		} else {
			d = nil
		}
		if len(rec) == 0 {
			continue
		}
		s := string(rec)
		k, v, _ := strings.Cut(s, "=")
		out = append(out, KV{Key: k, Value: v})
	}
	return out
}

// exportTables fills m.Ksymtab and annotates m.Exports with GPL-ness and
// namespaces. A Ksymtab entry without a CRC table takes the CRC of its
// __crc_ symbol.
func (f *elfFile) exportTables(m *Module) error {
	ks, err := f.ksymtab()
	if err != nil || ks == nil {
		return err
	}
	idx := make(map[string]int, len(ks))
	for i, s := range ks {
		idx[s.Name] = i
	}
	for i := range m.Exports {
		e := &m.Exports[i]
		j, ok := idx[e.Name]
		if !ok {
			continue
		}
		e.GPL, e.Namespace = ks[j].GPL, ks[j].Namespace
		if !ks[j].HasCRC && e.HasCRC {
			ks[j].CRC, ks[j].HasCRC = e.CRC, true
		}
	}
	m.Ksymtab = ks
	return nil
}
