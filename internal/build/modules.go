package build

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// SourceFetcher fetches a git or url module source into dest (which does
// not exist yet) and returns its pinned description. internal/fetch
// provides the real one.
type SourceFetcher func(ctx context.Context, m modlist.Module, dest string) (manifest.Source, error)

// ModulesOptions control BuildModules.
type ModulesOptions struct {
	// Kernel is the kernel to build against.
	Kernel *Kernel
	// List is the module list; path modules resolve against List.Dir.
	List *modlist.List
	// Fetch fetches git/url modules; nil makes such modules fail.
	Fetch SourceFetcher
	// WorkDir holds the build copies (WorkDir/<name>/), never the user's
	// tree.
	WorkDir string
	// ModulesDir is lib/modules/<release> to install into (extra/<name>/).
	ModulesDir string
	// LogDir receives <name>.log per module.
	LogDir string
	// Jobs is the total number of compile jobs across all module builds
	// (0: the number of CPUs).
	Jobs int
	// Progress reports each module's build (may be nil).
	Progress *progress.Reporter
}

// ModuleResult is the outcome of one module.
type ModuleResult struct {
	manifest.Module
	// LogPath is the absolute path of the build log.
	LogPath string
	// Tail holds the last error lines of the log for failures.
	Tail []string
	// Symvers is the module build's Module.symvers (for dependents).
	Symvers string

	dir     string // build copy
	dkms    *DKMSConf
	exports map[string]bool
	idents  map[string]bool
	deps    []string
	done    chan struct{}
}

