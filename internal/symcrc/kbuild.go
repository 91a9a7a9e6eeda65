package symcrc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// How the CRCs are computed: one make, in a private copy of the object
// tree, reads the kernel's top Makefile (for the exported KBUILD_CFLAGS,
// CPP, NM, ...) and topMakefile, whose goal runs, for each directory,
// kbuild's own scripts/Makefile.build (for that directory's
// Kbuild/Makefile: ccflags-y, CFLAGS_foo.o, CFLAGS_REMOVE_foo.o,
// obj-y/obj-m) with dirMakefile read after it. dirMakefile's rule for
// <dir>/<stem>.symcrc runs kbuild's own cmd_gensymtypes_c for <stem>.c
// (c_flags as for <stem>.o, since kbuild's per-object variables key on the
// target's stem), or for <stem>.S the asm-prototypes.h route, with its
// outputs in a private directory.

// dirMakefile is read by make after scripts/Makefile.build. The recipes
// run under bash with pipefail so that a preprocessor failure is not
// hidden by genksyms reading a truncated input.
const dirMakefile = `# symcrc: the CRCs of one file's exports, as scripts/Makefile.build
# computes them (cmd_gensymtypes_c, or the asm-prototypes.h route for .S).
.DEFAULT_GOAL := symcrc-nothing
symcrc-nothing: ; @:

symcrc-out = $(SYMCRC_OUT)/$@
symcrc-kind = $(if $(part-of-builtin),vmlinux,$(if $(part-of-module),module,none))

$(SYMCRC_C) $(SYMCRC_S): SHELL := $(SYMCRC_BASH)
$(SYMCRC_C) $(SYMCRC_S): .SHELLFLAGS := -o pipefail -c
$(SYMCRC_C) $(SYMCRC_S): depfile = $(SYMCRC_OUT)/$@.d

$(SYMCRC_C): $(obj)/%.symcrc: $(obj)/%.c FORCE
	$(file >$(symcrc-out).kind,$(symcrc-kind))
	$(file >$(symcrc-out).cmd,$(call cmd_gensymtypes_c,,$(basename $@).symtypes))
	@{ $(call cmd_gensymtypes_c,,$(basename $@).symtypes) ; } >$(symcrc-out).sv 2>$(symcrc-out).err; echo $$? >$(symcrc-out).rc

ifdef CONFIG_ASM_MODVERSIONS
symcrc-asm-cmd = $(CPP) -D__GENKSYMS__ $(c_flags) -xc - | $(call genksyms,,$(basename $@).symtypes)
else
symcrc-asm-cmd = cat >/dev/null
endif

$(SYMCRC_S): $(obj)/%.symcrc: $(obj)/%.S FORCE
	$(file >$(symcrc-out).kind,$(symcrc-kind))
	$(file >$(symcrc-out).cmd,$(CC) $(a_flags) -c -o $(symcrc-out).o $< && $(NM) $(symcrc-out).o | <exports> | $(symcrc-asm-cmd))
	@{ $(CC) $(a_flags) -c -o $(symcrc-out).o $< && $(NM) $(symcrc-out).o >$(symcrc-out).nm && { echo '#include <linux/kernel.h>'; echo '#include <asm/asm-prototypes.h>'; sed -n 's/^.* __export_symbol_\([^ ]*\)$$/EXPORT_SYMBOL(\1);/p' $(symcrc-out).nm; } | $(symcrc-asm-cmd) ; } >$(symcrc-out).sv 2>$(symcrc-out).err; echo $$? >$(symcrc-out).rc
`

// job is one source file to process.
type job struct {
	rel    string // the .c or .S file, relative to the tree
	dir    string // its directory: kbuild's $(obj)
	target string // <dir>/<stem>.symcrc
	asm    bool
}

// safePath matches the paths make can take unquoted.
var safePath = regexp.MustCompile(`^[A-Za-z0-9_./+,-]+$`)

