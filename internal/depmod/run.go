// Package depmod generates kmod's module indexes (modules.dep, the *.bin
// indexes, modules.alias, ...) in pure Go, byte-identical to the output of
// kmod 30's depmod (Debian 12), following FORMATS.md Part A.
//
// Generate computes every file from a modtree.Tree (its modules,
// modules.order and builtin files) without touching the disk; Write
// replaces the files in a directory atomically (all are computed first, so
// a cycle or a parse error leaves the old files untouched). Run is both
// over BASEDIR/lib/modules/RELEASE, as kmod's depmod -b. The checks (-e,
// -E) are modtree's one validator in its kmod mode; kmod's wording and
// order are in Report.WriteWarnings.
//
// Deliberate differences from kmod 30:
//   - modules.weakdep is written too (as kmod ≥ 33 does; only the header
//     line when no module has weakdeps).
//   - A missing modules.builtin or modules.builtin.modinfo gives a valid
//     empty 12-byte index instead of kmod's 0-byte file.
//   - .ko.gz modules are read (Debian's kmod 30 is built without zlib and
//     silently ignores them).
//   - Modules not listed in modules.order are ordered by path after the
//     listed ones (kmod uses an unspecified hash order), and duplicate
//     module names of equal rank keep the first path in sorted order
//     (kmod: the first in readdir order).
//   - The default duplicate ranking is updates/, then extra/, then the
//     rest (kmod's default has no extra/ rank).
//   - Index keys and values that are not 7-bit ASCII are an error, as in
//     kmod ≥ 34.
//   - A modules.order whose last line lacks its newline is still used
//     (kmod warns and then ignores the whole file).
//   - Files are fsynced before they are renamed into place.
//   - .modinfo alias, softdep and weakdep values holding control
//     characters (a newline would inject lines into modules.alias and
//     friends) are skipped with a warning.
package depmod

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Options controls Run; the fields mirror depmod's flags.
type Options struct {
	// BaseDir is the root holding lib/modules/<Release> (depmod -b);
	// "" means "/".
	BaseDir string
	// Release is the kernel release (the directory name under
	// lib/modules).
	Release string
	// Symvers is a Module.symvers path (depmod -E): vmlinux symbols with
	// CRCs for the checks.
	Symvers string
	// SystemMap is a System.map path (depmod -F), used when Symvers is
	// empty.
	SystemMap string
	// ErrSyms reports unresolved symbols and, with Symvers, CRC
	// mismatches (depmod -e).
	ErrSyms bool
	// Strict makes any unresolved symbol or CRC mismatch an error; no
	// file is written then.
	Strict bool
	// Search ranks directories for duplicate module names; nil means
	// DefaultSearch.
	Search []string
	// Progress, if set, reports the steps.
	Progress *progress.Reporter
}

// ModuleDir returns BaseDir/lib/modules/Release.
func (o Options) ModuleDir() string {
	base := o.BaseDir
	if base == "" {
		base = "/"
	}
	return filepath.Join(base, "lib", "modules", o.Release)
}

// ErrStrict is wrapped by the error Run returns when Strict is set and
// the checks found problems.
var ErrStrict = errors.New("symbol check failed (--strict)")

