package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/wsl-modules/wsl-modules-action/internal/runenv"

	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/pipeline"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
)

func init() {
	register(&command{
		Name:    "run",
		Summary: "run the whole pipeline (fetch, build, depmod, image, release) as the action does, locally",
		Usage: "run --modules FILE --out DIR [--kernel-source DIR|TARBALL|TAG] [--dry-run] [--config FILE] [--layout flat|nested] " +
			"[--kernel-mode auto|stock|build] [--stock-kernel FILE --stock-modules FILE | --wsl-msi FILE | --wsl-version V] " +
			"[--headers devel|uapi|none] [--keep-going] [--cache DIR] [--jobs N] [--repo owner/name] [--target-repo owner/name] [--track T] [--stage S --shard i/n]",
		Examples: []string{
			"run --modules testdata/wsl-modules-local.yml --kernel-source /usr/src/linux-source-6.12.tar.xz --config testdata/kernel/config-test --out out --dry-run",
			"run --modules .github/wsl-modules.yml --kernel-source linux-msft-wsl-6.6.87.2 --out out --dry-run",
			"run --modules .github/wsl-modules.yml --track all-new --target-repo me/wsl-kernel --out out",
			"run --modules wsl-modules.yml --kernel-source ./WSL2-Linux-Kernel --tag linux-msft-wsl-6.6.87.2 --wsl-msi wsl.2.6.1.0.x64.msi --out out --dry-run",
			"run --modules wsl-modules.yml --kernel-source ./WSL2-Linux-Kernel --tag linux-msft-wsl-6.6.87.2 --stock-kernel '/mnt/c/Program Files/WSL/tools/kernel' --stock-modules '/mnt/c/Program Files/WSL/tools/modules.vhd' --out out --dry-run",
		},
		Run: runRun,
	})
}

func runRun(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["run"]
	fs := newFlagSet(env, c)
	var o pipeline.Options
	f := defineRunFlags(fs, &o)
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("run: unexpected argument %q (see 'run --help')", pos[0])
	}
	switch {
	case o.ModulesFile == "":
		return usagef("run: --modules is required (see 'run --help')")
	case o.WorkDir == "":
		return usagef("run: --out is required (see 'run --help')")
	case o.Jobs < 1:
		return usagef("run: --jobs must be at least 1")
	}
	if o.SourceDateEpoch, _, err = runenv.SourceDateEpoch(f.epoch, env.Getenv); err != nil {
		return usagef("run: %v", err)
	}
	if o.CacheDir == "" {
		if o.CacheDir, err = runenv.DefaultCacheDir(env.Getenv); err != nil {
			return usagef("run: %v; pass --cache DIR", err)
		}
	}
	if o.TargetRepo == "" {
		o.TargetRepo = env.Getenv("GITHUB_REPOSITORY")
	}
	o.Publish = !f.dryRun
	o.Target = env.Getenv("GITHUB_SHA")
	o.Getenv = env.Getenv
	stdout, stderr := redacted(env, o.Token)
	defer flush(stdout, stderr)
	o.Progress = progress.New(stderr)
	o.Out = stdout
	res, err := pipeline.Run(ctx, o)
	if res != nil {
		printRunResult(stdout, o.Stage, res)
	}
	return err
}

// runFlags are the run command's flags that are not pipeline options.
type runFlags struct {
	dryRun bool
	epoch  string
}