// planJobs turns files into jobs grouped by directory. A .S file whose
// stem also has a .c file is dropped: kbuild builds <stem>.o from the .c
// (its %.c rule comes first). Files in the tree's top directory or with
// paths make cannot take are returned as bad.
func planJobs(files []string) (byDir map[string][]job, bad []string) {
	byDir = map[string][]job{}
	seen := map[string]bool{}
	sorted := append([]string(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { // .c before .S of the same stem
		si, sj := strings.TrimSuffix(sorted[i], path.Ext(sorted[i])), strings.TrimSuffix(sorted[j], path.Ext(sorted[j]))
		return si < sj || si == sj && path.Ext(sorted[i]) == ".c" && path.Ext(sorted[j]) != ".c"
	})
	for _, f := range sorted {
		dir := path.Dir(f)
		if dir == "." || !safePath.MatchString(f) {
			bad = append(bad, f)
			continue
		}
		stem := strings.TrimSuffix(f, path.Ext(f))
		if seen[stem] {
			continue
		}
		seen[stem] = true
		byDir[dir] = append(byDir[dir], job{rel: f, dir: dir, target: stem + ".symcrc", asm: path.Ext(f) == ".S"})
	}
	return byDir, bad
}

// dirGoals are the goals of one directory's Makefile.build run: files
// to compute the CRCs of (.c and .S), and other targets to make first.
type dirGoals struct {
	c, s, extra []string
}

// goalsOf groups jobs into per-directory goals.
func goalsOf(byDir map[string][]job) map[string]*dirGoals {
	out := map[string]*dirGoals{}
	for d, jobs := range byDir {
		g := &dirGoals{}
		for _, j := range jobs {
			if j.asm {
				g.s = append(g.s, j.target)
			} else {
				g.c = append(g.c, j.target)
			}
		}
		out[d] = g
	}
	return out
}

// topMakefile returns the makefile read after the kernel's top Makefile:
// goal symcrc-run runs Makefile.build once per directory. A directory
// whose Makefile.build fails leaves .symcrc-dir.rc in its output
// directory; the others go on.
func topMakefile(dirs map[string]*dirGoals, out, dirMk, bash string) string {
	names := make([]string, 0, len(dirs))
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# symcrc: generated, read after the kernel's top Makefile.\n")
	var targets strings.Builder
	for i := range names {
		fmt.Fprintf(&targets, " symcrc-dir-%d", i)
	}
	fmt.Fprintf(&b, ".PHONY: symcrc-run%s\nsymcrc-run:%s\n", targets.String(), targets.String())
	for i, d := range names {
		g := dirs[d]
		goals := strings.Join(append(append(append([]string(nil), g.extra...), g.c...), g.s...), " ")
		fmt.Fprintf(&b, "symcrc-dir-%d:\n\t+@$(MAKE) $(build)=%s -f %s need-builtin=1 need-modorder=1 "+
			"SYMCRC_OUT=%s SYMCRC_BASH=%s SYMCRC_C='%s' SYMCRC_S='%s' %s 2>%s/%s/.symcrc-dir.err || echo $$? >%s/%s/.symcrc-dir.rc\n",
			i, d, dirMk, out, bash, strings.Join(g.c, " "), strings.Join(g.s, " "), goals, out, d, out, d)
	}
	return b.String()
}

// kbuildRun is one proof's kbuild work area: a private copy of the object
// tree (kbuild runs there, so that nothing it does can reach the prepared
// tree) and the makefiles.
type kbuildRun struct {
	o           *Options
	tmp, shadow string
	dirMk       string
	passes      int
	cpu         time.Duration // user+system time of the makes and their children
}

// runKbuild processes the files in a copy of the prepared tree and
// returns their results by file. Files that fail for want of a header the
// full build generates first (lib/crc32table.h) are retried after kbuild
// made those headers in the copy.
func runKbuild(ctx context.Context, o *Options, files []string) (map[string]*fileResult, time.Duration, error) {
	byDir, bad := planJobs(files)
	results := map[string]*fileResult{}
	for _, f := range bad {
		results[f] = &fileResult{rel: f, err: fmt.Errorf("path %q cannot be built by this proof", f)}
	}
	if len(byDir) == 0 {
		return results, 0, nil
	}
	tmp, err := os.MkdirTemp("", "symcrc-")
	if err != nil {
		return nil, 0, fmt.Errorf("symcrc: %w", err)
	}
	defer os.RemoveAll(tmp)
	if !safePath.MatchString(tmp) {
		return nil, 0, fmt.Errorf("symcrc: temporary directory %q has characters make cannot take", tmp)
	}
	k := &kbuildRun{o: o, tmp: tmp, shadow: filepath.Join(tmp, "obj"), dirMk: filepath.Join(tmp, "dir.mk")}
	// Modes and modification times kept: make must find the copy exactly
	// as up to date as the original.
	if err := atomicfile.CopyTree(ctx, o.Obj, k.shadow, atomicfile.CopyOptions{Times: true, Irregular: atomicfile.IrregularSkip}); err != nil {
		return nil, 0, fmt.Errorf("symcrc: copying the object tree: %w", err)
	}
	if err := os.WriteFile(k.dirMk, []byte(dirMakefile), 0o644); err != nil {
		return nil, 0, fmt.Errorf("symcrc: %w", err)
	}
	first, err := k.pass(ctx, goalsOf(byDir), byDir)
	if err != nil {
		return nil, 0, err
	}
	for f, r := range first {
		results[f] = r
	}
	retry, headers := missingHeaders(o.Src, byDir, first)
	if len(retry) == 0 {
		return results, k.cpu, nil
	}
	gen, names := map[string]*dirGoals{}, []string(nil)
	for d, hs := range headers {
		gen[d] = &dirGoals{extra: hs}
		names = append(names, hs...)
	}
	sort.Strings(names)
	o.logf("symcrc: making, in the copy, the headers the full build generates before compiling: %s", strings.Join(names, " "))
	if _, err := k.pass(ctx, gen, nil); err != nil {
		return nil, 0, err
	}
	second, err := k.pass(ctx, goalsOf(retry), retry)
	if err != nil {
		return nil, 0, err
	}
	for f, r := range second {
		results[f] = r
	}
	return results, k.cpu, nil
}

// pass runs one make over the directories' goals and reads the results
// of jobs.
func (k *kbuildRun) pass(ctx context.Context, dirs map[string]*dirGoals, jobs map[string][]job) (map[string]*fileResult, error) {
	k.passes++
	out := filepath.Join(k.tmp, fmt.Sprintf("out%d", k.passes))
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(out, filepath.FromSlash(d)), 0o755); err != nil {
			return nil, fmt.Errorf("symcrc: %w", err)
		}
	}
	topMk := filepath.Join(k.tmp, fmt.Sprintf("top%d.mk", k.passes))
	if err := os.WriteFile(topMk, []byte(topMakefile(dirs, out, k.dirMk, k.o.bash)), 0o644); err != nil {
		return nil, fmt.Errorf("symcrc: %w", err)
	}
	cpu, err := k.o.runMake(ctx, k.shadow, topMk)
	k.cpu += cpu
	if err != nil {
		return nil, err
	}
	results := map[string]*fileResult{}
	for d, js := range jobs {
		dirErr := readDirError(filepath.Join(out, filepath.FromSlash(d)))
		for _, j := range js {
			results[j.rel] = readResult(out, j, dirErr)
		}
	}
	return results, nil
}

