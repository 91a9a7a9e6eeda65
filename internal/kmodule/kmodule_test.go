package kmodule

import (
	"bytes"
	"debug/elf"
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
	nExports, nNeeds := 0, 0
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
	}
	if nExports == 0 || nNeeds == 0 {
		t.Fatalf("no exports (%d) or needs (%d) found", nExports, nNeeds)
	}
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
