package modbuild

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
)

// verify checks every installed module with the one validator: vermagic
// equals the kernel's and every needed symbol resolves, with matching
// CRCs, against Module.symvers, the stock modules or another built module.
// Modules with problems are marked failed; their dependents then fail too
// (repeated until stable). The parsed modules stay in the results
// (Entries), so nothing is parsed again to stage them.
func verify(ctx context.Context, o ModulesOptions, results []*ModuleResult) error {
	stock, err := o.Kernel.Stock(ctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	owner := map[string]*ModuleResult{}
	for _, r := range results {
		if r.Status != manifest.StatusOK {
			continue
		}
		r.Entries = nil
		for _, f := range r.Files {
			p := filepath.Join(o.ModulesDir, filepath.FromSlash(f))
			e, err := builtEntry(p, f, r.Name)
			if err != nil {
				r.fail(fmt.Sprintf("verify: %v", err))
				continue
			}
			r.Entries = append(r.Entries, e)
			owner[f] = r
		}
		if len(r.Entries) > 0 {
			r.SrcVersion = r.Entries[0].Info("srcversion")
		}
	}
	proven := o.Kernel.Meta.Mode != manifest.ModeStock
	for {
		var added []*modtree.Entry
		only := map[string]bool{}
		for _, r := range results {
			if r.Status == manifest.StatusOK {
				for _, e := range r.Entries {
					added = append(added, e)
					only[e.Path] = true
				}
			}
		}
		probs := stock.Overlay(added, nil).Validate(modtree.ValidateOptions{Vermagic: o.Kernel.Meta.Vermagic, Only: only})
		if len(probs) == 0 {
			if proven {
				return nil
			}
			// Stock mode: the CRCs must also be proven against the source;
			// modules it fails take their dependents with them.
			proven = true
			if err := proveCRCs(ctx, o, stock, results); err != nil {
				return err
			}
			continue
		}
		for _, p := range probs {
			r := owner[p.Module]
			if r.Status == manifest.StatusOK {
				r.Status = manifest.StatusFailed
			}
			r.fail("verify: " + p.String())
		}
	}
}

// builtEntry parses an installed module into an entry at path rel that
// reads its bytes from the host file p.
func builtEntry(p, rel, origin string) (*modtree.Entry, error) {
	m, err := kmodule.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return modtree.HostEntry(rel, p, m, origin)
}
