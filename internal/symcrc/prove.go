package symcrc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/runenv"
)

// Options select the prepared tree and how kbuild runs in it.
type Options struct {
	// Src is the kernel source tree. Obj is the object tree (O=) after
	// "make olddefconfig modules_prepare"; it must be a separate
	// directory (the proof runs kbuild in a copy of it). Neither is
	// modified (see the package doc).
	Src, Obj string
	// MakeArgs are the make variables of the preparation and of module
	// builds: ARCH=, CROSS_COMPILE=, LOCALVERSION=, CC=, ... (not O=,
	// M=, -C or -f).
	MakeArgs []string
	// Env is added to the environment of make (which is the process's
	// without CI secrets and without MAKEFLAGS-like variables).
	Env []string
	// Jobs is make's -j: files processed in parallel (default: all cores).
	Jobs int
	// CacheDir holds the export index cache; empty means the default
	// cache directory (runenv.DefaultCacheDir) + "/symcrc". "-" disables
	// the cache.
	CacheDir string
	// SourceID, when set, identifies Src's content (a tarball's sha256, a
	// commit) and keys the index cache, which then takes no walk of the
	// tree.
	SourceID string
	// Make is the make program (default "make").
	Make string
	// Log receives progress, warnings and make's output (may be nil).
	Log io.Writer

	bash string
}

// Report is the outcome of a proof.
type Report struct {
	// Checked are the symbols whose CRC computed from the source equals
	// the stock one, sorted by symbol.
	Checked []Checked
	// Mismatches are the symbols whose CRC differs, or that the file
	// exporting them does not export with this source and config.
	Mismatches []Mismatch
	// Failed are the symbols whose exporting file could not be processed.
	Failed []Failure
	// Unlocated are the symbols no file of the source was found to
	// export (not proven; see the package doc), sorted.
	Unlocated []string
	// Files is the number of source files processed.
	Files int
	// IndexCached tells whether the export index came from the cache;
	// IndexTime is the time taken to open (or build) it and KbuildTime the
	// (wall) time of the CRC computation, KbuildCPU its CPU time (user and
	// system, make and all its children).
	IndexCached                      bool
	IndexTime, KbuildTime, KbuildCPU time.Duration
}

// Checked is a proven symbol.
type Checked struct {
	Symbol, File string
	CRC          uint32
}

// MismatchKind says how a symbol failed the proof.
type MismatchKind int

const (
	// CRCDiffers: the source gives another CRC (0 is "exported without a
	// version", an assembly export without a prototype).
	CRCDiffers MismatchKind = iota
	// NotExported: the files that export the symbol in the source text
	// do not export it with this config.
	NotExported
)

// Mismatch is a symbol whose CRC is not the stock one.
type Mismatch struct {
	Symbol string
	// File is the exporting file (for NotExported, the first candidate;
	// Candidates has them all).
	File          string
	Stock, Source uint32
	Kind          MismatchKind
	Candidates    []string
}

// String describes the mismatch: the symbol, both CRCs and the file.
func (m Mismatch) String() string {
	if m.Kind == NotExported {
		return fmt.Sprintf("%s: stock CRC 0x%08x, but %s does not export it with this config",
			m.Symbol, m.Stock, strings.Join(m.Candidates, ", "))
	}
	src := fmt.Sprintf("0x%08x", m.Source)
	if m.Source == 0 {
		src = "none (exported without a version)"
	}
	return fmt.Sprintf("%s: stock CRC 0x%08x, source CRC %s (%s)", m.Symbol, m.Stock, src, m.File)
}

// Failure is a file that could not be processed, with the symbols it
// was to prove.
type Failure struct {
	File    string
	Symbols []string
	Err     error
}

