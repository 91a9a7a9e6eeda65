package kmodule

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// refParse is an independent parser built on the standard library's
// debug/elf, used to check the lean reader on real modules.
func refParse(t *testing.T, raw []byte) *Module {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	m := &Module{Machine: f.Machine}
	if s := f.Section(".modinfo"); s != nil {
		d, _ := s.Data()
		for _, rec := range bytes.Split(d, []byte{0}) {
			if len(rec) > 0 {
				k, v, _ := strings.Cut(string(rec), "=")
				m.ModInfo = append(m.ModInfo, KV{k, v})
			}
		}
	}
	syms, err := f.Symbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF {
			if s.Name != "" {
				m.Needs = append(m.Needs, Need{Symbol: Symbol{Name: s.Name}, Weak: elf.ST_BIND(s.Info) == elf.STB_WEAK})
			}
			continue
		}
		if n, ok := strings.CutPrefix(s.Name, "__crc_"); ok {
			var crc uint64
			if s.Section >= elf.SHN_LORESERVE {
				crc = s.Value & 0xffffffff
			} else {
				d, _ := f.Sections[s.Section].Data()
				crc = uint64(f.ByteOrder.Uint32(d[s.Value-f.Sections[s.Section].Addr:]))
			}
			m.Exports = append(m.Exports, Symbol{Name: n, CRC: crc, HasCRC: true})
		}
	}
	if len(m.Exports) == 0 {
		if s := f.Section("__ksymtab_strings"); s != nil {
			d, _ := s.Data()
			for _, n := range bytes.Split(d, []byte{0}) {
				if len(n) > 0 {
					m.Exports = append(m.Exports, Symbol{Name: string(n)})
				}
			}
		}
	}
	refKsymtab(t, f, syms, m)
	if s := f.Section("__versions"); s != nil {
		d, _ := s.Data()
		for off := 0; off+64 <= len(d); off += 64 {
			crc := f.ByteOrder.Uint64(d[off:])
			n := string(bytes.TrimRight(d[off+8:off+64], "\x00"))
			if i := strings.IndexByte(n, 0); i >= 0 {
				n = n[:i]
			}
			found := false
			for i := range m.Needs {
				if m.Needs[i].Name == n {
					if !m.Needs[i].HasCRC {
						m.Needs[i].CRC, m.Needs[i].HasCRC = crc, true
					}
					found = true
					break
				}
			}
			if !found && n != "" {
				m.Needs = append(m.Needs, Need{Symbol: Symbol{Name: n, CRC: crc, HasCRC: true}, VersionsOnly: true})
			}
		}
	}
	return m
}

// refKsymtab reads the x86_64 export tables with debug/elf: 12-byte
// PREL32 entries whose name and namespace come from the RELA relocations
// of the table, CRCs from the parallel __kcrctab table.
func refKsymtab(t *testing.T, f *elf.File, syms []elf.Symbol, m *Module) {
	t.Helper()
	strs := f.Section("__ksymtab_strings")
	for _, tab := range []struct{ name, crcs string }{{"__ksymtab", "__kcrctab"}, {"__ksymtab_gpl", "__kcrctab_gpl"}} {
		sec := f.Section(tab.name)
		if sec == nil {
			continue
		}
		rels := map[uint64]elf.Rela64{}
		for _, rs := range f.Sections {
			if rs.Type == elf.SHT_RELA && f.Sections[rs.Info] == sec {
				d, _ := rs.Data()
				entries := make([]elf.Rela64, len(d)/24)
				if err := binary.Read(bytes.NewReader(d), f.ByteOrder, entries); err != nil {
					t.Fatal(err)
				}
				for _, r := range entries {
					rels[r.Off] = r
				}
			}
		}
		sd, _ := strs.Data()
		str := func(off uint64) string {
			r, ok := rels[off]
			if !ok {
				return ""
			}
			s := syms[elf.R_SYM64(r.Info)-1]
			b := sd[s.Value+uint64(r.Addend):]
			return string(b[:bytes.IndexByte(b, 0)])
		}
		var crcs []byte
		if cs := f.Section(tab.crcs); cs != nil {
			crcs, _ = cs.Data()
		}
		for i := uint64(0); i < sec.Size/12; i++ {
			s := Symbol{Name: str(12*i + 4), Namespace: str(12*i + 8), GPL: tab.name == "__ksymtab_gpl"}
			if crcs != nil {
				s.CRC, s.HasCRC = uint64(f.ByteOrder.Uint32(crcs[4*i:])), true
			}
			m.Ksymtab = append(m.Ksymtab, s)
		}
	}
	for i := range m.Exports {
		for _, k := range m.Ksymtab {
			if k.Name == m.Exports[i].Name {
				m.Exports[i].GPL, m.Exports[i].Namespace = k.GPL, k.Namespace
			}
		}
	}
}

