// Package pipeline runs wsl-modules-action end to end: select the kernel
// tags to build, fetch the kernel source, build the kernel (cached) and the
// modules of wsl-modules.yml, generate the depmod data, write
// modules.vhdx and publish a GitHub release. It is what both the action
// mode and the `run` command of cmd/action call.
//
// Stages talk through a documented on-disk layout in the work dir (see
// docs/ARCHITECTURE.md, "Work dir layout"), one directory per kernel:
//
//	WORK/<kernel>/            <kernel> is the kernel tag, or "local"
//	  source/  source.json    fetched kernel source (tags only)
//	  modsrc/<name>/ <name>.json  fetched git/url module sources
//	  shards/<i>-of-<n>/      modules stage output (one per shard)
//	  build/                  assembled build output (build-manifest.json)
//	  dist/                   release assets
//
// Every directory is written atomically, so one that exists is complete,
// and a stage whose output exists with a matching manifest hash is skipped:
// a re-run after a failed upload does not build anything again.
//
// For scale-out across GitHub Actions jobs the stages run separately
// (Options.Stage): plan, kernel, modules (a shard of the module list),
// package (merge the shards, depmod, image, release).
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
)

// Stages.
const (
	StagePlan    = "plan"
	StageKernel  = "kernel"
	StageModules = "modules"
	StagePackage = "package"
	// StageFetch fetches what the kernel stage needs from GitHub (the
	// kernel source; in stock mode Microsoft's files from the WSL
	// installer) and builds nothing: the step that holds the token runs
	// it, so the build step needs no API.
	StageFetch = "fetch"
	StageAll   = "all"
)

// Headers settings: what kernel headers the image carries.
const (
	HeadersDevel = "devel"
	HeadersUAPI  = "uapi"
	HeadersNone  = "none"
)

// LocalName is the work dir name of a kernel built from a local source.
const LocalName = "local"

// Options configure Run. They cover every input of the action.
type Options struct {
	// ModulesFile is the module list (wsl-modules.yml).
	ModulesFile string
	// ModulesRoot is the repository the list's path: sources must stay
	// in (default: the git top level of the list's directory).
	ModulesRoot string
	// ActionMode is set when running as the GitHub Action: absolute
	// path: sources must then be inside ModulesRoot too.
	ActionMode bool
	// KernelRepo is the repository whose tags are kernels (default
	// fetch.DefaultRepo).
	KernelRepo string
	// KernelSource is a kernel source directory or tarball (offline: no
	// GitHub request is made), or a kernel tag. Empty: Track decides.
	KernelSource string
	// KernelTag names the kernel tag of a local KernelSource (for the
	// release). Empty: derived from the kernel release.
	KernelTag string
	// Track is latest (default), a series, an exact tag or all-new.
	Track string
	// MaxTags bounds an all-new selection (default fetch.DefaultMaxTags).
	MaxTags int
	// Arch overrides kernel.arch of the module list (x86_64 or arm64).
	Arch string
	// ConfigFile overrides the tree's kernel config.
	ConfigFile string
	// KernelMode is auto, stock or build; "" takes kernel.mode of the
	// module list (default auto).
	KernelMode string
	// StockKernel and StockModules are Microsoft's kernel and modules
	// image (C:\Program Files\WSL\tools\kernel and modules.vhd) for stock
	// mode; WSLMSI is a WSL installer holding both; WSLVersion picks the
	// WSL release whose installer to download.
	StockKernel, StockModules, WSLMSI, WSLVersion string
	// WSLRepo is the WSL repository (default microsoft/WSL).
	WSLRepo string
	// Layout is flat (default) or nested.
	Layout string
	// Headers is devel (default), uapi or none.
	Headers string
	// KeepGoing publishes without modules that failed instead of failing.
	KeepGoing bool
	// Publish publishes a GitHub release; otherwise the dist directory is
	// prepared and what would be published is printed (a dry run).
	Publish bool
	// ReleasePrefix is the release tag prefix (default
	// release.DefaultPrefix).
	ReleasePrefix string
	// TargetRepo is the repository releases go to (GITHUB_REPOSITORY).
	TargetRepo string
	// Target is the commitish release tags are created at.
	Target string
	// Client is the GitHub client; nil creates one from Token and Getenv
	// when a request is needed.
	Client *githubapi.Client
	// Token is the GitHub token (empty: GITHUB_TOKEN, INPUT_TOKEN).
	Token string
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// CacheDir holds the kernel cache. Required.
	CacheDir string
	// Jobs is the number of parallel compile jobs (0: all cores).
	Jobs int
	// Stage is all (default), plan, kernel, modules or package.
	Stage string
	// Shard is "i/n" for the modules stage (default 1/1).
	Shard string
	// WorkDir is the work directory. Required.
	WorkDir string
	// SourceDateEpoch, if non-zero, is KBUILD_BUILD_TIMESTAMP and the
	// image timestamps (Unix seconds). Zero: the source's own date.
	SourceDateEpoch int64
	// Tool is the manifest's tool string.
	Tool string
	// Progress receives progress lines (may be nil).
	Progress *progress.Reporter
	// Out receives the user-facing summary lines (may be nil).
	Out io.Writer
	// Hooks let the action mode group logs and annotate errors.
	Hooks Hooks
}

