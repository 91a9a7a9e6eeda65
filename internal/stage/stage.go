// Package stage is the one staging sink of module trees: it computes a
// tree's depmod indexes, composes the tree as it is to be written
// (modtree.View) and writes it into a new directory atomically, through an
// os.Root, or hands the view to an image writer. build, the pipeline and
// merge all stage through it, so nothing is parsed twice: the indexes come
// from the tree already in memory.
package stage

import (
	"context"
	"fmt"
	"os"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/depmod"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Options control View and Dir.
type Options struct {
	// Depmod configures the indexes: the duplicate ranking and, for the
	// checks (ErrSyms), the vmlinux symbols.
	Depmod depmod.GenerateOptions
	// Strict makes any unresolved symbol or CRC mismatch an error
	// (depmod.ErrStrict); nothing is written then.
	Strict bool
	// NoDuplicates makes two module files with the same module name an
	// error (merge) instead of a depmod warning.
	NoDuplicates bool
	// Files are generated files to add (records), by path.
	Files map[string][]byte
	// Drop lists paths of the tree's other files not to carry over.
	Drop map[string]bool
	// Force replaces an existing directory (Dir).
	Force bool
	// Progress reports the steps (may be nil).
	Progress *progress.Reporter
}

// Result is a staged tree.
type Result struct {
	// View is the tree as staged.
	View *modtree.View
	// Depmod is depmod's report on it.
	Depmod *depmod.Report
}

// View computes t's indexes and returns the staged view of t, without
// writing anything.
func View(t *modtree.Tree, o Options) (*Result, error) {
	done := o.Progress.Step("depmod: generating indexes for %d modules", len(t.Modules))
	res, err := depmod.Generate(t, o.Depmod)
	done()
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	if err := res.StrictErr(o.Strict); err != nil {
		return &Result{Depmod: &res.Report}, fmt.Errorf("stage: %w", err)
	}
	if o.NoDuplicates && len(res.Duplicates) > 0 {
		d := res.Duplicates[0]
		return &Result{Depmod: &res.Report}, fmt.Errorf("stage: module %s is at %s and %s in the tree", d.Name, d.Winner, d.Loser)
	}
	files := depmod.Map(res.Files)
	for name, data := range o.Files {
		files[name] = data
	}
	v, err := t.View(modtree.ViewOptions{Files: files, Drop: o.Drop})
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	return &Result{View: v, Depmod: &res.Report}, nil
}

// Dir stages t into the new directory dir (lib/modules/<release>),
// atomically: on any error nothing is left at dir. An existing dir is an
// error unless o.Force is set.
func Dir(ctx context.Context, t *modtree.Tree, dir string, o Options) (*Result, error) {
	res, err := View(t, o)
	if err != nil {
		return res, err
	}
	out, err := atomicfile.CreateDir(dir, o.Force)
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	defer out.Abort()
	done := o.Progress.Step("staging %d modules in %s", len(t.Modules), dir)
	err = atomicfile.CopyFS(ctx, res.View, out.Tmp, atomicfile.CopyOptions{Merge: true})
	done()
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	if err := out.Commit(); err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	return res, nil
}
