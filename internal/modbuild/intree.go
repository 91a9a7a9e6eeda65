package modbuild

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
)

// addInTree adds a build per in-tree unit after the listed modules. A
// unit whose name a listed module has is an error.
func (b *modulesBuild) addInTree() error {
	if len(b.o.InTree) == 0 {
		return nil
	}
	if b.o.KernelSource == "" {
		return fmt.Errorf("modules: in-tree modules need the kernel source (ModulesOptions.KernelSource)")
	}
	names := map[string]bool{}
	for _, m := range b.mods {
		names[m.Name] = true
	}
	for i := range b.o.InTree {
		u := &b.o.InTree[i]
		if err := u.Validate(); err != nil {
			return fmt.Errorf("modules: %w", err)
		}
		if names[u.Name] {
			return fmt.Errorf("modules: the in-tree build of %s is named %s, like another module of the list or another in-tree directory", u.Dir, u.Name)
		}
		names[u.Name] = true
		b.mods = append(b.mods, &modlist.Module{Name: u.Name})
	}
	return nil
}

// prepareInTree copies the unit's directory of the kernel source into
// the build copy, records its source and options, writes the unit's
// build files (intree.Unit.Prepare) and scans its sources' symbols.
func prepareInTree(ctx context.Context, o ModulesOptions, r *ModuleResult) error {
	u := r.unit
	src := filepath.Join(o.KernelSource, filepath.FromSlash(u.Dir))
	if err := atomicfile.CopyTree(ctx, src, r.dir, atomicfile.CopyOptions{}); err != nil {
		return fmt.Errorf("copying %s of the kernel source: %w", u.Dir, err)
	}
	r.Source = manifest.Source{Kind: "in-tree", Path: u.Dir}
	if d, err := digest.Tree(ctx, r.dir); err == nil {
		r.Source.SHA256 = d
	}
	r.Config = u.ConfigLines()
	if err := u.Prepare(r.dir); err != nil {
		return err
	}
	var only map[string]bool
	if !u.Whole {
		// A file unit's directory holds other objects (built in, stock
		// modules): only its own sources say what it exports and uses.
		only = map[string]bool{}
		for _, f := range u.Sources {
			only[filepath.Join(r.dir, filepath.FromSlash(f))] = true
		}
	}
	return scanSymbols(r, only)
}

// inTreeFiles returns the modules an in-tree build produced, to install
// under kernel/<dir>/: a file unit's objects' modules (each must exist),
// or every module a whole unit built. A module the stock tree has at that
// path, or one named like a stock or built-in module, is an error.
func inTreeFiles(ctx context.Context, o ModulesOptions, r *ModuleResult) ([]builtFile, error) {
	u := r.unit
	rels := u.Modules()
	for _, w := range rels {
		if _, err := os.Stat(filepath.Join(r.dir, filepath.FromSlash(w))); err != nil {
			return nil, fmt.Errorf("the build of %s produced no %s", u.Dir, w)
		}
	}
	if u.Whole {
		err := filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() && strings.HasSuffix(p, ".ko") {
				rel, _ := filepath.Rel(r.dir, p)
				rels = append(rels, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("the modules of %s: %w", u.Dir, err)
		}
	}
	stock, err := o.Kernel.Stock(ctx)
	if err != nil {
		return nil, err
	}
	names := stockNames(stock.Modules, stock.Builtin)
	var out []builtFile
	for _, rel := range rels {
		dst := u.InstallPath(rel)
		if stock.Entry(dst) != nil {
			return nil, fmt.Errorf("%s is a stock module; the in-tree build of %s would replace it", dst, u.Dir)
		}
		if n := kmodule.ModName(rel); names[n] != "" {
			return nil, fmt.Errorf("the in-tree build of %s makes module %s, and the stock kernel already has one of that name (%s)", u.Dir, n, names[n])
		}
		out = append(out, builtFile{from: filepath.Join(r.dir, filepath.FromSlash(rel)), rel: dst, strip: true})
	}
	return out, nil
}

// stockNames maps the stock tree's module names (and those of
// modules.builtin) to their paths.
func stockNames(mods []*modtree.Entry, builtin []byte) map[string]string {
	out := map[string]string{}
	for _, e := range mods {
		out[kmodule.ModName(e.Path)] = e.Path
	}
	for _, l := range bytes.Split(builtin, []byte("\n")) {
		if p := strings.TrimSpace(string(l)); p != "" {
			out[kmodule.ModName(p)] = p + " (built in)"
		}
	}
	return out
}
