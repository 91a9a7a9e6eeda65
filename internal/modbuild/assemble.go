package modbuild

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/depmod"
	"github.com/wsl-modules/wsl-modules-action/internal/devel"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/stage"
)

// AssembleOptions describe a build output directory (the `build --out`
// layout, also WORK/<kernel>/build of the pipeline).
type AssembleOptions struct {
	// Kernel is the kernel the modules were built against.
	Kernel *kbuild.Kernel
	// Added are the built modules to add to the kernel's stock modules
	// (their paths under extra/ or updates/).
	Added []*modtree.Entry
	// Devel copies the kernel-devel tree (the one whose host programs run
	// on the target) to kernel-devel/ and checks it with devel.Verify;
	// UAPI copies the UAPI headers to headers/.
	Devel, UAPI bool
	// Progress reports the steps (may be nil).
	Progress *progress.Reporter
}

// Assembled is what Assemble wrote.
type Assembled struct {
	// Tree is the staged module tree (stock plus added modules).
	Tree *modtree.Tree
	// Depmod is depmod's report on it.
	Depmod *depmod.Report
	// Devel describes the kernel-devel tree (nil without Devel).
	Devel *devel.Report
}

// Assemble fills dir (a new, empty directory the caller commits, such as
// an atomicfile.Dir's Tmp) with the kernel's files (image, Module.symvers,
// System.map, config, logs/kernel.log), the module tree staged at
// staging/lib/modules/<release> with its depmod indexes (stock modules
// plus o.Added, modules.order extended, checked with depmod -e -E against
// Module.symvers: a problem is an error) and the chosen header trees.
// This is the one assembly of a build output.
func Assemble(ctx context.Context, dir string, o AssembleOptions) (*Assembled, error) {
	k := o.Kernel
	for from, to := range k.Files() {
		if err := atomicfile.CopyFile(from, filepath.Join(dir, to), 0); err != nil {
			return nil, fmt.Errorf("assemble: %w", err)
		}
	}
	stock, err := k.Stock(ctx)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	tree, err := addModules(stock, o.Added)
	if err != nil {
		return nil, err
	}
	vmlinux, err := depmod.ReadSymvers(k.Symvers())
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	mdir := filepath.Join(dir, "staging", "lib", "modules", k.Meta.Release)
	res := &Assembled{Tree: tree}
	st, err := stage.Dir(ctx, tree, mdir, stage.Options{Strict: true, Progress: o.Progress,
		Depmod: depmod.GenerateOptions{Dir: mdir, ErrSyms: true, CheckCRCs: true, Vmlinux: vmlinux}})
	if st != nil {
		res.Depmod = st.Depmod
	}
	if err != nil {
		return res, fmt.Errorf("assemble: %w", err)
	}
	if err := copyHeaders(ctx, dir, o, res); err != nil {
		return res, err
	}
	return res, nil
}

// addModules overlays the added modules on the stock tree, appending
// them to modules.order. A module path present in both is an error.
func addModules(stock *modtree.Tree, added []*modtree.Entry) (*modtree.Tree, error) {
	var paths []string
	for _, e := range added {
		if stock.Entry(e.Path) != nil {
			return nil, fmt.Errorf("assemble: %s is a stock module and a built one", e.Path)
		}
		paths = append(paths, e.Path)
	}
	t := stock.Overlay(added, nil)
	if stock.Order != nil || len(paths) > 0 {
		t.Order = modtree.AppendOrder(stock.Order, paths, nil)
	}
	return t, nil
}

// copyHeaders copies the chosen header trees and verifies kernel-devel.
func copyHeaders(ctx context.Context, dir string, o AssembleOptions, res *Assembled) error {
	k := o.Kernel
	if o.UAPI {
		if err := atomicfile.CopyTree(ctx, k.HeadersDir(), filepath.Join(dir, "headers"), atomicfile.CopyOptions{}); err != nil {
			return fmt.Errorf("assemble: %w", err)
		}
	}
	if !o.Devel {
		return nil
	}
	dev := filepath.Join(dir, "kernel-devel")
	if err := atomicfile.CopyTree(ctx, k.TargetDevelDir(), dev, atomicfile.CopyOptions{}); err != nil {
		return fmt.Errorf("assemble: %w", err)
	}
	// The tree ships in the image: refuse one that cannot build modules
	// inside WSL (wrong arch, missing files, build paths).
	rep, err := devel.Verify(dev, devel.Options{Release: k.Meta.Release, Arch: k.Meta.Arch, Symvers: k.Symvers(),
		BuildPaths: []string{k.Dir, filepath.Dir(k.Dir)}})
	if err != nil {
		return fmt.Errorf("assemble: kernel-devel tree: %w", err)
	}
	res.Devel = rep
	return nil
}