// missingRE matches the preprocessor's error for a missing include: the
// including file (or <command-line> for -include) and the name.
var missingRE = regexp.MustCompile(`(?m)^(\S+?):(?:\d+:\d+:)? fatal error: ([A-Za-z0-9_./+-]+): No such file or directory$`)

// missingHeaders returns the failed jobs that include a header which does
// not exist because the full build generates it (a quoted include of the
// including file's directory, or an -include of CFLAGS_foo.o such as
// init/utsversion-tmp.h), and those headers as kbuild targets by
// directory.
func missingHeaders(src string, byDir map[string][]job, results map[string]*fileResult) (map[string][]job, map[string][]string) {
	retry, headers := map[string][]job{}, map[string][]string{}
	for d, js := range byDir {
		for _, j := range js {
			r := results[j.rel]
			if r == nil || r.err == nil {
				continue
			}
			target, ok := missingTarget(src, r.stderr)
			if !ok {
				continue
			}
			retry[d] = append(retry[d], j)
			hd := path.Dir(target)
			if !contains(headers[hd], target) {
				headers[hd] = append(headers[hd], target)
			}
		}
	}
	return retry, headers
}

// missingTarget returns the kbuild target (relative to the object tree)
// of the missing header in a preprocessor's error output.
func missingTarget(src, stderr string) (string, bool) {
	m := missingRE.FindStringSubmatch(stderr)
	if m == nil {
		return "", false
	}
	target := m[2]
	if strings.Contains(stderr, "#include <"+m[2]+">") {
		return "", false // found through the include path, not generated beside its includer
	}
	if m[1] != "<command-line>" {
		rel, err := filepath.Rel(src, m[1])
		if err != nil || strings.HasPrefix(rel, "..") {
			return "", false
		}
		target = path.Join(path.Dir(filepath.ToSlash(rel)), m[2])
	}
	ok := path.Dir(target) != "." && !strings.HasPrefix(target, "../") && !strings.HasPrefix(target, "/") && safePath.MatchString(target)
	return target, ok
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// runMake runs the make over topMk in the object tree obj and returns
// the CPU time it and its children took.
func (o *Options) runMake(ctx context.Context, obj, topMk string) (time.Duration, error) {
	args := []string{"-C", obj, "-f", filepath.Join(o.Src, "Makefile"), "-f", topMk,
		"--no-print-directory", fmt.Sprintf("-j%d", o.Jobs),
		// Never remake the configuration: a module build (M=) does not,
		// so the proof must see the same auto.conf and autoconf.h.
		"-o", "include/config/auto.conf", "-o", "include/config/auto.conf.cmd"}
	args = append(append(args, o.MakeArgs...), "symcrc-run")
	cmd := exec.CommandContext(ctx, o.Make, args...)
	cmd.Env = o.environ()
	// make's children (cc1, genksyms) go too when the context ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var buf bytes.Buffer
	var w io.Writer = &buf
	if o.Log != nil {
		w = io.MultiWriter(&buf, o.Log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	var cpu time.Duration
	if ps := cmd.ProcessState; ps != nil {
		cpu = ps.UserTime() + ps.SystemTime()
	}
	if err != nil {
		return cpu, fmt.Errorf("symcrc: make in (a copy of) %s failed: %w\n%s", o.Obj, err, tail(buf.String(), 20))
	}
	return cpu, nil
}

// environ is the make environment: the process's without CI secrets and
// without variables that change a kbuild run, plus Options.Env.
func (o *Options) environ() []string {
	env := safeenv.Environ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES", "MAKEOVERRIDES", "GNUMAKEFLAGS",
		"KBUILD_OUTPUT", "KBUILD_EXTMOD", "KBUILD_SYMTYPES", "KBUILD_PRESERVE", "KBUILD_VERBOSE",
		"KCONFIG_CONFIG", "O", "M", "V", "W", "C", "LANG", "LC_ALL")
	return append(append(env, "LC_ALL=C"), o.Env...)
}

// fileResult is what processing one file gave.
type fileResult struct {
	rel  string
	kind string            // "vmlinux" (built in), "module" or "none", by its directory's Makefile
	crcs map[string]uint32 // #SYMVER lines
	// asmExports are the names an assembly file's object exports
	// (versioned or not); nil for C files.
	asmExports map[string]bool
	cmd        string
	stderr     string // of the CRC commands
	err        error
}

func readDirError(dir string) error {
	rc, err := os.ReadFile(filepath.Join(dir, ".symcrc-dir.rc"))
	if err != nil {
		return nil
	}
	msg, _ := os.ReadFile(filepath.Join(dir, ".symcrc-dir.err"))
	return fmt.Errorf("kbuild for directory failed (status %s):\n%s", strings.TrimSpace(string(rc)), tail(string(msg), 15))
}

// readResult reads the outputs the recipe of j left in out.
func readResult(out string, j job, dirErr error) *fileResult {
	r := &fileResult{rel: j.rel}
	base := filepath.Join(out, filepath.FromSlash(j.target))
	kind, kerr := os.ReadFile(base + ".kind")
	cmd, _ := os.ReadFile(base + ".cmd")
	rc, rerr := os.ReadFile(base + ".rc")
	r.kind, r.cmd = strings.TrimSpace(string(kind)), strings.TrimSpace(string(cmd))
	switch {
	case kerr != nil || rerr != nil:
		r.err = dirErr
		if r.err == nil {
			r.err = fmt.Errorf("kbuild did not process %s", j.rel)
		}
		return r
	case strings.TrimSpace(string(rc)) != "0":
		msg, _ := os.ReadFile(base + ".err")
		r.stderr = string(msg)
		r.err = fmt.Errorf("computing the CRCs of %s failed (status %s):\n%s", j.rel, strings.TrimSpace(string(rc)), tail(string(msg), 15))
		return r
	}
	sv, err := os.ReadFile(base + ".sv")
	if err == nil {
		r.crcs, err = parseSymvers(sv)
	}
	if err == nil && j.asm {
		r.asmExports, err = readNM(base + ".nm")
	}
	if err != nil {
		r.err = fmt.Errorf("%s: %w", j.rel, err)
	}
	return r
}

// parseSymvers reads genksyms output: "#SYMVER <name> 0x<crc>" lines.
func parseSymvers(b []byte) (map[string]uint32, error) {
	out := map[string]uint32{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 || f[0] != "#SYMVER" {
			return nil, fmt.Errorf("unexpected genksyms output line %q", sc.Text())
		}
		v, err := strconv.ParseUint(f[2], 0, 32)
		if err != nil {
			return nil, fmt.Errorf("bad CRC in genksyms output line %q", sc.Text())
		}
		out[f[1]] = uint32(v)
	}
	return out, sc.Err()
}

// readNM returns the exported names in nm output (__export_symbol_<name>).
func readNM(p string) (map[string]bool, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			if n, ok := strings.CutPrefix(f[len(f)-1], "__export_symbol_"); ok && n != "" {
				out[n] = true
			}
		}
	}
	return out, nil
}

// tail returns the last n lines of s, indented.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