// TestParseMatchesDebugELF parses every module of the Debian tree with the
// lean reader and with debug/elf and requires identical results.
func TestParseMatchesDebugELF(t *testing.T) {
	root, rel := testenv.DebianModules(t)
	dir := filepath.Join(root, "lib", "modules", rel)
	var paths []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			paths = append(paths, p)
		}
		return nil
	})
	if len(paths) < 1000 {
		t.Fatalf("only %d modules in %s", len(paths), dir)
	}
	step := 1
	if testing.Short() {
		step = 20
	}
	nExports, nNeeds, nGPL, nNS, nNoCRC := 0, 0, 0, 0, 0
	for i := 0; i < len(paths); i += step {
		p := paths[i]
		got, err := ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		want := refParse(t, raw)
		want.Name = ModName(p)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: lean parser and debug/elf differ:\n got %+v\nwant %+v", p, got, want)
		}
		nExports += len(got.Exports)
		nNeeds += len(got.Needs)
		for _, k := range got.Ksymtab {
			nGPL += btoi(k.GPL)
			nNS += btoi(k.Namespace != "")
			nNoCRC += btoi(!k.HasCRC)
		}
	}
	if nExports == 0 || nNeeds == 0 || nGPL == 0 || nGPL == nExports || nNS == 0 || nNoCRC != 0 {
		t.Fatalf("exports %d (GPL %d, in a namespace %d, without CRC %d), needs %d", nExports, nGPL, nNS, nNoCRC, nNeeds)
	}
	t.Logf("%d exports (GPL %d, in a namespace %d), %d needs", nExports, nGPL, nNS, nNeeds)
}

func TestParseBadInput(t *testing.T) {
	root, rel := testenv.DebianModules(t)
	ko := filepath.Join(root, "lib", "modules", rel, "kernel", "fs", "fat", "fat.ko")
	raw, err := os.ReadFile(ko)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated-header", raw[:40]},
		{"truncated-half", raw[:len(raw)/2]},
		{"not-elf", []byte("hello, this is not a module\n")},
		{"empty", nil},
		{"corrupt-gzip", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3}},
		{"corrupt-xz", append([]byte{0xFD, '7', 'z', 'X', 'Z', 0}, raw[:64]...)},
		{"corrupt-zstd", append([]byte{0x28, 0xB5, 0x2F, 0xFD}, raw[:64]...)},
		{"bad-ksymtab-reloc", badKsymtabReloc(t, raw)},
	} {
		p := filepath.Join(t.TempDir(), tc.name+".ko")
		if err := os.WriteFile(p, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFile(p)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error does not name the file: %v", tc.name, err)
		}
	}
}

// badKsymtabReloc returns a copy of module raw whose first export-table
// relocation for a name (the second: entry 0's name field) refers to a
// symbol that does not exist.
func badKsymtabReloc(t *testing.T, raw []byte) []byte {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section(".rela__ksymtab_gpl")
	if s == nil {
		t.Fatal("no .rela__ksymtab_gpl")
	}
	b := bytes.Clone(raw)
	binary.LittleEndian.PutUint32(b[s.Offset+24+12:], 0xfffffff) // the name field relocation: r_info's symbol
	return b
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestDecompressionBomb: a .ko.zst of 4 GiB of zeros and a .ko.gz of
// 300 MiB are refused at MaxModuleSize with ErrTooLarge, naming the file,
// and allocate a bounded amount on the way.
func TestDecompressionBomb(t *testing.T) {
	for name, data := range map[string][]byte{"bomb.ko.zst": testenv.ZstdZeros(4 << 30), "bomb.ko.gz": testenv.GzipZeros(300 << 20)} {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		var err error
		alloc := testenv.Allocated(func() { _, err = ReadFile(p) })
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s (%d bytes): %v, want ErrTooLarge naming the file", name, len(data), err)
		}
		if alloc > 3*MaxModuleSize {
			t.Errorf("%s: %d MiB allocated", name, alloc>>20)
		}
		t.Logf("%s (%d bytes): %v; %d MiB allocated", name, len(data), err, alloc>>20)
	}
}