// defineRunFlags defines the run command's flags on fs, setting o and
// the returned runFlags.
func defineRunFlags(fs *flag.FlagSet, o *pipeline.Options) *runFlags {
	f := &runFlags{}
	fs.StringVar(&o.ModulesFile, "modules", "", "the module list, wsl-modules.yml")
	fs.StringVar(&o.WorkDir, "out", "", "work directory: WORK/<kernel>/{source,build,dist} (see docs/ARCHITECTURE.md)")
	fs.StringVar(&o.KernelSource, "kernel-source", "", "kernel source directory or tarball (offline, no GitHub), or a kernel tag; default: --track")
	fs.StringVar(&o.KernelTag, "tag", "", "kernel tag of a local --kernel-source, for the release name (default: from its release)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "write the dist directory and print what would be published, without publishing")
	fs.StringVar(&o.ConfigFile, "config", "", "kernel config to use instead of the tree's Microsoft/config-wsl")
	fs.StringVar(&o.KernelMode, "kernel-mode", "", "auto (Microsoft's kernel when available, else built), stock or build (default: kernel.mode of the module list, else auto)")
	fs.StringVar(&o.StockKernel, "stock-kernel", "", "stock mode: Microsoft's kernel image (C:\\Program Files\\WSL\\tools\\kernel, /mnt/c/Program Files/WSL/tools/kernel in WSL)")
	fs.StringVar(&o.StockModules, "stock-modules", "", "stock mode: its modules image (tools\\modules.vhd or artifacts.vhd)")
	fs.StringVar(&o.WSLMSI, "wsl-msi", "", "stock mode: a downloaded WSL installer (wsl.<version>.0.x64.msi) holding both")
	fs.StringVar(&o.WSLVersion, "wsl-version", "", "stock mode: fetch the installer of this WSL release (e.g. 2.6.1)")
	fs.StringVar(&o.Layout, "layout", "flat", "image layout: flat (every WSL since 2.5.1) or nested")
	fs.StringVar(&o.Headers, "headers", pipeline.HeadersDevel, "kernel headers in the image: devel, uapi (nested only) or none")
	fs.BoolVar(&o.KeepGoing, "keep-going", false, "produce (and publish) the image without the modules that failed instead of failing")
	fs.StringVar(&o.CacheDir, "cache", "", "kernel cache directory (default $XDG_CACHE_HOME/wsl-modules-action or ~/.cache/wsl-modules-action)")
	fs.IntVar(&o.Jobs, "jobs", runtime.NumCPU(), "total parallel compile jobs")
	fs.StringVar(&o.KernelRepo, "repo", fetch.DefaultRepo, "kernel repository whose tags are built")
	fs.StringVar(&o.TargetRepo, "target-repo", "", "repository to publish releases to (default $GITHUB_REPOSITORY)")
	fs.StringVar(&o.Track, "track", fetch.TrackWSL, "without --kernel-source: wsl (the kernel of the newest stable WSL release), wsl-prerelease, wsl-<version>, latest, a series (6.6), a tag, or all-new")
	fs.IntVar(&o.MaxTags, "max-tags", fetch.DefaultMaxTags, "with --track all-new, the most tags built in one run")
	fs.StringVar(&o.Arch, "arch", "", "x86_64 or arm64 (default: kernel.arch of the module list)")
	fs.StringVar(&o.ReleasePrefix, "prefix", release.DefaultPrefix, "release tag prefix")
	fs.StringVar(&o.Stage, "stage", pipeline.StageAll, "all, or for scale-out: plan, kernel, modules, package")
	fs.StringVar(&o.Shard, "shard", "", "with --stage modules: i/n, the i-th of n slices of the module list")
	fs.StringVar(&o.Token, "token", "", "GitHub token (default $GITHUB_TOKEN or $INPUT_TOKEN)")
	fs.StringVar(&f.epoch, "source-date-epoch", "", "build and image timestamp as Unix seconds (default $SOURCE_DATE_EPOCH, else the source's date)")
	return f
}

// printRunResult prints the plan (for the plan stage) and each built
// kernel's files and module reports.
func printRunResult(stdout io.Writer, stage string, res *pipeline.Result) {
	if res.Plan != nil && stage == pipeline.StagePlan {
		fmt.Fprintf(stdout, "plan: %s\n  build: %v\n  up to date: %v\n  cache key: %s\n", res.Plan.Summary, res.Plan.Build, res.Plan.UpToDate, res.Plan.CacheKey)
	}
	for _, k := range res.Kernels {
		if k.VHDX == "" || k.UpToDate {
			continue
		}
		fmt.Fprintf(stdout, "%s: kernel %s\n  %s\n  %s\n", k.Name, k.Release, k.KernelImage, k.VHDX)
		for _, m := range k.Modules {
			fmt.Fprintf(stdout, "  module %-20s %-7s %8s %6.1fs\n", m.Name, m.Status, progress.Bytes(m.Bytes), m.Seconds)
		}
	}
}