// Err returns nil when every located symbol was proven, else one error
// listing every mismatch and failure. Unlocated symbols are not errors.
func (r *Report) Err() error {
	if len(r.Mismatches) == 0 && len(r.Failed) == 0 {
		return nil
	}
	var b strings.Builder
	total := len(r.Checked) + len(r.Mismatches)
	for _, f := range r.Failed {
		total += len(f.Symbols)
	}
	if len(r.Mismatches) > 0 {
		fmt.Fprintf(&b, "symcrc: %d of %d symbols do not have the stock CRC in the prepared source "+
			"(modules built against it would load and misuse the stock kernel's data: wrong source, config or compiler):",
			len(r.Mismatches), total)
		for _, m := range r.Mismatches {
			b.WriteString("\n  " + m.String())
		}
	}
	if len(r.Failed) > 0 {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "symcrc: the CRCs of %d files could not be computed:", len(r.Failed))
		for _, f := range r.Failed {
			fmt.Fprintf(&b, "\n  %s (for %s): %v", f.File, strings.Join(f.Symbols, ", "), f.Err)
		}
	}
	return errors.New(b.String())
}

// Prove computes, for every symbol of want (name → stock CRC, e.g. a
// module's imports from vmlinux), its CRC from the prepared source the way
// kbuild does, and compares. The error is for a proof that could not run
// (no prepared tree, make failing as a whole); the Report holds the
// per-symbol outcome, and Report.Err the verdict.
func Prove(ctx context.Context, o Options, want map[string]uint32) (*Report, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	srcarch, err := o.inspect()
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	start := time.Now()
	ix, cached, err := OpenIndex(ctx, o.Src, o.indexOptions())
	if err != nil {
		return nil, err
	}
	rep.IndexCached, rep.IndexTime = cached, time.Since(start)
	o.logf("symcrc: export index of %s: %d symbols (%s in %s)", o.Src, len(ix.Exports),
		map[bool]string{true: "cached", false: "built"}[cached], rep.IndexTime.Round(time.Millisecond))

	cands, files := map[string][]string{}, map[string]bool{}
	for sym := range want {
		c := ix.Locate(sym, srcarch)
		if excluded := excludedFor(srcarch); excluded != nil {
			c = filter(c, excluded)
		}
		if len(c) == 0 {
			rep.Unlocated = append(rep.Unlocated, sym)
			continue
		}
		cands[sym] = c
		for _, f := range c {
			files[f] = true
		}
	}
	sort.Strings(rep.Unlocated)
	start = time.Now()
	o.logf("symcrc: computing the CRCs of %d symbols from %d files (make -j%d)", len(cands), len(files), o.Jobs)
	results, cpu, err := runKbuild(ctx, &o, keys(files))
	if err != nil {
		return nil, err
	}
	rep.KbuildTime, rep.KbuildCPU, rep.Files = time.Since(start), cpu, len(files)
	rep.decide(want, cands, results, o.logf)
	o.summarize(rep)
	return rep, nil
}

// normalize checks the options and fills in the defaults.
func (o *Options) normalize() error {
	if o.Src == "" || o.Obj == "" {
		return errors.New("symcrc: Options.Src (source tree) and Options.Obj (O= object tree) are required")
	}
	for _, p := range []*string{&o.Src, &o.Obj} {
		a, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("symcrc: %w", err)
		}
		*p = a
		if !safePath.MatchString(a) {
			return fmt.Errorf("symcrc: path %q has characters kbuild cannot take", a)
		}
	}
	if o.Src == o.Obj {
		return fmt.Errorf("symcrc: %s: in-tree preparations are not supported (prepare with O=)", o.Src)
	}
	if o.Src == o.Obj {
		return fmt.Errorf("symcrc: %s: in-tree preparations are not supported (prepare with O=)", o.Src)
	}
	for _, a := range o.MakeArgs {
		if strings.HasPrefix(a, "O=") || strings.HasPrefix(a, "M=") || strings.HasPrefix(a, "KBUILD_EXTMOD=") ||
			a == "-C" || a == "-f" || strings.HasPrefix(a, "--directory") || strings.HasPrefix(a, "--file") {
			return fmt.Errorf("symcrc: make argument %q: the trees are Options.Src and Options.Obj", a)
		}
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.NumCPU()
	}
	if o.Make == "" {
		o.Make = "make"
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		return errors.New("symcrc: bash not found (the CRC commands run under bash -o pipefail)")
	}
	o.bash = bash
	return nil
}

