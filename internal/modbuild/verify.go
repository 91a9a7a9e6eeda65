package modbuild

import (
	"fmt"
	"path/filepath"
	"sort"

	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
)

// verify checks every installed module: vermagic equals the kernel's and
// every needed symbol resolves, with matching CRCs, against Module.symvers,
// the stock modules or another built module. Modules with problems are
// marked failed; their dependents then fail too (repeated until stable).
func verify(o ModulesOptions, results []*ModuleResult) error {
	stock, err := modtree.LoadDir(o.Kernel.ModulesDir(), o.Kernel.Meta.Release)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	symvers, err := modtree.ReadSymvers(o.Kernel.Symvers())
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	built := map[string]*modtree.Entry{}
	owner := map[string]*ModuleResult{}
	for _, r := range results {
		if r.Status != manifest.StatusOK {
			continue
		}
		for _, f := range r.Files {
			m, err := kmodule.ReadFile(filepath.Join(o.ModulesDir, filepath.FromSlash(f)))
			if err != nil {
				r.fail(fmt.Sprintf("verify: %v", err))
				continue
			}
			built[f] = &modtree.Entry{Path: f, Module: m, Origin: r.Name}
			owner[f] = r
		}
		if len(r.Files) > 0 {
			if m := built[r.Files[0]]; m != nil {
				r.SrcVersion = m.Info("srcversion")
			}
		}
	}
	for {
		t := &modtree.Tree{Release: o.Kernel.Meta.Release, Modules: append([]*modtree.Entry{}, stock.Modules...), Symvers: symvers}
		only := map[string]bool{}
		for f, e := range built {
			if owner[f].Status == manifest.StatusOK {
				t.Modules = append(t.Modules, e)
				only[f] = true
			}
		}
		sort.Slice(t.Modules, func(i, j int) bool { return t.Modules[i].Path < t.Modules[j].Path })
		probs := t.Validate(modtree.ValidateOptions{Vermagic: o.Kernel.Meta.Vermagic, Only: only})
		if len(probs) == 0 {
			return nil
		}
		for _, p := range probs {
			r := owner[p.Module]
			msg := "verify: " + p.String()
			if r.Status == manifest.StatusOK {
				r.Status = manifest.StatusFailed
			}
			r.fail(msg)
		}
	}
}
