// Package modbuild builds the out-of-tree modules of wsl-modules.yml
// against a kernel (a kbuild cache entry), in parallel with one shared make
// jobserver, and verifies every module (vermagic, symbols and CRCs) before
// it goes into the staging tree. Run is the whole local build: the kernel
// through kbuild, then the modules.
//
// Output layout (Run's Out directory, see docs/ARCHITECTURE.md):
//
//	bzImage | Image   Module.symvers  System.map  config
//	staging/lib/modules/<release>/{kernel,extra/<name>,modules.order,
//	                               modules.dep,... (depmod's indexes)}
//	kernel-devel/  headers/  logs/kernel.log  logs/<module>.log
//	build-manifest.json
package modbuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Options control Run.
type Options struct {
	// KernelSource is a kernel source directory or tarball.
	KernelSource string
	// SourceInfo optionally describes the source (tag, commit, sha256).
	SourceInfo *manifest.Source
	// ConfigFile overrides the tree's kernel config.
	ConfigFile string
	// List is the module list (see modlist.Load).
	List *modlist.List
	// Out is the output directory; it is written atomically.
	Out string
	// Force replaces an existing Out.
	Force bool
	// CacheDir holds the kernel cache (kernel/<key>/).
	CacheDir string
	// Jobs is the total number of parallel jobs (default: all cores).
	Jobs int
	// KeepGoing produces the output without failed modules instead of
	// failing.
	KeepGoing bool
	// Fetch fetches git/url module sources (nil: only path modules).
	Fetch SourceFetcher
	// Timestamp sets KBUILD_BUILD_TIMESTAMP (zero: from the source).
	Timestamp time.Time
	// Tool is the manifest's tool string.
	Tool string
	// Progress reports steps (may be nil).
	Progress *progress.Reporter
}

// Result is the outcome of Run.
type Result struct {
	Manifest *manifest.Manifest
	Kernel   *kbuild.Kernel
	Modules  []*ModuleResult
	// Failed lists the failed modules.
	Failed []*ModuleResult
	// FailedLogs is where the logs went when the run failed (Out is then
	// not created).
	FailedLogs string
}

// ErrModulesFailed is wrapped by Run's error when modules failed and
// KeepGoing was not set.
var ErrModulesFailed = errors.New("modules failed")

