package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/runenv"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/pack"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

func init() {
	register(&command{
		Name:    "build",
		Summary: "build the kernel (cached) and the modules of wsl-modules.yml against it, in parallel",
		Usage:   "build --kernel-source DIR|TARBALL --modules wsl-modules.yml --out DIR [--cache DIR] [--config FILE] [--jobs N] [--keep-going] [--force] [--emit-packs DIR [--pack-name NAME]]",
		Examples: []string{
			"build --kernel-source WSL2-Linux-Kernel-linux-msft-wsl-6.6.87.2.tar.gz --modules wsl-modules.yml --out build",
			"build --kernel-source ./WSL2-Linux-Kernel --modules wsl-modules.yml --out build --cache ~/.cache/wsl-modules --jobs 8 --keep-going",
			"build --kernel-source linux.tar.gz --modules wsl-modules.yml --out build --emit-packs packs",
		},
		Run: runBuild,
	})
}

func runBuild(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["build"]
	fs := newFlagSet(env, c)
	var o modbuild.Options
	f := defineBuildFlags(fs, &o)
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("build: unexpected argument %q (see 'build --help')", pos[0])
	}
	switch {
	case o.KernelSource == "":
		return usagef("build: --kernel-source is required (see 'build --help')")
	case f.listPath == "":
		return usagef("build: --modules is required (see 'build --help')")
	case o.Out == "":
		return usagef("build: --out is required (see 'build --help')")
	case o.Jobs < 1:
		return usagef("build: --jobs must be at least 1")
	case f.packName != "" && f.packsDir == "":
		return usagef("build: --pack-name needs --emit-packs")
	case f.packName != "" && !pack.ValidName(f.packName):
		return usagef("build: invalid --pack-name %q", f.packName)
	}
	if n, ok, err := runenv.SourceDateEpoch(f.epoch, env.Getenv); err != nil {
		return usagef("build: %v", err)
	} else if ok {
		o.Timestamp = time.Unix(n, 0)
	}
	if o.CacheDir == "" {
		if o.CacheDir, err = runenv.DefaultCacheDir(env.Getenv); err != nil {
			return usagef("build: %v; pass --cache DIR", err)
		}
	}
	o.List, err = modlist.Load(f.listPath)
	if err != nil {
		return err
	}
	o.Progress = progress.New(env.Stderr)
	// git and url sources come from internal/fetch, wired in by the run
	// command; this command builds path modules only.
	res, err := modbuild.Run(ctx, o)
	if err != nil {
		return err
	}
	return reportBuild(env, o.Out, res, f.packsDir, f.packName)
}

// buildFlags are the build command's flags that are not build options.
type buildFlags struct {
	listPath, epoch, packsDir, packName string
}

// defineBuildFlags defines the build command's flags on fs, setting o
// and the returned buildFlags.
func defineBuildFlags(fs *flag.FlagSet, o *modbuild.Options) *buildFlags {
	f := &buildFlags{}
	fs.StringVar(&o.KernelSource, "kernel-source", "", "kernel source directory or tarball (.tar.gz, .tar.xz)")
	fs.StringVar(&f.listPath, "modules", "", "the module list, wsl-modules.yml")
	fs.StringVar(&o.Out, "out", "", "output directory (written atomically)")
	fs.StringVar(&o.CacheDir, "cache", "", "kernel cache directory (default $XDG_CACHE_HOME/wsl-modules-action or ~/.cache/wsl-modules-action)")
	fs.StringVar(&o.ConfigFile, "config", "", "kernel config to use instead of the tree's Microsoft/config-wsl")
	fs.IntVar(&o.Jobs, "jobs", runtime.NumCPU(), "total parallel compile jobs, shared by all builds")
	fs.BoolVar(&o.KeepGoing, "keep-going", false, "produce the output without the modules that failed (and say so) instead of failing")
	fs.BoolVar(&o.Force, "force", false, "replace an existing --out directory")
	fs.StringVar(&f.packsDir, "emit-packs", "", "also write each built out-of-tree module as a pack DIR/<name>.tar.zst (see 'merge')")
	fs.StringVar(&f.packName, "pack-name", "", "with --emit-packs: one pack NAME.tar.zst holding every built module instead of one pack per module")
	fs.StringVar(&f.epoch, "source-date-epoch", "", "KBUILD_BUILD_TIMESTAMP as Unix seconds (default $SOURCE_DATE_EPOCH, else the source's Makefile time)")
	return f
}

// reportBuild prints the kernel and module results of a build with
// output directory out, writes its packs (with packsDir) and notes the
// modules left out.
func reportBuild(env *cliEnv, out string, res *modbuild.Result, packsDir, packName string) error {
	k := res.Kernel
	hit := "built"
	if k.CacheHit {
		hit = "cache hit"
	}
	fmt.Fprintf(env.Stdout, "kernel %s (%s, cache entry %s)\n", k.Meta.Release, hit, progress.Bytes(k.Meta.Bytes))
	for _, m := range res.Manifest.Modules {
		fmt.Fprintf(env.Stdout, "module %-20s %-7s %5.1fs %v\n", m.Name, m.Status, m.Seconds, m.Files)
	}
	fmt.Fprintf(env.Stdout, "output: %s\n", out)
	if packsDir != "" {
		paths, err := emitPacks(res.Manifest, out, packsDir, packName)
		if err != nil {
			return err
		}
		for _, p := range paths {
			fmt.Fprintf(env.Stdout, "pack: %s\n", p)
		}
	}
	if len(res.Failed) > 0 {
		fmt.Fprintf(env.Stderr, "wsl-modules-action: build: %d module(s) failed and were left out (--keep-going)\n", len(res.Failed))
	}
	return nil
}

// emitPacks writes the successfully built out-of-tree modules of a build
// output directory as packs.
func emitPacks(m *manifest.Manifest, out, dir, name string) ([]string, error) {
	var names []string
	for _, x := range m.Modules {
		if x.Status == manifest.StatusOK && len(x.Files) > 0 {
			names = append(names, x.Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("build: --emit-packs: no module was built")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("build: --emit-packs: %w", err)
	}
	if name != "" {
		p, err := pack.FromBuildCombined(out, m, names, name, dir)
		if err != nil {
			return nil, err
		}
		return []string{p}, nil
	}
	return pack.FromBuild(out, m, names, dir)
}
