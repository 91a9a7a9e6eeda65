package main

import (
	"context"
	"fmt"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
)

func init() {
	register(&command{
		Name:    "symvers",
		Summary: "rebuild a kernel's Module.symvers from its image (bzImage, arm64 Image, vmlinux) and its modules",
		Usage:   "symvers --kernel FILE [--modules DIR|IMAGE] [--out FILE [--force]]",
		Examples: []string{
			`symvers --kernel "/mnt/c/Program Files/WSL/tools/kernel" --modules /lib/modules/$(uname -r) --out Module.symvers`,
			`symvers --kernel kernel --modules modules.vhd --out Module.symvers`,
			"symvers --kernel build/bzImage --modules build/staging",
		},
		Run: runSymvers,
	})
}

// symversOptions are the flags of symvers.
type symversOptions struct {
	kernel, modules, out string
	force                bool
}

func runSymvers(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["symvers"]
	fs := newFlagSet(env, c)
	var o symversOptions
	fs.StringVar(&o.kernel, "kernel", "", "kernel image: bzImage (WSL's tools\\kernel), arm64 Image (or Image.gz, EFI zboot) or vmlinux")
	fs.StringVar(&o.modules, "modules", "", "the kernel's modules: a root holding lib/modules/RELEASE, that directory, a modules.vhd(x) image or a pack (default: vmlinux lines only)")
	fs.StringVar(&o.out, "out", "", "output file, written atomically (default: standard output)")
	fs.BoolVar(&o.force, "force", false, "overwrite an existing --out file")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("symvers: unexpected argument %q (see 'symvers --help')", pos[0])
	}
	if o.kernel == "" {
		return usagef("symvers: --kernel is required (see 'symvers --help')")
	}
	lines, summary, err := buildSymvers(ctx, o)
	if err != nil {
		return err
	}
	if err := writeSymvers(env, o, lines); err != nil {
		return err
	}
	fmt.Fprintln(env.Stderr, summary)
	return nil
}

// buildSymvers reads the kernel's exports and the modules' and returns
// the Module.symvers lines and a one-line summary.
func buildSymvers(ctx context.Context, o symversOptions) ([]modtree.Symver, string, error) {
	f, err := kimage.Open(o.kernel, nil)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	et, err := f.Exports()
	if err != nil {
		return nil, "", err
	}
	release := f.Release()
	var tree *modtree.Tree
	if o.modules != "" {
		if tree, err = openModules(ctx, o.modules, release); err != nil {
			return nil, "", err
		}
		defer tree.Close()
	}
	lines, err := modtree.BuildSymvers(et.Symbols, tree)
	if err != nil {
		return nil, "", err
	}
	how := "found by name"
	if et.Scanned {
		how = "found by structure"
	}
	summary := fmt.Sprintf("symvers: %s: %s %s, release %q, %d vmlinux exports (%s, %s)",
		o.kernel, f.Format, f.Compression, release, len(et.Symbols), et.Layout, how)
	if tree != nil {
		summary += fmt.Sprintf(", %d from %d modules", len(lines)-len(et.Symbols), len(tree.Modules))
	}
	return lines, summary, nil
}

// openModules opens the modules (a directory, a root holding
// lib/modules/<release>, a VHD/VHDX or raw image in the flat or nested
// layout, or a pack; modtree.Open decides their release) and checks that
// they are for the kernel's release, when the image names one.
func openModules(ctx context.Context, src, release string) (*modtree.Tree, error) {
	tree, err := modtree.Open(ctx, src, modtree.OpenOptions{})
	if err != nil {
		return nil, err
	}
	if release != "" && tree.Release != release {
		tree.Close()
		return nil, fmt.Errorf("symvers: the modules %s are for kernel %s (from their %s), the kernel image is %s",
			src, tree.Release, tree.Source.ReleaseFrom, release)
	}
	return tree, nil
}

// writeSymvers writes the lines to --out (atomically) or standard output.
func writeSymvers(env *cliEnv, o symversOptions, lines []modtree.Symver) error {
	if o.out == "" {
		return modtree.WriteSymvers(env.Stdout, lines)
	}
	af, err := atomicfile.Create(o.out, o.force)
	if err != nil {
		return fmt.Errorf("symvers: %w", err)
	}
	if err := modtree.WriteSymvers(af, lines); err != nil {
		af.Abort()
		return err
	}
	return af.Commit(0o644)
}