// Hooks are callbacks for the caller's presentation (log groups,
// annotations). Every field may be nil.
type Hooks struct {
	// Stage is called when a stage of a kernel starts; the function it
	// returns is called when the stage ends.
	Stage func(kernel, stage string) (end func(err error))
	// Module is called for each module after its build.
	Module func(r ModuleReport)
}

// ModuleReport describes one module build to Hooks.Module.
type ModuleReport struct {
	// Kernel is the work dir name of the kernel (tag or "local").
	Kernel string
	manifest.Module
	// LogPath is the module's build log.
	LogPath string
	// SourceDir is where the module's source is: the listed directory
	// for path modules, the fetched copy for git and url modules.
	SourceDir string
	// BuildDir is the copy the module was built in (compiler messages
	// name files under it).
	BuildDir string
	// Bytes is the size of the installed .ko files.
	Bytes int64
	// Tail holds the last error lines of the log for failures.
	Tail []string
}

// Result is the outcome of Run.
type Result struct {
	// Plan is the selection and cache key (every stage computes it).
	Plan *Plan
	// Kernels has one entry per kernel that was not up to date, plus the
	// up-to-date ones with UpToDate set.
	Kernels []*KernelResult
}

// Built reports whether any kernel was built (not up to date).
func (r *Result) Built() bool {
	for _, k := range r.Kernels {
		if !k.UpToDate {
			return true
		}
	}
	return false
}

// Last returns the last kernel's result, or nil.
func (r *Result) Last() *KernelResult {
	if r == nil || len(r.Kernels) == 0 {
		return nil
	}
	return r.Kernels[len(r.Kernels)-1]
}

// KernelResult is the outcome for one kernel.
type KernelResult struct {
	// Name is the work dir name (tag or "local"); Tag the kernel tag.
	Name, Tag string
	// Release is `uname -r` (empty when up to date: nothing was built).
	Release string
	Arch    string
	// UpToDate is set when a published release already has this build.
	UpToDate bool
	// Hash is the manifest hash of the build's inputs.
	Hash string
	// Dir is WORK/<name>; BuildDir and DistDir its build/ and dist/.
	Dir, BuildDir, DistDir string
	// KernelImage and VHDX are the dist files (empty if not produced).
	KernelImage, VHDX string
	// Manifest is the dist manifest (nil if no package stage ran).
	Manifest *manifest.Manifest
	// Release is the publish result (nil if no package stage ran).
	Publish *release.Result
	// KernelCacheWritten is set when this run added a kernel cache entry;
	// KernelSteps is then the number of kbuild steps its long make took
	// (the kernel build, or modules_prepare in stock mode).
	KernelCacheWritten bool
	KernelSteps        int64
	// Modules are the module reports of this run's module builds.
	Modules []ModuleReport
	// Mode is the kernel mode (ModeStock or ModeBuild) and ModeReason why
	// it was chosen.
	Mode, ModeReason string
}

// Run runs the selected stage (default all) of the pipeline.
func Run(ctx context.Context, o Options) (*Result, error) {
	r, err := newRunner(o)
	if err != nil {
		return nil, err
	}
	return r.run(ctx)
}

