// Package devel checks a kernel-devel tree: the external-module build tree
// (scripts/package/install-extmod-build or kbuild.CopyDevel) that the image
// carries at build/, so that inside WSL
//
//	make -C /lib/modules/$(uname -r)/build M=$PWD
//
// and DKMS work. Verify reports whether the tree is complete for its
// config (generated headers, Module.symvers, the Makefiles and scripts
// modpost needs, the host programs the config calls for), whether it is for
// the expected kernel release, whether its host programs run on the target
// architecture (x86_64 or aarch64 ELF: WSL runs them natively, so an arm64
// image needs aarch64 programs), and whether it can be used from a
// read-only mount: nothing an external build needs is missing (make would
// try to create it inside the tree), every symlink stays inside the tree,
// and no make input points back into the build machine. Retarget makes
// the copy of a tree for a cross-compiled target (arm64 images built on
// x86_64), with its host programs rebuilt for the target.
package devel

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
)

// Options say what tree Verify expects.
type Options struct {
	// Release is the kernel release (uname -r) the tree must be for.
	// Required.
	Release string
	// Arch is the target architecture, x86_64 or arm64 (aarch64): the
	// machine the host programs must be built for. Empty means the
	// architecture of the tree's config.
	Arch string
	// Symvers, if set, is the kernel's Module.symvers; the tree's copy must
	// be identical to it.
	Symvers string
	// BuildPaths are absolute paths of the build machine (kernel source,
	// object tree, cache entry) that must not appear in the files make and
	// the compiler read from the tree.
	BuildPaths []string
}

// HostTool is an ELF program (or plugin) found in the tree.
type HostTool struct {
	// Path is relative to the tree, with slashes.
	Path string
	// Machine is the ELF machine: x86_64, aarch64, or the debug/elf name.
	Machine string
	// GLIBC is the newest GLIBC_x.y symbol version it needs ("" if none:
	// static, or not linked against glibc).
	GLIBC string
}