// Run loads the module tree of o (modtree.LoadDir), generates its depmod
// files and writes them (Write). The returned report is non-nil whenever
// generation got that far (also with ErrStrict).
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Release == "" || strings.ContainsAny(o.Release, "/\x00") || o.Release == "." || o.Release == ".." {
		return nil, fmt.Errorf("depmod: invalid kernel release %q", o.Release)
	}
	dir := o.ModuleDir()
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("depmod: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("depmod: %s is not a directory", dir)
	}
	done := o.Progress.Step("depmod: reading modules in %s", dir)
	tree, err := modtree.LoadDir(dir, o.Release)
	done()
	if err != nil {
		return nil, fmt.Errorf("depmod: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	gopts, err := o.generateOptions(dir)
	if err != nil {
		return nil, err
	}
	done = o.Progress.Step("depmod: generating indexes for %d modules", len(tree.Modules))
	res, err := Generate(tree, gopts)
	done()
	if err != nil {
		return nil, err
	}
	res.Warnings = append(missingInputs(tree, dir), res.Warnings...)
	if err := ctx.Err(); err != nil {
		return &res.Report, err
	}
	if err := res.StrictErr(o.Strict); err != nil {
		return &res.Report, err
	}
	if err := Write(dir, res.Files); err != nil {
		return &res.Report, err
	}
	return &res.Report, nil
}

// generateOptions maps Options to GenerateOptions, reading the symbol
// files.
func (o Options) generateOptions(dir string) (GenerateOptions, error) {
	g := GenerateOptions{Dir: dir, Search: o.Search, ErrSyms: o.ErrSyms}
	var err error
	switch {
	case o.Symvers != "":
		g.Vmlinux, err = ReadSymvers(o.Symvers)
		g.CheckCRCs = true
	case o.SystemMap != "":
		g.Vmlinux, err = ReadSystemMap(o.SystemMap)
	}
	return g, err
}

// missingInputs returns kmod's warnings for missing builtin files.
func missingInputs(t *modtree.Tree, dir string) []string {
	var out []string
	if t.Builtin == nil {
		out = append(out, fmt.Sprintf("could not open modules.builtin at %s: No such file or directory", dir))
	}
	if t.BuiltinModinfo == nil {
		out = append(out, fmt.Sprintf("could not open modules.builtin.modinfo at %s: No such file or directory", dir))
	}
	return out
}

// StrictErr returns the ErrStrict error when strict is set and the checks
// found problems.
func (r *Report) StrictErr(strict bool) error {
	if !strict || len(r.Unresolved)+len(r.CRCMismatches) == 0 {
		return nil
	}
	return fmt.Errorf("depmod: %d unresolved symbols, %d CRC mismatches: %w", len(r.Unresolved), len(r.CRCMismatches), ErrStrict)
}

// WriteWarnings prints the report as kmod's depmod prints it on stderr,
// in its wording and order: duplicates and input warnings as the modules
// are read, the symbol problems in check order, then the warnings of
// writing the files. Module paths are joined to dir, the module
// directory.
func (r *Report) WriteWarnings(w io.Writer, dir string) {
	for _, d := range r.Duplicates {
		fmt.Fprintf(w, "depmod: WARNING: duplicate module %s: using %s, ignoring %s\n",
			d.Name, filepath.Join(dir, d.Winner), filepath.Join(dir, d.Loser))
	}
	for _, x := range r.LoadWarnings {
		fmt.Fprintf(w, "depmod: WARNING: %s\n", x)
	}
	defer func() {
		for _, x := range r.Warnings {
			fmt.Fprintf(w, "depmod: WARNING: %s\n", x)
		}
	}()
	for _, p := range r.Problems {
		switch p.Kind {
		case modtree.Unresolved:
			fmt.Fprintf(w, "depmod: WARNING: %s needs unknown symbol %s\n", filepath.Join(dir, p.Module), p.Symbol)
		case modtree.CRCMismatch:
			fmt.Fprintf(w, "depmod: WARNING: %s disagrees about version of symbol %s\n", filepath.Join(dir, p.Module), p.Symbol)
		}
	}
}

// Write writes files into dir, each through a temporary file renamed
// into place. All temporary files are written before the first rename, so
// an error while writing (a full disk, an unwritable directory) replaces
// nothing.
func Write(dir string, files []File) error {
	tmps := make([]*atomicfile.File, 0, len(files))
	defer func() {
		for _, t := range tmps {
			t.Abort()
		}
	}()
	for _, f := range files {
		t, err := atomicfile.Create(filepath.Join(dir, f.Name), true)
		if err != nil {
			return fmt.Errorf("depmod: %w", err)
		}
		tmps = append(tmps, t)
		if _, err := t.Write(f.Data); err != nil {
			return fmt.Errorf("depmod: %s: %w", t.Path, err)
		}
	}
	for _, t := range tmps {
		if err := t.Commit(0o644); err != nil {
			return fmt.Errorf("depmod: %w", err)
		}
	}
	return nil
}

// Map returns the files as a map from name to content.
func Map(files []File) map[string][]byte {
	m := make(map[string][]byte, len(files))
	for _, f := range files {
		m[f.Name] = f.Data
	}
	return m
}

// ReadSymvers reads the vmlinux symbols of a Module.symvers file (lines
// whose module field is "vmlinux"), with their CRCs, plus the symbols
// kmod always treats as known.
func ReadSymvers(path string) (map[string]VmlinuxSymbol, error) {
	all, err := modtree.ReadSymvers(path)
	if err != nil {
		return nil, fmt.Errorf("depmod: %w", err)
	}
	out := make(map[string]VmlinuxSymbol, len(all))
	for name, e := range all {
		if e.Module == "vmlinux" {
			out[name] = VmlinuxSymbol{CRC: e.CRC, HasCRC: true}
		}
	}
	addFake(out)
	return out, nil
}

// ReadSystemMap reads the exported vmlinux symbols of a System.map file
// (third field __ksymtab_<name>), plus the symbols kmod always treats as
// known.
func ReadSystemMap(path string) (map[string]VmlinuxSymbol, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("depmod: %w", err)
	}
	out := map[string]VmlinuxSymbol{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		if name, ok := strings.CutPrefix(f[2], "__ksymtab_"); ok && name != "" {
			out[name] = VmlinuxSymbol{}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("depmod: %s: %w", path, err)
	}
	addFake(out)
	return out, nil
}

// addFake adds the symbols kmod's depmod treats as provided whenever a
// vmlinux symbol list is loaded.
func addFake(m map[string]VmlinuxSymbol) {
	for _, s := range modtree.PseudoSymbols {
		if _, ok := m[s]; !ok {
			m[s] = VmlinuxSymbol{}
		}
	}
}