// runner carries one Run.
type runner struct {
	o        Options
	list     *modlist.List
	arch     string
	shardI   int
	shardN   int
	fragment *kconfig.Fragment
	modPins  []manifest.InputModule
	client   *githubapi.Client
	// releases is the target repository's release index, listed once per
	// run (releasesOf).
	releases *release.Index
	// wsl is the WSL release mapping (wslReleases); wslFailed the error
	// of a listing that failed in auto mode.
	wsl       []fetch.WSLRelease
	wslFailed error
	log       *progress.Reporter
	out       io.Writer
}

func newRunner(o Options) (*runner, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if err := o.setOutputDefaults(); err != nil {
		return nil, err
	}
	if err := o.setSourceDefaults(); err != nil {
		return nil, err
	}
	r := &runner{o: o, log: o.Progress, out: o.Out, client: o.Client, shardI: 1, shardN: 1}
	if r.out == nil {
		r.out = io.Discard
	}
	if o.Shard != "" {
		i, n, err := ParseShard(o.Shard)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		r.shardI, r.shardN = i, n
	}
	if err := r.loadList(); err != nil {
		return nil, err
	}
	return r, nil
}

// setOutputDefaults fills in and checks the options of what a run
// produces: the stage, the image layout, the headers and the release
// prefix.
func (o *Options) setOutputDefaults() error {
	if o.Stage == "" {
		o.Stage = StageAll
	}
	switch o.Stage {
	case StagePlan, StageFetch, StageKernel, StageModules, StagePackage, StageAll:
	default:
		return fmt.Errorf("pipeline: stage %q: want plan, fetch, kernel, modules, package or all", o.Stage)
	}
	if o.Layout == "" {
		o.Layout = "flat"
	}
	if o.Layout != "flat" && o.Layout != "nested" {
		return fmt.Errorf("pipeline: layout %q: want flat or nested", o.Layout)
	}
	if o.Headers == "" {
		o.Headers = HeadersDevel
	}
	switch o.Headers {
	case HeadersDevel, HeadersNone:
	case HeadersUAPI:
		if o.Layout != "nested" {
			return fmt.Errorf("pipeline: headers uapi needs layout nested (a flat image has no place for linux-headers/); use devel or none")
		}
	default:
		return fmt.Errorf("pipeline: headers %q: want devel, uapi or none", o.Headers)
	}
	if o.ReleasePrefix == "" {
		o.ReleasePrefix = release.DefaultPrefix
	}
	if err := release.CheckPrefix(o.ReleasePrefix); err != nil {
		return fmt.Errorf("pipeline: release prefix: %w", err)
	}
	return nil
}

// setSourceDefaults fills in and checks the options of what a run reads:
// the kernel repository and track, the work and cache dirs (made
// absolute, as make -C needs), the jobs and the config file.
func (o *Options) setSourceDefaults() error {
	if o.KernelRepo == "" {
		o.KernelRepo = fetch.DefaultRepo
	}
	if _, _, err := githubapi.SplitRepo(o.KernelRepo); err != nil {
		return fmt.Errorf("pipeline: kernel repo: %w", err)
	}
	if o.Track == "" {
		o.Track = fetch.TrackLatest
	}
	if err := fetch.CheckTrack(o.Track); err != nil {
		return fmt.Errorf("pipeline: track: %w", err)
	}
	if o.MaxTags <= 0 {
		o.MaxTags = fetch.DefaultMaxTags
	}
	if o.WorkDir == "" {
		return errors.New("pipeline: no work dir")
	}
	if o.CacheDir == "" {
		return errors.New("pipeline: no kernel cache dir")
	}
	if o.Jobs < 0 {
		return fmt.Errorf("pipeline: jobs %d: want 0 (all cores) or more", o.Jobs)
	}
	// The stages run make -C; relative paths would point elsewhere there.
	for _, p := range []*string{&o.WorkDir, &o.CacheDir, &o.ModulesFile, &o.ConfigFile} {
		if *p == "" {
			continue
		}
		a, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		*p = a
	}
	if o.Tool == "" {
		o.Tool = "wsl-modules-action dev"
	}
	if o.ConfigFile != "" {
		if _, err := os.Stat(o.ConfigFile); err != nil {
			return fmt.Errorf("pipeline: config: %w", err)
		}
	}
	return nil
}