// Run builds (or takes from the cache) the kernel, builds the listed
// modules against it and writes the output directory.
func Run(ctx context.Context, o Options) (*Result, error) {
	frag, err := o.check()
	if err != nil {
		return nil, err
	}
	out, err := atomicfile.CreateDir(o.Out, o.Force)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	defer out.Abort()
	logDir := filepath.Join(out.Tmp, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	res := &Result{}
	failLogs := func() {
		dst := o.Out + ".failed-logs"
		os.RemoveAll(dst)
		if os.Rename(logDir, dst) == nil {
			res.FailedLogs = dst
		}
	}
	k, err := kbuild.BuildKernel(ctx, kbuild.KernelOptions{Source: o.KernelSource, SourceInfo: o.SourceInfo,
		ConfigFile: o.ConfigFile, Fragment: frag, Arch: o.List.Kernel.Arch, CacheDir: o.CacheDir,
		Jobs: o.Jobs, Timestamp: o.Timestamp, Progress: o.Progress})
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	res.Kernel = k
	// The built modules' entries read their files from work until
	// Assemble has copied them.
	work, err := os.MkdirTemp(filepath.Dir(o.Out), ".build-work-")
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	defer os.RemoveAll(work)
	if err := o.buildListed(ctx, res, work, logDir); err != nil {
		failLogs()
		return res, err
	}
	added := res.collect(o.Tool)
	if len(res.Failed) > 0 && !o.KeepGoing {
		failLogs()
		return res, fmt.Errorf("build: %w:\n%s", ErrModulesFailed, FailureReport(res.Failed, res.FailedLogs))
	}
	done := o.Progress.Step("assembling %s (kernel %s, %d added modules)", o.Out, k.Meta.Release, len(added))
	_, err = Assemble(ctx, out.Tmp, AssembleOptions{Kernel: k, Added: added, Devel: true, UAPI: true, Progress: o.Progress})
	done()
	if err != nil {
		return res, fmt.Errorf("build: %w", err)
	}
	if err := res.Manifest.Write(filepath.Join(out.Tmp, manifest.FileName)); err != nil {
		return res, fmt.Errorf("build: %w", err)
	}
	if err := out.Commit(); err != nil {
		return res, fmt.Errorf("build: %w", err)
	}
	if len(res.Failed) > 0 {
		o.Progress.Printf("%s", loudWarning(res.Failed, filepath.Join(o.Out, "logs")))
	}
	return res, nil
}

// check fills in the defaults, refuses an existing output without Force
// and parses the list's config fragment.
func (o *Options) check() (*kconfig.Fragment, error) {
	if o.List == nil {
		return nil, errors.New("build: no module list")
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.NumCPU()
	}
	if o.Tool == "" {
		o.Tool = "wsl-modules-action dev"
	}
	if !o.Force {
		if _, err := os.Lstat(o.Out); err == nil {
			return nil, fmt.Errorf("build: --out %s: %w", o.Out, atomicfile.ErrExists)
		}
	}
	if o.List.Kernel.ConfigFragment == "" {
		return nil, nil
	}
	frag, err := kconfig.ParseFragment(o.List.File, o.List.Kernel.FragmentLine, o.List.Kernel.ConfigFragment)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	return frag, nil
}

// buildListed builds the list's modules against res.Kernel into
// res.Modules, in work, with logs in logDir.
func (o *Options) buildListed(ctx context.Context, res *Result, work, logDir string) error {
	if len(o.List.Modules) == 0 {
		return nil
	}
	var err error
	done := o.Progress.Step("building %d modules (%d jobs, shared jobserver)", len(o.List.Modules), o.Jobs)
	res.Modules, err = BuildModules(ctx, ModulesOptions{Kernel: res.Kernel, List: o.List, Fetch: o.Fetch,
		WorkDir: work, ModulesDir: filepath.Join(work, ".modules"), LogDir: logDir, Jobs: o.Jobs, Progress: o.Progress})
	done()
	if err == nil {
		// A cancelled build reports its modules as failed; its output
		// must not be committed as a (keep-going) result.
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	return nil
}

// collect makes res.Manifest from the module results and res.Failed, and
// returns the entries of the modules that built.
func (res *Result) collect(tool string) []*modtree.Entry {
	m := &manifest.Manifest{Schema: manifest.SchemaVersion, Tool: tool, Kernel: res.Kernel.ManifestKernel(), Modules: []manifest.Module{}}
	var added []*modtree.Entry
	for _, r := range res.Modules {
		if r.Status == manifest.StatusFailed {
			res.Failed = append(res.Failed, r)
			r.Files = nil
		}
		if r.Status == manifest.StatusOK {
			added = append(added, r.Entries...)
		}
		m.Modules = append(m.Modules, r.Module)
	}
	res.Manifest = m
	return added
}

// FailureReport describes failed modules with the last error lines of
// their logs.
func FailureReport(failed []*ModuleResult, logDir string) string {
	var b strings.Builder
	for _, r := range failed {
		log := r.LogPath
		if logDir != "" {
			log = filepath.Join(logDir, r.Name+".log")
		}
		fmt.Fprintf(&b, "  module %s FAILED: %s\n    log: %s\n", r.Name, r.Error, log)
		for _, l := range r.Tail {
			fmt.Fprintf(&b, "    | %s\n", l)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

func loudWarning(failed []*ModuleResult, logDir string) string {
	names := make([]string, len(failed))
	for i, r := range failed {
		names[i] = r.Name
	}
	bar := strings.Repeat("!", 72)
	return fmt.Sprintf("%s\n!!! WARNING: --keep-going: %d module(s) FAILED and are NOT in the output: %s\n%s\n%s",
		bar, len(failed), strings.Join(names, ", "), FailureReport(failed, logDir), bar)
}
