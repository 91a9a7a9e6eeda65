package modbuild

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/dkms"
	"github.com/wsl-modules/wsl-modules-action/internal/intree"
	"github.com/wsl-modules/wsl-modules-action/internal/jobserver"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"

	"golang.org/x/sync/errgroup"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
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
	Kernel *kbuild.Kernel
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
	// KernelSource is the kernel source directory, needed for the CRC
	// proof when Kernel is a stock-mode entry, and for InTree.
	KernelSource string
	// InTree are directories of KernelSource to build as modules after
	// the listed ones' sources (stock mode with a config fragment, see
	// internal/intree); they are verified like listed modules and
	// install under kernel/<dir>/.
	InTree []intree.Unit
	// PreviousSteps are the kbuild steps of each module's previous build,
	// by name (a shard record of an earlier run): the total its progress
	// counts toward. A module without one reports its count and rate.
	PreviousSteps map[string]int64
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
	// Entries are the installed modules, parsed by the verification
	// (status ok only).
	Entries []*modtree.Entry
	// Warnings are findings that did not fail the module (symbols the
	// stock-mode CRC proof could not place).
	Warnings []string

	dir     string // build copy
	unit    *intree.Unit
	dkms    *dkms.Conf
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
	b, err := newModulesBuild(&o)
	if err != nil {
		return nil, err
	}
	defer b.js.Close()
	// 1. Sources: copy or fetch, in parallel (no compile jobs involved).
	var g errgroup.Group
	g.SetLimit(4)
	for i, m := range b.mods {
		r := b.results[i]
		g.Go(func() error {
			if err := prepareSource(ctx, o, m, r); err != nil {
				r.fail(err.Error())
			}
			return nil
		})
	}
	g.Wait()
	// 2. Dependencies, 3. builds, 4. verification.
	if err := b.dependencies(); err != nil {
		return nil, err
	}
	b.buildAll(ctx)
	if err := verify(ctx, o, b.results); err != nil {
		return nil, err
	}
	for _, r := range b.results {
		if r.Status == manifest.StatusFailed {
			r.Tail = errorTail(r.LogPath, 12)
			for _, f := range r.Files {
				os.Remove(filepath.Join(o.ModulesDir, filepath.FromSlash(f)))
			}
		}
	}
	return b.results, nil
}

// modulesBuild is the state of one BuildModules call.
type modulesBuild struct {
	o    *ModulesOptions
	js   *jobserver.Jobserver
	tc   kbuild.Toolchain
	kcfg kconfig.Config
	// mods are the listed modules, then one per in-tree unit; results[i]
	// is mods[i]'s.
	mods    []*modlist.Module
	results []*ModuleResult
	byName  map[string]*ModuleResult
}

// newModulesBuild makes the paths absolute (make -C changes directory, so
// M= and every path handed to it must be), creates the directories, the
// jobserver and one result per listed module.
func newModulesBuild(o *ModulesOptions) (*modulesBuild, error) {
	for _, p := range []*string{&o.WorkDir, &o.ModulesDir, &o.LogDir} {
		a, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("modules: %w", err)
		}
		*p = a
	}
	for _, d := range []string{o.LogDir, o.WorkDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("modules: %w", err)
		}
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.NumCPU()
	}
	b := &modulesBuild{o: o, byName: map[string]*ModuleResult{}}
	var err error
	if b.tc, err = kbuild.ToolchainFor(o.Kernel.Meta.Arch, ""); err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	if b.kcfg, err = kconfig.ReadConfig(o.Kernel.Config()); err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	if b.js, err = jobserver.New(o.Jobs); err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	for i := range o.List.Modules {
		b.mods = append(b.mods, &o.List.Modules[i])
	}
	if err := b.addInTree(); err != nil {
		b.js.Close()
		return nil, err
	}
	b.results = make([]*ModuleResult, len(b.mods))
	for i, m := range b.mods {
		r := &ModuleResult{Module: manifest.Module{Name: m.Name, Status: manifest.StatusOK,
			Log: "logs/" + m.Name + ".log"}, LogPath: filepath.Join(o.LogDir, m.Name+".log"),
			dir: filepath.Join(o.WorkDir, m.Name), done: make(chan struct{})}
		if i >= len(o.List.Modules) {
			r.unit = &o.InTree[i-len(o.List.Modules)]
		}
		b.results[i], b.byName[m.Name] = r, r
	}
	return b, nil
}

// dependencies records each module's dependencies: explicit depends:
// plus symbols its sources reference that another listed module exports.
// A cycle is an error.
func (b *modulesBuild) dependencies() error {
	providers := map[string][]string{}
	for _, r := range b.results {
		for s := range r.exports {
			providers[s] = append(providers[s], r.Name)
		}
	}
	for i, r := range b.results {
		deps := map[string]bool{}
		for _, d := range b.mods[i].Depends {
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
		r.deps = slices.Sorted(maps.Keys(deps))
		r.DependsOn = r.deps
	}
	if cyc := findCycle(b.results, b.byName); cyc != nil {
		return fmt.Errorf("modules: dependency cycle: %s", strings.Join(cyc, " -> "))
	}
	return nil
}

// buildAll builds every module after its dependencies: one goroutine per
// module (they mostly wait: for dependencies, then for a jobserver
// token). Failures are recorded per module, never returned, so one
// failed module does not cancel the others.
func (b *modulesBuild) buildAll(ctx context.Context) {
	o := b.o
	vars := modlist.TemplateVars{KernelRelease: o.Kernel.Meta.Release, Arch: o.Kernel.Meta.Arch, KernelDir: o.Kernel.DevelDir()}
	var builds errgroup.Group
	for i, m := range b.mods {
		r := b.results[i]
		builds.Go(func() error {
			defer close(r.done)
			extra, ok := b.waitDeps(ctx, r)
			if !ok || r.Status != manifest.StatusOK {
				return nil
			}
			done := o.Progress.Step("module %s: build", m.Name)
			start := time.Now()
			err := buildOne(ctx, *o, b.js, b.tc, b.kcfg, m, r, vars, dedup(extra))
			r.Seconds = time.Since(start).Seconds()
			done()
			if err != nil {
				r.fail(err.Error() + stockUndefinedHint(*o, r))
			}
			return nil
		})
	}
	builds.Wait()
}

// waitDeps waits for r's dependencies and returns their Module.symvers
// files; ok is false when one failed or the build was cancelled (r is
// then failed).
func (b *modulesBuild) waitDeps(ctx context.Context, r *ModuleResult) (extra []string, ok bool) {
	for _, d := range r.deps {
		dr := b.byName[d]
		select {
		case <-dr.done:
		case <-ctx.Done():
			r.fail(ctx.Err().Error())
			return nil, false
		}
		if dr.Status != manifest.StatusOK {
			if r.Status == manifest.StatusOK {
				r.fail(fmt.Sprintf("dependency %s %s", d, dr.Status))
			}
			return nil, false
		}
		extra = append(extra, dependencySymvers(dr, b.byName)...)
	}
	return extra, true
}

func (r *ModuleResult) fail(msg string) {
	r.Status = manifest.StatusFailed
	if r.Error == "" {
		r.Error = msg
	} else {
		r.Error += "; " + msg
	}
	appendLog(r.LogPath, "==> FAILED: "+msg)
}

// appendLog adds a line to a log file.
func appendLog(path, line string) {
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
		fmt.Fprintln(f, line)
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

// moduleEnv is the environment of module builds.
func moduleEnv(tc kbuild.Toolchain, extraSymbols []string) []string {
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