// loadList reads the module list and settles the arch and the config
// fragment.
func (r *runner) loadList() error {
	o := r.o
	if o.ModulesFile == "" {
		return errors.New("pipeline: no module list (modules)")
	}
	list, err := modlist.LoadWith(o.ModulesFile, modlist.LoadOptions{Root: o.ModulesRoot, ActionMode: o.ActionMode})
	if err != nil {
		return err
	}
	r.list = list
	r.arch = list.Kernel.Arch
	if o.Arch != "" {
		r.arch = o.Arch
	}
	switch r.arch {
	case "", "x86_64", "amd64":
		r.arch = modlist.ArchX86_64
	case "arm64", "aarch64":
		r.arch = modlist.ArchARM64
	default:
		return fmt.Errorf("pipeline: arch %q: want x86_64 or arm64", r.arch)
	}
	list.Kernel.Arch = r.arch
	if list.Kernel.ConfigFragment != "" {
		r.fragment, err = kconfig.ParseFragment(list.File, list.Kernel.FragmentLine, list.Kernel.ConfigFragment)
		if err != nil {
			return err
		}
	}
	return nil
}

// github returns the GitHub client, creating it on first use.
func (r *runner) github() (*githubapi.Client, error) {
	if r.client != nil {
		return r.client, nil
	}
	c, err := githubapi.New(githubapi.Options{Token: r.o.Token, Getenv: r.o.Getenv, Log: r.log})
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	r.client = c
	return c, nil
}

// stage runs fn as a named stage of kernel k, with the stage hook.
func (r *runner) stage(k *kernelJob, name string, fn func() error) error {
	var end func(error)
	if r.o.Hooks.Stage != nil {
		end = r.o.Hooks.Stage(k.name, name)
	}
	done := r.log.Step("%s: %s", k.name, name)
	err := fn()
	done()
	if end != nil {
		end(err)
	}
	return err
}

func (r *runner) run(ctx context.Context) (*Result, error) {
	plan, err := r.plan(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{Plan: plan}
	if r.o.Stage == StagePlan {
		for _, k := range plan.jobs {
			res.Kernels = append(res.Kernels, k.result())
		}
		return res, nil
	}
	if r.o.Stage != StageAll && len(plan.Build) > 1 {
		return res, fmt.Errorf("pipeline: stage %s builds one kernel per job, but %d were selected (%s); use track: <tag> per job (the plan stage's tags output)",
			r.o.Stage, len(plan.Build), strings.Join(plan.Build, ", "))
	}
	var errs []error
	for _, k := range plan.jobs {
		if k.upToDate {
			fmt.Fprintf(r.out, "%s: up to date (release %s has this build)\n", k.name, k.upToDateURL)
			res.Kernels = append(res.Kernels, k.result())
			continue
		}
		err := r.runKernel(ctx, k)
		res.Kernels = append(res.Kernels, k.result())
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return res, errors.Join(errs...)
}

// runKernel runs the selected stages for one kernel.
func (r *runner) runKernel(ctx context.Context, k *kernelJob) error {
	if err := os.MkdirAll(k.dir, 0o755); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	if r.o.Stage == StageFetch {
		return r.stage(k, "fetch", func() error { return r.prefetch(ctx, k) })
	}
	if err := r.ensureKernel(ctx, k); err != nil {
		return err
	}
	switch r.o.Stage {
	case StageKernel:
		return nil
	case StageAll:
		// A build output assembled for these inputs (a re-run after a
		// failed upload) needs no module build.
		if !r.assembled(k) {
			if err := r.stage(k, "modules", func() error { return r.buildModules(ctx, k, 1, 1) }); err != nil {
				return err
			}
		}
	case StageModules:
		return r.stage(k, "modules", func() error { return r.buildModules(ctx, k, r.shardI, r.shardN) })
	}
	if err := r.assemble(ctx, k); err != nil {
		return err
	}
	if err := r.stage(k, "image", func() error { return r.image(ctx, k) }); err != nil {
		return err
	}
	return r.stage(k, "release", func() error { return r.release(ctx, k) })
}

// epoch returns the SOURCE_DATE_EPOCH time, or zero.
func (r *runner) epoch() time.Time {
	if r.o.SourceDateEpoch == 0 {
		return time.Time{}
	}
	return time.Unix(r.o.SourceDateEpoch, 0)
}
