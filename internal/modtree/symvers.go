package modtree

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
)

// SymverEntry is one line of Module.symvers.
type SymverEntry struct {
	CRC       uint64
	Module    string // "vmlinux" or a module path
	Export    string // EXPORT_SYMBOL, EXPORT_SYMBOL_GPL
	Namespace string
}

// ReadSymvers parses a Module.symvers file:
// "0xCRC<TAB>symbol<TAB>module<TAB>export[<TAB>namespace]".
func ReadSymvers(path string) (map[string]SymverEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("symvers: %w", err)
	}
	defer f.Close()
	return ParseSymvers(f, path)
}

// ParseSymvers parses Module.symvers content from r; name is used in
// errors (name:line).
func ParseSymvers(r io.Reader, path string) (map[string]SymverEntry, error) {
	out := map[string]SymverEntry{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		if sc.Text() == "" {
			continue
		}
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 4 {
			return nil, fmt.Errorf("symvers: %s:%d: want at least 4 tab-separated fields, got %d", path, line, len(fields))
		}
		crc, err := strconv.ParseUint(strings.TrimPrefix(fields[0], "0x"), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("symvers: %s:%d: bad CRC %q", path, line, fields[0])
		}
		e := SymverEntry{CRC: crc, Module: fields[2], Export: fields[3]}
		if len(fields) > 4 {
			e.Namespace = fields[4]
		}
		out[fields[1]] = e
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("symvers: %s: %w", path, err)
	}
	return out, nil
}

// Export types of Module.symvers.
const (
	ExportSymbol    = "EXPORT_SYMBOL"
	ExportSymbolGPL = "EXPORT_SYMBOL_GPL"
)

// Symver is one Module.symvers line: a symbol and its entry.
type Symver struct {
	Symbol string
	SymverEntry
}

// String formats the line as modpost writes it (without the newline):
// "0x<crc>\t<symbol>\t<module>\t<export>\t<namespace>".
func (s Symver) String() string {
	return fmt.Sprintf("0x%08x\t%s\t%s\t%s\t%s", uint32(s.CRC), s.Symbol, s.Module, s.Export, s.Namespace)
}

// exportType maps GPL-ness to the export column.
func exportType(gpl bool) string {
	if gpl {
		return ExportSymbolGPL
	}
	return ExportSymbol
}

// SymverModule is the module column of Module.symvers for a module at path
// (relative to lib/modules/<release>): the path without the kernel/
// prefix modules_install adds and without the .ko (and compression)
// suffix, as modpost names in-tree modules ("kernel/fs/fat/fat.ko" gives
// "fs/fat/fat"). Modules outside kernel/ keep their directory
// ("extra/foo.ko" gives "extra/foo"); modpost would name an external
// module by its build path, which an installed tree does not record.
func SymverModule(path string) string {
	p := strings.TrimPrefix(kmodule.StripCompressionSuffix(path), "kernel/")
	return strings.TrimSuffix(p, ".ko")
}

// BuildSymvers returns the Module.symvers lines of a kernel: one per
// vmlinux export (vmlinux, in table order) and one per entry of the export
// tables of every module of t (t may be nil), in tree order. A symbol
// exported twice is an error, as it is for modpost.
func BuildSymvers(vmlinux []kimage.Export, t *Tree) ([]Symver, error) {
	out := make([]Symver, 0, len(vmlinux))
	owner := make(map[string]string, len(vmlinux))
	add := func(s Symver) error {
		if prev, dup := owner[s.Symbol]; dup {
			return fmt.Errorf("symvers: %s is exported by both %s and %s", s.Symbol, prev, s.Module)
		}
		owner[s.Symbol] = s.Module
		out = append(out, s)
		return nil
	}
	for _, e := range vmlinux {
		err := add(Symver{Symbol: e.Name, SymverEntry: SymverEntry{
			CRC: uint64(e.CRC), Module: "vmlinux", Export: exportType(e.GPL), Namespace: e.Namespace}})
		if err != nil {
			return nil, err
		}
	}
	if t == nil {
		return out, nil
	}
	for _, m := range t.Modules {
		mod := SymverModule(m.Path)
		for _, e := range m.Ksymtab {
			err := add(Symver{Symbol: e.Name, SymverEntry: SymverEntry{
				CRC: e.CRC, Module: mod, Export: exportType(e.GPL), Namespace: e.Namespace}})
			if err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// WriteSymvers writes lines in Module.symvers format, one per line, in
// the order given.
func WriteSymvers(w io.Writer, lines []Symver) error {
	bw := bufio.NewWriterSize(w, 64*1024)
	for _, l := range lines {
		if strings.ContainsAny(l.Symbol+l.Module+l.Export+l.Namespace, "\t\n") {
			return fmt.Errorf("symvers: %q: a field contains a tab or newline", l.Symbol)
		}
		bw.WriteString(l.String())
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("symvers: %w", err)
	}
	return nil
}
