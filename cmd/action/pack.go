package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/pack"
)

func init() {
	register(&command{
		Name:    "pack",
		Summary: "create and list module packs (.tar.zst with pack.json and .ko files) for 'merge'",
		Usage: "pack create --name N --kernel-release R [--version V] [--arch A] --out P.tar.zst [--force] KO...\n" +
			"       wsl-modules-action pack ls P.tar.zst\n" +
			"       wsl-modules-action pack from-build --build DIR --out DIR [--module NAME ...] [--combined NAME]",
		Examples: []string{
			"pack create --name mydrv --version 1.2 --kernel-release 6.6.87.2-microsoft-standard-WSL2 --out mydrv.tar.zst mydrv.ko",
			"pack ls mydrv.tar.zst",
			"pack from-build --build work/build --out packs",
		},
		Run: runPack,
	})
}

func runPack(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("pack: want a subcommand: create, ls or from-build (see 'pack --help')")
	}
	switch args[0] {
	case "create":
		return runPackCreate(env, args[1:])
	case "ls":
		return runPackLs(env, args[1:])
	case "from-build":
		return runPackFromBuild(env, args[1:])
	case "-h", "--help", "-help":
		printCommandHelp(env.Stdout, commands["pack"], nil)
		return nil
	}
	return usagef("pack: unknown subcommand %q (want create, ls or from-build)", args[0])
}

func runPackCreate(env *cliEnv, args []string) error {
	c := commands["pack"]
	fs := newFlagSet(env, c)
	var o pack.CreateOptions
	var out string
	fs.StringVar(&o.Name, "name", "", "pack name (its directory in the merged tree: extra/NAME/)")
	fs.StringVar(&o.Version, "version", "", "pack version")
	fs.StringVar(&o.KernelRelease, "kernel-release", "", "kernel release the modules were built for")
	fs.StringVar(&o.Arch, "arch", "", "architecture (default: from the modules)")
	fs.StringVar(&out, "out", "", "output .tar.zst")
	fs.BoolVar(&o.Force, "force", false, "overwrite an existing output file")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if o.Name == "" || o.KernelRelease == "" || out == "" || len(pos) == 0 {
		return usagef("pack create: --name, --kernel-release, --out and at least one .ko are required")
	}
	o.Modules = map[string]string{}
	for _, ko := range pos {
		rel := filepath.Base(ko)
		if prev, dup := o.Modules[rel]; dup {
			return usagef("pack create: %s and %s have the same file name", prev, ko)
		}
		o.Modules[rel] = ko
	}
	meta, err := pack.Create(out, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s: pack %s %s for %s (%s), %d modules\n", out, meta.Name, meta.Version, meta.KernelRelease, meta.Arch, len(meta.Modules))
	return nil
}

func runPackLs(env *cliEnv, args []string) error {
	c := commands["pack"]
	fs := newFlagSet(env, c)
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("pack ls: want exactly one pack file, got %d", len(pos))
	}
	pk, err := pack.Open(pos[0])
	if err != nil {
		return err
	}
	m := pk.Meta
	fmt.Fprintf(env.Stdout, "pack %s %s\nkernel release: %s\narch: %s\nsha256: %s\n", m.Name, m.Version, m.KernelRelease, m.Arch, pk.SHA256)
	for _, md := range m.Modules {
		var exp []string
		for _, e := range md.Exports {
			exp = append(exp, e.Name)
		}
		fmt.Fprintf(env.Stdout, "%s  %s srcversion=%s needs=%d exports=%d", md.File, md.Name, md.SrcVersion, len(md.Needs), len(md.Exports))
		if len(exp) > 0 && len(exp) <= 8 {
			fmt.Fprintf(env.Stdout, " [%s]", strings.Join(exp, " "))
		}
		fmt.Fprintln(env.Stdout)
	}
	return nil
}

func runPackFromBuild(env *cliEnv, args []string) error {
	c := commands["pack"]
	fs := newFlagSet(env, c)
	var buildDir, out, combined string
	var mods stringList
	fs.StringVar(&buildDir, "build", "", "build output directory (with build-manifest.json and staging/)")
	fs.StringVar(&out, "out", "", "directory for the packs")
	fs.Var(&mods, "module", "module to pack (repeatable; default: all)")
	fs.StringVar(&combined, "combined", "", "make one pack with this name holding all selected modules")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if buildDir == "" || out == "" || len(pos) != 0 {
		return usagef("pack from-build: --build and --out are required, and nothing else")
	}
	m, err := manifest.Read(filepath.Join(buildDir, manifest.FileName))
	if err != nil {
		return err
	}
	var paths []string
	if combined != "" {
		p, err := pack.FromBuildCombined(buildDir, m, mods, combined, out)
		if err != nil {
			return err
		}
		paths = []string{p}
	} else if paths, err = pack.FromBuild(buildDir, m, mods, out); err != nil {
		return err
	}
	for _, p := range paths {
		fmt.Fprintln(env.Stdout, p)
	}
	return nil
}