// Problem is one thing wrong with a tree.
type Problem struct {
	// Path is the file concerned, relative to the tree ("" for the tree).
	Path string
	// Msg says what is wrong.
	Msg string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// Report is what Verify found.
type Report struct {
	// Dir is the tree checked.
	Dir string
	// Release is include/config/kernel.release of the tree.
	Release string
	// Arch is the target architecture (x86_64 or arm64) and SrcArch the
	// kernel's arch directory (x86, arm64).
	Arch, SrcArch string
	// Files, Dirs and Symlinks count the tree's entries; Bytes is the size
	// of its files and symlink targets.
	Files, Dirs, Symlinks int
	Bytes                 int64
	// HostTools lists every ELF file, sorted by path.
	HostTools []HostTool
	// GLIBC is the newest glibc symbol version any host tool needs: the
	// user's distro needs at least this glibc to run them.
	GLIBC string
	// Problems make the tree unusable; Warnings are worth reporting but do
	// not break external module builds.
	Problems, Warnings []Problem
}

// Error is returned by Verify when a tree has problems.
type Error struct {
	Dir      string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "devel: %s: %d problem(s)", e.Dir, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// archInfo maps a target architecture to its kernel and ELF names.
type archInfo struct {
	arch, srcArch, uname string
	machine              elf.Machine
}

var arches = []archInfo{
	{"x86_64", "x86", "x86_64", elf.EM_X86_64},
	{"arm64", "arm64", "aarch64", elf.EM_AARCH64},
}

func lookupArch(name string) (archInfo, bool) {
	for _, a := range arches {
		if name == a.arch || name == a.uname || name == a.srcArch || (name == "amd64" && a.arch == "x86_64") {
			return a, true
		}
	}
	return archInfo{}, false
}

func machineName(m elf.Machine) string {
	for _, a := range arches {
		if a.machine == m {
			return a.uname
		}
	}
	return m.String()
}

// Verify checks the kernel-devel tree dir against o. It returns the report
// and, when the tree has problems, an *Error listing them. Other errors
// (dir missing, unreadable) come without a report.
func Verify(dir string, o Options) (*Report, error) {
	if o.Release == "" {
		return nil, errors.New("devel: no kernel release given")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("devel: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("devel: %s is not a directory", dir)
	}
	v := &verifier{dir: dir, o: o, r: &Report{Dir: dir}}
	if err := v.run(); err != nil {
		return nil, err
	}
	sort.Slice(v.r.HostTools, func(i, j int) bool { return v.r.HostTools[i].Path < v.r.HostTools[j].Path })
	if len(v.r.Problems) > 0 {
		return v.r, &Error{Dir: dir, Problems: v.r.Problems}
	}
	return v.r, nil
}

type verifier struct {
	dir string
	o   Options
	r   *Report
	// cfg is .config (CONFIG_X -> value, "n" for "is not set").
	cfg map[string]string
	// entries are the tree's paths (slash-separated) and their modes.
	entries map[string]fs.FileMode
}

func (v *verifier) problem(p, format string, a ...any) {
	v.r.Problems = append(v.r.Problems, Problem{Path: p, Msg: fmt.Sprintf(format, a...)})
}

func (v *verifier) warn(p, format string, a ...any) {
	v.r.Warnings = append(v.r.Warnings, Problem{Path: p, Msg: fmt.Sprintf(format, a...)})
}

func (v *verifier) abs(rel string) string { return filepath.Join(v.dir, filepath.FromSlash(rel)) }

func (v *verifier) on(name string) bool { return v.cfg[name] == "y" }

func (v *verifier) run() error {
	if err := v.walk(); err != nil {
		return err
	}
	v.config()
	v.arch()
	v.release()
	v.required()
	v.symvers()
	v.hostTools()
	v.symlinks()
	v.buildPaths()
	return nil
}

// walk records every entry and checks the ELF files.
func (v *verifier) walk() error {
	v.entries = map[string]fs.FileMode{}
	return filepath.WalkDir(v.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("devel: %w", err)
		}
		rel, _ := filepath.Rel(v.dir, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("devel: %w", err)
		}
		v.entries[rel] = fi.Mode()
		switch t := fi.Mode().Type(); {
		case t == fs.ModeDir:
			v.r.Dirs++
		case t == fs.ModeSymlink:
			v.r.Symlinks++
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("devel: %w", err)
			}
			v.r.Bytes += int64(len(target))
		case t == 0:
			v.r.Files++
			v.r.Bytes += fi.Size()
			if fi.Size() >= 64 {
				if err := v.elfFile(p, rel, fi); err != nil {
					return err
				}
			}
		default:
			v.problem(rel, "not a regular file, directory or symlink (%s)", t)
		}
		return nil
	})
}

// elfFile records p as a host tool if it is an ELF executable or shared
// object (relocatable objects are not run).
func (v *verifier) elfFile(p, rel string, fi fs.FileInfo) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("devel: %w", err)
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil || string(magic[:]) != elf.ELFMAG {
		return nil
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		v.problem(rel, "corrupt ELF file: %v", err)
		return nil
	}
	defer ef.Close()
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return nil
	}
	t := HostTool{Path: rel, Machine: machineName(ef.Machine)}
	if needs, err := ef.DynamicVersionNeeds(); err == nil {
		for _, n := range needs {
			for _, d := range n.Needs {
				if g, ok := strings.CutPrefix(d.Dep, "GLIBC_"); ok && versionLess(t.GLIBC, g) {
					t.GLIBC = g
				}
			}
		}
	}
	if t.GLIBC != "" && versionLess(v.r.GLIBC, t.GLIBC) {
		v.r.GLIBC = t.GLIBC
	}
	if ef.Type == elf.ET_EXEC || hasInterp(ef) {
		if fi.Mode()&0o111 == 0 {
			v.problem(rel, "host program is not executable (mode %v)", fi.Mode().Perm())
		}
	}
	v.r.HostTools = append(v.r.HostTools, t)
	return nil
}