// inspect checks that Obj is a prepared tree with module versions and
// returns its source architecture directory (arch/<srcarch>).
func (o *Options) inspect() (string, error) {
	conf := filepath.Join(o.Obj, "include", "config", "auto.conf")
	f, err := os.Open(conf)
	if err != nil {
		return "", fmt.Errorf("symcrc: %s is not a prepared kernel tree (run make olddefconfig modules_prepare): %w", o.Obj, err)
	}
	defer f.Close()
	modversions := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sc.Text() == "CONFIG_MODVERSIONS=y" {
			modversions = true
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("symcrc: %s: %w", conf, err)
	}
	if !modversions {
		return "", fmt.Errorf("symcrc: %s: CONFIG_MODVERSIONS is not set: the tree has no symbol versions to prove", conf)
	}
	if _, err := os.Stat(filepath.Join(o.Obj, "scripts", "genksyms", "genksyms")); err != nil {
		return "", fmt.Errorf("symcrc: %s has no scripts/genksyms/genksyms (run make modules_prepare): %w", o.Obj, err)
	}
	return o.srcarch()
}

// srcarch returns the directory under arch/ of the tree's architecture:
// the one modules_prepare generated headers in.
func (o *Options) srcarch() (string, error) {
	m, _ := filepath.Glob(filepath.Join(o.Obj, "arch", "*", "include", "generated"))
	if len(m) == 1 {
		return filepath.Base(filepath.Dir(filepath.Dir(m[0]))), nil
	}
	for _, a := range o.MakeArgs {
		if v, ok := strings.CutPrefix(a, "ARCH="); ok {
			switch v {
			case "x86_64", "i386", "x86":
				return "x86", nil
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("symcrc: cannot tell the architecture of %s (%d arch/*/include/generated; no ARCH=)", o.Obj, len(m))
}

func (o *Options) indexOptions() IndexOptions {
	io := IndexOptions{CacheDir: o.CacheDir, SourceID: o.SourceID, Jobs: o.Jobs, Skip: []string{o.Obj}}
	switch o.CacheDir {
	case "-":
		io.CacheDir = ""
	case "":
		if d, err := runenv.DefaultCacheDir(os.Getenv); err == nil {
			io.CacheDir = filepath.Join(d, "symcrc")
		}
	}
	return io
}

func (o *Options) logf(format string, a ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", a...)
	}
}

// summarize logs the outcome and, as a warning, the unlocated symbols.
func (o *Options) summarize(r *Report) {
	o.logf("symcrc: %d symbols checked, %d mismatches, %d failed, %d unlocated (%d files in %s, CPU %s)",
		len(r.Checked), len(r.Mismatches), len(r.Failed), len(r.Unlocated), r.Files,
		r.KbuildTime.Round(time.Millisecond), r.KbuildCPU.Round(time.Millisecond))
	if len(r.Unlocated) > 0 {
		o.logf("symcrc: warning: no file of the source exports these %d symbols in its text, so their CRCs are not proven: %s",
			len(r.Unlocated), strings.Join(r.Unlocated, " "))
	}
}

// excludedFor returns the directories that never hold the exporter of a
// module-visible symbol for srcarch: boot decompressors and the EFI stub
// (built with exports disabled) and, on x86, User-Mode Linux's half.
func excludedFor(srcarch string) []string {
	ex := []string{"arch/" + srcarch + "/boot/", "drivers/firmware/efi/libstub/"}
	if srcarch == "x86" {
		ex = append(ex, "arch/x86/um/")
	}
	return ex
}

func filter(files, excluded []string) []string {
	var out []string
	for _, f := range files {
		keep := true
		for _, e := range excluded {
			if strings.HasPrefix(f, e) {
				keep = false
			}
		}
		if keep {
			out = append(out, f)
		}
	}
	return out
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