var (
	exportRE = regexp.MustCompile(`\bEXPORT_SYMBOL(?:_GPL)?(?:_NS|_NS_GPL)?\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)`)
	identRE  = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`)
)

// BuildModules builds the listed modules against o.Kernel in parallel,
// sharing one make jobserver of o.Jobs slots, in dependency order (found
// from the sources' EXPORT_SYMBOL and references, plus depends:), installs
// them and verifies every .ko. A failed module does not stop the others;
// the results say which failed. The error is only for problems that stop
// everything (a dependency cycle, I/O errors).
func BuildModules(ctx context.Context, o ModulesOptions) ([]*ModuleResult, error) {
	// make -C changes directory, so M= and every path handed to it must be
	// absolute.
	for _, p := range []*string{&o.WorkDir, &o.ModulesDir, &o.LogDir} {
		a, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("modules: %w", err)
		}
		*p = a
	}
	if err := os.MkdirAll(o.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.NumCPU()
	}
	js, err := NewJobserver(o.Jobs)
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	defer js.Close()
	tc, err := ToolchainFor(o.Kernel.Meta.Arch, "")
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	kcfg, err := ReadConfig(o.Kernel.Config())
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}

	results := make([]*ModuleResult, len(o.List.Modules))
	byName := map[string]*ModuleResult{}
	for i := range o.List.Modules {
		m := &o.List.Modules[i]
		r := &ModuleResult{Module: manifest.Module{Name: m.Name, Status: manifest.StatusOK,
			Log: "logs/" + m.Name + ".log"}, LogPath: filepath.Join(o.LogDir, m.Name+".log"),
			dir: filepath.Join(o.WorkDir, m.Name), done: make(chan struct{})}
		results[i], byName[m.Name] = r, r
	}

	// 1. Sources: copy or fetch, in parallel (no compile jobs involved).
	var g errgroup.Group
	g.SetLimit(4)
	for i := range o.List.Modules {
		m, r := &o.List.Modules[i], results[i]
		g.Go(func() error {
			if err := prepareSource(ctx, o, m, r); err != nil {
				r.fail(err.Error())
			}
			return nil
		})
	}
	g.Wait()

	// 2. Dependencies: explicit depends: plus symbols a module's sources
	// reference that another listed module exports.
	providers := map[string][]string{}
	for _, r := range results {
		for s := range r.exports {
			providers[s] = append(providers[s], r.Name)
		}
	}
	for i, r := range results {
		deps := map[string]bool{}
		for _, d := range o.List.Modules[i].Depends {
			deps[d] = true
		}
		for s := range r.idents {
			if r.exports[s] {
				continue
			}
			for _, p := range providers[s] {
				if p != r.Name {
					deps[p] = true
				}
			}
		}
		r.deps = sortedKeys(deps)
		r.DependsOn = r.deps
	}
	if cyc := findCycle(results, byName); cyc != nil {
		return nil, fmt.Errorf("modules: dependency cycle: %s", strings.Join(cyc, " -> "))
	}

	// 3. Builds, each after its dependencies.
	vars := modlist.TemplateVars{KernelRelease: o.Kernel.Meta.Release, Arch: o.Kernel.Meta.Arch, KernelDir: o.Kernel.DevelDir()}
	// One goroutine per module (they mostly wait: for dependencies, then for
	// a jobserver token); failures are recorded per module, never returned,
	// so one failed module does not cancel the others.
	var builds errgroup.Group
	for i := range o.List.Modules {
		m, r := &o.List.Modules[i], results[i]
		builds.Go(func() error {
			defer close(r.done)
			var extra []string
			for _, d := range r.deps {
				dr := byName[d]
				select {
				case <-dr.done:
				case <-ctx.Done():
					r.fail(ctx.Err().Error())
					return nil
				}
				if dr.Status != manifest.StatusOK {
					if r.Status == manifest.StatusOK {
						r.fail(fmt.Sprintf("dependency %s %s", d, dr.Status))
					}
					return nil
				}
				extra = append(extra, dependencySymvers(dr, byName)...)
			}
			if r.Status != manifest.StatusOK {
				return nil
			}
			done := o.Progress.Step("module %s: build", m.Name)
			start := time.Now()
			err := buildOne(ctx, o, js, tc, kcfg, m, r, vars, dedup(extra))
			r.Seconds = time.Since(start).Seconds()
			done()
			if err != nil {
				r.fail(err.Error())
			}
			return nil
		})
	}
	builds.Wait()

	// 4. Verify every installed .ko against the kernel and each other.
	if err := verify(o, results); err != nil {
		return nil, err
	}
	for _, r := range results {
		if r.Status == manifest.StatusFailed {
			r.Tail = errorTail(r.LogPath, 12)
			for _, f := range r.Files {
				os.Remove(filepath.Join(o.ModulesDir, filepath.FromSlash(f)))
			}
		}
	}
	return results, nil
}

func (r *ModuleResult) fail(msg string) {
	r.Status = manifest.StatusFailed
	if r.Error == "" {
		r.Error = msg
	} else {
		r.Error += "; " + msg
	}
	if f, err := os.OpenFile(r.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
		fmt.Fprintf(f, "==> FAILED: %s\n", msg)
		f.Close()
	}
}

// dependencySymvers returns the Module.symvers of d and, transitively, of
// its own dependencies.
func dependencySymvers(d *ModuleResult, byName map[string]*ModuleResult) []string {
	out := []string{d.Symvers}
	for _, x := range d.deps {
		out = append(out, dependencySymvers(byName[x], byName)...)
	}
	return out
}

func dedup(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if x != "" && !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// findCycle returns a dependency cycle as a list of names, or nil.
func findCycle(results []*ModuleResult, byName map[string]*ModuleResult) []string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(n string) []string
	visit = func(n string) []string {
		color[n] = grey
		stack = append(stack, n)
		for _, d := range byName[n].deps {
			switch color[d] {
			case grey:
				for i, s := range stack {
					if s == d {
						return append(append([]string{}, stack[i:]...), d)
					}
				}
			case white:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return nil
	}
	for _, r := range results {
		if color[r.Name] == white {
			if c := visit(r.Name); c != nil {
				return c
			}
		}
	}
	return nil
}

// prepareSource puts the module's source into r.dir, reads its dkms.conf
// if any, checks there is something to build and scans the symbols.
func prepareSource(ctx context.Context, o ModulesOptions, m *modlist.Module, r *ModuleResult) error {
	os.RemoveAll(r.dir)
	switch m.Kind() {
	case modlist.KindPath:
		srcDir := o.List.SourceDir(m)
		st, err := os.Stat(srcDir)
		if err != nil {
			return fmt.Errorf("%s: modules[%s].path: %w", o.List.File, m.Name, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("%s: modules[%s].path: %s is not a directory", o.List.File, m.Name, srcDir)
		}
		if err := CopyTree(srcDir, r.dir); err != nil {
			return fmt.Errorf("copying %s: %w", srcDir, err)
		}
		r.Source = manifest.Source{Kind: "path", Path: m.Path}
		if d, err := digest.Tree(ctx, r.dir); err == nil {
			r.Source.SHA256 = d
		}
	default:
		if o.Fetch == nil {
			return fmt.Errorf("%s: modules[%s]: %s sources need a fetcher, which this command does not have; use a path module", o.List.File, m.Name, m.Kind())
		}
		src, err := o.Fetch(ctx, *m, r.dir)
		if err != nil {
			return fmt.Errorf("fetching %s: %w", m.Name, err)
		}
		r.Source = src
	}
	_, errMk := os.Stat(filepath.Join(r.dir, "Makefile"))
	_, errKb := os.Stat(filepath.Join(r.dir, "Kbuild"))
	_, errDk := os.Stat(filepath.Join(r.dir, "dkms.conf"))
	if errMk != nil && errKb != nil && errDk != nil {
		return fmt.Errorf("%s: module %s: no Makefile, Kbuild or dkms.conf in %s; nothing to build", o.List.File, m.Name, sourceDesc(o, m))
	}
	r.exports, r.idents = map[string]bool{}, map[string]bool{}
	return filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() || !(strings.HasSuffix(p, ".c") || strings.HasSuffix(p, ".h")) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, x := range exportRE.FindAllSubmatch(b, -1) {
			r.exports[string(x[1])] = true
		}
		for _, x := range identRE.FindAll(b, -1) {
			r.idents[string(x)] = true
		}
		return nil
	})
}

func sourceDesc(o ModulesOptions, m *modlist.Module) string {
	if m.Kind() == modlist.KindPath {
		return o.List.SourceDir(m)
	}
	return m.Git + m.URL
}

// buildOne builds and installs one module.
func buildOne(ctx context.Context, o ModulesOptions, js *Jobserver, tc Toolchain, kcfg Config, m *modlist.Module, r *ModuleResult, vars modlist.TemplateVars, extraSymbols []string) error {
	logf, err := os.OpenFile(r.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	devel := o.Kernel.DevelDir()
	dv := DKMSVars{KernelVer: o.Kernel.Meta.Release, KernelSourceDir: devel, Arch: tc.UnameArch,
		DKMSTree: o.WorkDir, SourceTree: o.WorkDir, BuildDir: r.dir}
	args, err := m.MakeArgs(vars)
	if err != nil {
		return err
	}
	env := moduleEnv(tc, extraSymbols)
	fmt.Fprintf(logf, "==> module %s against %s (%s)\n", m.Name, o.Kernel.Meta.Release, devel)
	if len(extraSymbols) > 0 {
		fmt.Fprintf(logf, "==> KBUILD_EXTRA_SYMBOLS=%s (depends on %s)\n", strings.Join(extraSymbols, " "), strings.Join(r.deps, ", "))
	}

	var cmd *exec.Cmd
	if _, err := os.Stat(filepath.Join(r.dir, "dkms.conf")); err == nil {
		c, err := ReadDKMSConf(ctx, r.dir, dv)
		if err != nil {
			return err
		}
		r.dkms = c
		r.Version = c.PackageVersion
		why, err := c.Excluded(dv, kcfg)
		if err != nil {
			return err
		}
		if why != "" {
			fmt.Fprintf(logf, "==> skipped: %s\n", why)
			r.Status, r.Error = manifest.StatusSkipped, why
			return nil
		}
		if _, err := c.ApplyPatches(ctx, r.dir, dv, logf); err != nil {
			return err
		}
		if c.Make != "" {
			line := c.Make
			if len(args) > 0 {
				line += " " + shellQuote(args)
			}
			if len(tc.MakeVars) > 0 {
				line += " " + shellQuote(tc.MakeVars)
			}
			fmt.Fprintf(logf, "==> (dkms MAKE[0]) %s\n", line)
			cmd = exec.Command("bash", "--noprofile", "--norc", "-c", line)
			cmd.Env = append(env, dv.env()...)
		}
	}
	if cmd == nil {
		a := append([]string{"-C", devel, "M=" + r.dir}, tc.MakeVars...)
		a = append(a, args...)
		a = append(a, "modules")
		fmt.Fprintf(logf, "==> make %s\n", strings.Join(a, " "))
		cmd = exec.Command("make", a...)
		cmd.Env = env
	}
	cmd.Dir = r.dir
	// Makefiles use $(PWD) for M=; it must be the build copy.
	cmd.Env = append(cmd.Env, "PWD="+r.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := js.Run(ctx, cmd); err != nil {
		return fmt.Errorf("build failed: %w", err)
	}

	// Collect and install.
	var kos, dests []string
	if r.dkms != nil && len(r.dkms.BuiltModuleName) > 0 {
		kos, dests = r.dkms.Modules()
	} else {
		filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".ko") {
				rel, _ := filepath.Rel(r.dir, p)
				kos = append(kos, filepath.ToSlash(rel))
				dests = append(dests, "extra")
			}
			return nil
		})
	}
	if len(kos) == 0 {
		return errors.New("the build produced no .ko file")
	}
	seen := map[string]bool{}
	for i, k := range kos {
		from := filepath.Join(r.dir, filepath.FromSlash(k))
		if _, err := os.Stat(from); err != nil {
			return fmt.Errorf("expected module %s was not built", k)
		}
		base := filepath.Base(k)
		if seen[base] {
			return fmt.Errorf("two built modules are named %s", base)
		}
		seen[base] = true
		rel := dests[i] + "/" + m.Name + "/" + base
		to := filepath.Join(o.ModulesDir, filepath.FromSlash(rel))
		if err := atomicfile.CopyFile(from, to, 0); err != nil {
			return err
		}
		strip := exec.CommandContext(ctx, tc.CrossCompile+"strip", "--strip-debug", to)
		strip.Stdout, strip.Stderr = logf, logf
		if err := strip.Run(); err != nil {
			return fmt.Errorf("strip %s: %w", rel, err)
		}
		r.Files = append(r.Files, rel)
	}
	sort.Strings(r.Files)
	for _, p := range []string{filepath.Join(r.dir, "Module.symvers")} {
		if _, err := os.Stat(p); err == nil {
			r.Symvers = p
		}
	}
	if r.Symvers == "" {
		filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && r.Symvers == "" && d.Name() == "Module.symvers" {
				r.Symvers = p
			}
			return nil
		})
	}
	fmt.Fprintf(logf, "==> installed %s\n", strings.Join(r.Files, " "))
	return nil
}

// moduleEnv is the environment of module builds.
func moduleEnv(tc Toolchain, extraSymbols []string) []string {
	// No CI secrets: module Makefiles and DKMS scripts are third-party code
	// and their logs are published.
	env := safeenv.Environ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARCH", "CROSS_COMPILE", "KBUILD_EXTRA_SYMBOLS",
		"KERNELRELEASE", "KBUILD_EXTMOD", "KBUILD_OUTPUT", "O", "M", "LANG", "LC_ALL",
		"kernelver", "kernel_source_dir", "arch", "PWD", "OLDPWD")
	env = append(env, "LC_ALL=C")
	for _, v := range tc.MakeVars {
		env = append(env, v)
	}
	if len(extraSymbols) > 0 {
		env = append(env, "KBUILD_EXTRA_SYMBOLS="+strings.Join(extraSymbols, " "))
	}
	return env
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// verify checks every installed module: vermagic equals the kernel's and
// every needed symbol resolves, with matching CRCs, against Module.symvers,
// the stock modules or another built module. Modules with problems are
// marked failed; their dependents then fail too (repeated until stable).
func verify(o ModulesOptions, results []*ModuleResult) error {
	stock, err := modtree.LoadDir(o.Kernel.ModulesDir(), o.Kernel.Meta.Release)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	symvers, err := modtree.ReadSymvers(o.Kernel.Symvers())
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	built := map[string]*modtree.Entry{}
	owner := map[string]*ModuleResult{}
	for _, r := range results {
		if r.Status != manifest.StatusOK {
			continue
		}
		for _, f := range r.Files {
			m, err := kmodule.ReadFile(filepath.Join(o.ModulesDir, filepath.FromSlash(f)))
			if err != nil {
				r.fail(fmt.Sprintf("verify: %v", err))
				continue
			}
			built[f] = &modtree.Entry{Path: f, Module: m, Origin: r.Name}
			owner[f] = r
		}
		if len(r.Files) > 0 {
			if m := built[r.Files[0]]; m != nil {
				r.SrcVersion = m.Info("srcversion")
			}
		}
	}
	for {
		t := &modtree.Tree{Release: o.Kernel.Meta.Release, Modules: append([]*modtree.Entry{}, stock.Modules...), Symvers: symvers}
		only := map[string]bool{}
		for f, e := range built {
			if owner[f].Status == manifest.StatusOK {
				t.Modules = append(t.Modules, e)
				only[f] = true
			}
		}
		sort.Slice(t.Modules, func(i, j int) bool { return t.Modules[i].Path < t.Modules[j].Path })
		probs := t.Validate(modtree.ValidateOptions{Vermagic: o.Kernel.Meta.Vermagic, Only: only})
		if len(probs) == 0 {
			return nil
		}
		for _, p := range probs {
			r := owner[p.Module]
			msg := "verify: " + p.String()
			if r.Status == manifest.StatusOK {
				r.Status = manifest.StatusFailed
			}
			r.fail(msg)
		}
	}
}

var errLineRE = regexp.MustCompile(`(?i)(error|undefined|\*\*\*|fatal|failed|warning: .*(undefined|disagrees))`)

// errorTail returns up to n lines of a log that explain a failure: the
// last lines matching error patterns, or else its last lines.
func errorTail(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var all, errs []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		all = append(all, sc.Text())
		if errLineRE.MatchString(sc.Text()) {
			errs = append(errs, sc.Text())
		}
	}
	pick := errs
	if len(pick) == 0 {
		pick = all
	}
	if len(pick) > n {
		pick = pick[len(pick)-n:]
	}
	return pick
}

// AppendModulesOrder appends the given module paths (relative to
// lib/modules/<release>) to dir/modules.order, sorted, writing a new file.
func AppendModulesOrder(dir string, files []string) error {
	p := filepath.Join(dir, "modules.order")
	old, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	s := append([]string{}, files...)
	sort.Strings(s)
	var b strings.Builder
	b.Write(old)
	if len(old) > 0 && old[len(old)-1] != '\n' {
		b.WriteByte('\n')
	}
	for _, f := range s {
		b.WriteString(f + "\n")
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