func hasInterp(f *elf.File) bool {
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// versionLess compares dotted numeric versions ("" is the smallest).
func versionLess(a, b string) bool {
	if a == "" {
		return b != ""
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// readConfig parses a .config or auto.conf: CONFIG_X=value lines and
// "# CONFIG_X is not set" (value "n").
func readConfig(p string) (map[string]string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	cfg := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		if n, ok := strings.CutPrefix(s, "# "); ok {
			if name, ok := strings.CutSuffix(n, " is not set"); ok && strings.HasPrefix(name, "CONFIG_") {
				cfg[name] = "n"
			}
			continue
		}
		if strings.HasPrefix(s, "#") {
			continue
		}
		k, val, ok := strings.Cut(s, "=")
		if !ok || !strings.HasPrefix(k, "CONFIG_") {
			return nil, fmt.Errorf("line %d: not a CONFIG_ assignment: %q", line, s)
		}
		if len(val) >= 2 && val[0] == '"' {
			// .config quotes strings; auto.conf (since 5.x) does not.
			if u, err := strconv.Unquote(val); err == nil {
				val = u
			}
		}
		cfg[k] = val
	}
	return cfg, sc.Err()
}

// config reads .config and checks include/config/auto.conf agrees with it
// (dkms.conf files and module Makefiles read either).
func (v *verifier) config() {
	var err error
	v.cfg, err = readConfig(v.abs(".config"))
	if err != nil {
		v.problem(".config", "%v", unwrapPath(err))
		v.cfg = map[string]string{}
	}
	auto, err := readConfig(v.abs("include/config/auto.conf"))
	if err != nil {
		v.problem("include/config/auto.conf", "%v", unwrapPath(err))
		return
	}
	if len(v.cfg) == 0 {
		v.cfg = auto
		return
	}
	var diffs []string
	for k, a := range auto {
		if c := v.cfg[k]; c != a {
			diffs = append(diffs, fmt.Sprintf("%s=%s in auto.conf, %q in .config", k, a, c))
		}
	}
	for k, c := range v.cfg {
		if _, ok := auto[k]; !ok && c != "n" {
			diffs = append(diffs, fmt.Sprintf("%s=%s in .config, absent from auto.conf", k, c))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		if len(diffs) > 5 {
			diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
		}
		v.problem(".config", "does not match include/config/auto.conf (not the config the kernel was built with?): %s", strings.Join(diffs, "; "))
	}
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, fs.ErrNotExist) {
			return errors.New("missing")
		}
		return pe.Err
	}
	return err
}

// arch settles the target architecture from the options and the config.
func (v *verifier) arch() {
	var fromCfg string
	switch {
	case v.on("CONFIG_X86_64"):
		fromCfg = "x86_64"
	case v.on("CONFIG_ARM64"):
		fromCfg = "arm64"
	}
	want := fromCfg
	if v.o.Arch != "" {
		a, ok := lookupArch(v.o.Arch)
		if !ok {
			v.problem("", "unknown target architecture %q (want x86_64 or arm64)", v.o.Arch)
			return
		}
		want = a.arch
		if fromCfg != "" && fromCfg != want {
			v.problem(".config", "is a %s config, but the target is %s", fromCfg, want)
		}
	}
	if want == "" {
		v.problem(".config", "neither CONFIG_X86_64 nor CONFIG_ARM64 is set")
		return
	}
	a, _ := lookupArch(want)
	v.r.Arch, v.r.SrcArch = a.arch, a.srcArch
}

// release checks the tree is for o.Release.
func (v *verifier) release() {
	b, err := os.ReadFile(v.abs("include/config/kernel.release"))
	if err != nil {
		v.problem("include/config/kernel.release", "%v", unwrapPath(err))
	} else {
		v.r.Release = strings.TrimSpace(string(b))
		if v.r.Release != v.o.Release {
			v.problem("include/config/kernel.release", "release %q, want %q", v.r.Release, v.o.Release)
		}
	}
	b, err = os.ReadFile(v.abs("include/generated/utsrelease.h"))
	if err != nil {
		v.problem("include/generated/utsrelease.h", "%v", unwrapPath(err))
		return
	}
	want := fmt.Sprintf("#define UTS_RELEASE %q", v.o.Release)
	if !bytes.Contains(b, []byte(want)) {
		v.problem("include/generated/utsrelease.h", "no %s (modules would carry another vermagic)", want)
	}
}

// required checks the files an external module build reads.
func (v *verifier) required() {
	mk, err := os.ReadFile(v.abs("Makefile"))
	if err != nil {
		v.problem("Makefile", "%v", unwrapPath(err))
	} else if !bytes.Contains(mk, []byte("\nVERSION =")) || !bytes.Contains(mk, []byte("\nPATCHLEVEL =")) {
		v.problem("Makefile", "not the kernel's top-level Makefile (an O= wrapper pointing into the build machine?)")
	}
	files := []string{
		"include/generated/autoconf.h",
		"include/generated/uapi/linux/version.h",
		"include/linux/module.h",
		"scripts/Kbuild.include",
		"scripts/Makefile.build",
		"scripts/Makefile.lib",
		"scripts/Makefile.modpost",
		"scripts/Makefile.modfinal",
	}
	if _, ok := v.entries["scripts/module.lds.S"]; ok {
		files = append(files, "scripts/module.lds")
	}
	dirs := []string{}
	if v.r.SrcArch != "" {
		files = append(files, "arch/"+v.r.SrcArch+"/Makefile")
		dirs = append(dirs, "arch/"+v.r.SrcArch+"/include/generated", "arch/"+v.r.SrcArch+"/include/asm")
	}
	for _, f := range files {
		if m, ok := v.entries[f]; !ok {
			v.problem(f, "missing")
		} else if !m.IsRegular() {
			v.problem(f, "not a regular file")
		}
	}
	for _, d := range dirs {
		if m, ok := v.entries[d]; !ok {
			v.problem(d, "missing")
		} else if !m.IsDir() {
			v.problem(d, "not a directory")
		}
	}
}

// symvers checks Module.symvers: present, parseable, with CRCs when the
// kernel has MODVERSIONS, and identical to o.Symvers.
func (v *verifier) symvers() {
	p := v.abs("Module.symvers")
	if _, ok := v.entries["Module.symvers"]; !ok {
		v.problem("Module.symvers", "missing (modules would get no CRCs and warnings about undefined symbols)")
		return
	}
	syms, err := modtree.ReadSymvers(p)
	if err != nil {
		v.problem("Module.symvers", "%v", err)
		return
	}
	if len(syms) == 0 {
		v.problem("Module.symvers", "empty (made by modules_prepare, not by a full kernel build?)")
		return
	}
	if v.on("CONFIG_MODVERSIONS") {
		zero := 0
		for _, s := range syms {
			if s.CRC == 0 {
				zero++
			}
		}
		if zero == len(syms) {
			v.problem("Module.symvers", "CONFIG_MODVERSIONS=y but every CRC is 0")
		}
	}
	if v.o.Symvers != "" {
		a, err1 := os.ReadFile(p)
		b, err2 := os.ReadFile(v.o.Symvers)
		switch {
		case err1 != nil:
			v.problem("Module.symvers", "%v", err1)
		case err2 != nil:
			v.problem("", "kernel Module.symvers: %v", err2)
		case !bytes.Equal(a, b):
			v.problem("Module.symvers", "differs from the kernel's %s", v.o.Symvers)
		}
	}
}

// hostTools checks that the programs the config needs are present and
// built for the target, and that every other ELF file is too.
func (v *verifier) hostTools() {
	need := []string{"scripts/basic/fixdep", "scripts/mod/modpost"}
	if v.on("CONFIG_MODVERSIONS") {
		if v.on("CONFIG_GENDWARFKSYMS") {
			need = append(need, "scripts/gendwarfksyms/gendwarfksyms")
		} else {
			need = append(need, "scripts/genksyms/genksyms")
		}
	}
	if v.on("CONFIG_OBJTOOL") {
		need = append(need, "tools/objtool/objtool")
	}
	if v.on("CONFIG_FTRACE_MCOUNT_USE_RECORDMCOUNT") && v.on("CONFIG_HAVE_C_RECORDMCOUNT") {
		need = append(need, "scripts/recordmcount")
	}
	tools := map[string]HostTool{}
	for _, t := range v.r.HostTools {
		tools[t.Path] = t
	}
	for _, n := range need {
		if _, ok := tools[n]; !ok {
			if _, exists := v.entries[n]; exists {
				v.problem(n, "not an ELF program")
			} else {
				v.problem(n, "missing (make would try to build it inside the tree)")
			}
		}
	}
	if v.r.Arch == "" {
		return
	}
	a, _ := lookupArch(v.r.Arch)
	_, hasVmlinux := v.entries["vmlinux"]
	for _, t := range v.r.HostTools {
		if t.Machine == a.uname {
			continue
		}
		msg := fmt.Sprintf("built for %s, but the tree is for %s: it cannot run there", t.Machine, a.uname)
		// resolve_btfids runs only when vmlinux is in the tree (BTF for
		// modules is skipped otherwise); install-extmod-build does not
		// rebuild it when cross-compiling.
		if t.Path == "tools/bpf/resolve_btfids/resolve_btfids" && !hasVmlinux {
			v.warn(t.Path, "%s (unused: the tree has no vmlinux, so module BTF is skipped)", msg)
			continue
		}
		v.problem(t.Path, "%s", msg)
	}
}

// symlinks checks every symlink is relative and resolves inside the tree.
func (v *verifier) symlinks() {
	var links []string
	for rel, m := range v.entries {
		if m.Type() == fs.ModeSymlink {
			links = append(links, rel)
		}
	}
	sort.Strings(links)
	for _, rel := range links {
		target, err := os.Readlink(v.abs(rel))
		if err != nil {
			v.problem(rel, "%v", err)
			continue
		}
		if path.IsAbs(target) {
			v.problem(rel, "absolute symlink to %s (points outside the tree once installed)", target)
			continue
		}
		cur := path.Dir(rel)
		ok := false
		for hops := 0; hops < 40; hops++ {
			p := path.Join(cur, target)
			if p == ".." || strings.HasPrefix(p, "../") {
				break
			}
			em, exists := v.entries[p]
			if !exists {
				break
			}
			if em.Type() != fs.ModeSymlink {
				ok = true
				break
			}
			t2, err := os.Readlink(v.abs(p))
			if err != nil || path.IsAbs(t2) {
				break
			}
			cur, target = path.Dir(p), t2
		}
		if !ok {
			v.problem(rel, "symlink to %s dangles, loops or leaves the tree", target)
		}
	}
}

// makeInput reports whether make or the compiler reads the file during an
// external module build (as opposed to leftovers like .s files).
func makeInput(rel string) bool {
	base := path.Base(rel)
	switch {
	case base == ".config", base == "Makefile", strings.HasPrefix(base, "Makefile."),
		strings.HasPrefix(base, "Kbuild"), base == "Platform", base == "auto.conf",
		base == "kernel.release":
		return true
	}
	switch path.Ext(base) {
	case ".h", ".include", ".mk", ".lds", ".sh", ".conf":
		return true
	}
	return false
}

// buildPaths looks for o.BuildPaths in the make inputs.
func (v *verifier) buildPaths() {
	var bad []string
	for _, p := range v.o.BuildPaths {
		if p = strings.TrimRight(p, "/"); p != "" && p != "." {
			bad = append(bad, p)
		}
	}
	if len(bad) == 0 {
		return
	}
	var rels []string
	for rel, m := range v.entries {
		if m.IsRegular() && makeInput(rel) {
			rels = append(rels, rel)
		}
	}
	sort.Strings(rels)
	for _, rel := range rels {
		b, err := os.ReadFile(v.abs(rel))
		if err != nil {
			v.problem(rel, "%v", err)
			continue
		}
		for _, p := range bad {
			if i := bytes.Index(b, []byte(p)); i >= 0 {
				line := 1 + bytes.Count(b[:i], []byte("\n"))
				v.problem(fmt.Sprintf("%s:%d", rel, line), "refers to the build machine's %s", p)
				break
			}
		}
	}
}
