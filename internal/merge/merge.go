package merge

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/pack"
)

// ErrCheck is wrapped by the error Plan returns when packs do not fit the
// base.
var ErrCheck = errors.New("pack check failed")

// MergeOptions control PlanMerge.
type MergeOptions struct {
	// Prefer names packs that win when several packs provide the same
	// module name.
	Prefer []string
	// Symvers is the kernel's Module.symvers (vmlinux lines). Without it,
	// vmlinux symbols are known only through the base modules' __versions
	// tables, and a symbol found nowhere is a warning instead of an error.
	Symvers map[string]modtree.SymverEntry
	// Arch is the base's architecture; empty means: from the base modules.
	Arch string
	// BaseOrigins maps base module paths to the pack they came from in an
	// earlier merge (see pack.Record). Base modules of a pack that is
	// merged again are replaced by the new version of the pack.
	BaseOrigins map[string]string
}

// Placement is one pack module placed in the merged tree.
type Placement struct {
	Pack string
	// File is the path inside the pack; Dest is the path in the merged
	// tree (extra/<pack>/...), relative to lib/modules/<release>.
	File, Dest string
	// Entry is the module, at Dest.
	Entry *modtree.Entry
}

// Shadow records a pack module that overrides a stock module of the same
// name (allowed, and reported).
type Shadow struct {
	Pack, Module, Dest, Stock string
}

// Plan is the checked result of layering packs over a base.
type Plan struct {
	Release, Arch, Vermagic string
	// Add lists the pack modules to add, sorted by Dest.
	Add []Placement
	// Shadows lists stock modules overridden by pack modules.
	Shadows []Shadow
	// Dropped lists pack modules that lost to a --prefer'd pack.
	Dropped []Placement
	// Replaced lists base modules (paths) from an earlier merge of a pack
	// that is merged again; they are removed.
	Replaced []string
	// Warnings are findings that do not stop the merge: symbols that could
	// not be verified (no Module.symvers) and symbols exported twice.
	Warnings []string
	// Tree is the combined module tree (base minus shadowed and replaced,
	// plus packs), with the base's other files and modules.order updated.
	Tree *modtree.Tree
}

// Origin returns the pack providing the module at dest, or "" for base.
func (p *Plan) Origin(dest string) string {
	for _, a := range p.Add {
		if a.Dest == dest {
			return a.Pack
		}
	}
	return ""
}

// planner collects the problems of one PlanMerge.
type planner struct {
	base  *modtree.Tree
	o     MergeOptions
	plan  *Plan
	errs  []string
	packs map[string]string // name -> source
}

func (pl *planner) errorf(format string, a ...any) {
	pl.errs = append(pl.errs, fmt.Sprintf(format, a...))
}

// PlanMerge checks packs against base and each other and decides where each
// module goes. Nothing is written. All problems are collected and returned
// together in one error wrapping ErrCheck, each naming pack, module and
// symbol. The result does not depend on the order of packs.
func PlanMerge(base *modtree.Tree, packs []*pack.Pack, o MergeOptions) (*Plan, error) {
	packs = append([]*pack.Pack(nil), packs...)
	sort.Slice(packs, func(i, j int) bool { return packs[i].Meta.Name < packs[j].Meta.Name })
	arch := o.Arch
	if arch == "" {
		arch = base.Arch()
	}
	pl := &planner{base: base, o: o, plan: &Plan{Release: base.Release, Arch: arch, Vermagic: base.Vermagic()}, packs: map[string]string{}}
	packs = pl.checkPacks(packs)
	pl.place(packs)
	remaining := pl.combine()
	packExports := pl.checkExports(remaining)
	pl.validate(packExports)
	sort.Strings(pl.plan.Warnings)
	if len(pl.errs) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrCheck, strings.Join(pl.errs, "\n  "))
	}
	pl.plan.Tree.Symvers = o.Symvers
	return pl.plan, nil
}

// checkPacks refuses packs given twice, for another release or arch, and
// unknown --prefer names; it returns the packs to place.
func (pl *planner) checkPacks(packs []*pack.Pack) []*pack.Pack {
	var unique []*pack.Pack
	for _, p := range packs {
		if prev, dup := pl.packs[p.Meta.Name]; dup {
			pl.errorf("pack %s: given twice (%s and %s)", p.Meta.Name, prev, p.Source)
			continue
		}
		unique = append(unique, p)
		pl.packs[p.Meta.Name] = p.Source
		if p.Meta.KernelRelease != pl.base.Release {
			pl.errorf("pack %s: built for kernel release %s, base is %s", p.Meta.Name, p.Meta.KernelRelease, pl.base.Release)
		}
		if pl.plan.Arch != "" && p.Meta.Arch != pl.plan.Arch {
			pl.errorf("pack %s: arch %s, base is %s", p.Meta.Name, p.Meta.Arch, pl.plan.Arch)
		}
	}
	for _, p := range pl.o.Prefer {
		if _, ok := pl.packs[p]; !ok {
			pl.errorf("--prefer %s: no such pack", p)
		}
	}
	return unique
}

// place decides each pack module's destination, resolving module names
// provided by several packs with --prefer.
func (pl *planner) place(packs []*pack.Pack) {
	prefer := map[string]bool{}
	for _, p := range pl.o.Prefer {
		prefer[p] = true
	}
	byName := map[string][]Placement{}
	for _, p := range packs {
		for _, e := range modtree.FromPack(p).Modules {
			file := p.Meta.Name + "/" + strings.TrimPrefix(e.Path, modtree.PackDir(p.Meta.Name))
			byName[e.Name] = append(byName[e.Name], Placement{Pack: p.Meta.Name, File: file, Dest: e.Path, Entry: e})
		}
	}
	for _, n := range slices.Sorted(maps.Keys(byName)) {
		pls := byName[n]
		var winners []Placement
		for _, x := range pls {
			if len(pls) == 1 || prefer[x.Pack] {
				winners = append(winners, x)
			}
		}
		if len(winners) != 1 {
			var who []string
			for _, x := range pls {
				who = append(who, x.Pack+" ("+x.File+")")
			}
			pl.errorf("module %s is provided by several packs: %s; choose one with --prefer PACK", n, strings.Join(who, ", "))
			continue
		}
		pl.plan.Add = append(pl.plan.Add, winners[0])
		for _, x := range pls {
			if x.Pack != winners[0].Pack {
				pl.plan.Dropped = append(pl.plan.Dropped, x)
			}
		}
	}
	sort.Slice(pl.plan.Add, func(i, j int) bool { return pl.plan.Add[i].Dest < pl.plan.Add[j].Dest })
}

// combine builds the merged tree: base modules of packs merged again are
// replaced, stock modules of the same name as a pack module are shadowed.
// It returns the base modules that stay.
func (pl *planner) combine() []*modtree.Entry {
	added := map[string]Placement{}
	var adds []*modtree.Entry
	var addPaths []string
	for _, a := range pl.plan.Add {
		added[a.Entry.Name] = a
		adds = append(adds, a.Entry)
		addPaths = append(addPaths, a.Dest)
	}
	drop := map[string]bool{}
	var remaining []*modtree.Entry
	for _, e := range pl.base.Modules {
		if p, ok := pl.o.BaseOrigins[e.Path]; ok {
			if _, again := pl.packs[p]; again {
				pl.plan.Replaced = append(pl.plan.Replaced, e.Path)
				drop[e.Path] = true
				continue
			}
		}
		if a, ok := added[e.Name]; ok {
			pl.plan.Shadows = append(pl.plan.Shadows, Shadow{Pack: a.Pack, Module: e.Name, Dest: a.Dest, Stock: e.Path})
			drop[e.Path] = true
			continue
		}
		remaining = append(remaining, e)
	}
	t := pl.base.Overlay(adds, drop)
	if pl.base.Order != nil || len(addPaths) > 0 {
		t.Order = modtree.AppendOrder(pl.base.Order, addPaths, drop)
	}
	pl.plan.Tree = t
	return remaining
}

// checkExports refuses symbols exported by two packs or by a pack and
// vmlinux, and warns about pack symbols a remaining base module exports
// too. It returns the pack exports by symbol.
func (pl *planner) checkExports(remaining []*modtree.Entry) map[string]Placement {
	packExports := map[string]Placement{}
	for _, a := range pl.plan.Add {
		for _, x := range a.Entry.Exports {
			if prev, dup := packExports[x.Name]; dup {
				pl.errorf("pack %s: %s exports symbol %s, which pack %s (%s) exports too", a.Pack, a.Dest, x.Name, prev.Pack, prev.Dest)
				continue
			}
			packExports[x.Name] = a
			if sv, ok := pl.o.Symvers[x.Name]; ok && sv.Module == modtree.ProviderVmlinux {
				pl.errorf("pack %s: %s exports symbol %s, which the kernel (vmlinux) already exports", a.Pack, a.Dest, x.Name)
			}
		}
	}
	for _, e := range remaining {
		for _, x := range e.Exports {
			if a, ok := packExports[x.Name]; ok {
				pl.plan.Warnings = append(pl.plan.Warnings, fmt.Sprintf("pack %s: %s exports symbol %s, which %s exports too: the two cannot be loaded together", a.Pack, a.Dest, x.Name, e.Path))
			}
		}
	}
	return packExports
}

// validate checks the pack modules and the base modules that use them
// with the one validator. Without Module.symvers, the vmlinux symbols are
// those the stock modules import, and unknown symbols are warnings.
func (pl *planner) validate(packExports map[string]Placement) {
	t := pl.plan.Tree
	only := map[string]bool{}
	for _, a := range pl.plan.Add {
		only[a.Dest] = true
	}
	for _, e := range t.Modules {
		for _, n := range e.Needs {
			if _, ok := packExports[n.Name]; ok && !n.Weak && e.Origin == "" {
				only[e.Path] = true
			}
		}
	}
	strict := pl.o.Symvers != nil
	t.Symvers = pl.o.Symvers
	if !strict {
		t.Symvers = importedSymbols(pl.base)
	}
	for _, pr := range t.Validate(modtree.ValidateOptions{Vermagic: pl.plan.Vermagic, Only: only}) {
		msg := pl.describe(pr, packExports, strict)
		if pr.Kind == modtree.Unresolved && !strict {
			pl.plan.Warnings = append(pl.plan.Warnings, msg+" (not exported by any module, and no stock module imports it from the kernel; give Module.symvers to verify)")
			continue
		}
		pl.errs = append(pl.errs, msg)
	}
}

// importedSymbols returns the vmlinux symbols as the base modules import
// them (with their CRCs): what is known of vmlinux without Module.symvers.
func importedSymbols(base *modtree.Tree) map[string]modtree.SymverEntry {
	exported := map[string]bool{}
	for _, e := range base.Modules {
		for _, s := range e.Exports {
			exported[s.Name] = true
		}
	}
	out := map[string]modtree.SymverEntry{}
	for _, e := range base.Modules {
		for _, n := range e.Needs {
			if n.HasCRC && !exported[n.Name] {
				out[n.Name] = modtree.SymverEntry{CRC: n.CRC, Module: modtree.ProviderVmlinux}
			}
		}
	}
	return out
}

// describe words a problem for the merge's report.
func (pl *planner) describe(pr modtree.Problem, packExports map[string]Placement, strict bool) string {
	text := pr.String()
	if pr.Kind == modtree.CRCMismatch && pr.Provider == modtree.ProviderVmlinux {
		from := "Module.symvers"
		if !strict {
			from = "the stock modules import it with"
		} else {
			from += " has"
		}
		text = fmt.Sprintf("%s: %s disagrees about version of symbol %s (module has %s, %s %s)", pr.Origin, pr.Module, pr.Symbol, pr.Have, from, pr.Want)
		if pr.Origin == "" {
			text = strings.TrimPrefix(text, ": ")
		}
	}
	if pr.Origin != "" {
		return "pack " + text
	}
	// A base module importing a symbol a pack now provides.
	if a, ok := packExports[pr.Symbol]; ok && pr.Kind == modtree.CRCMismatch {
		return fmt.Sprintf("pack %s: %s exports symbol %s with a CRC the base module %s does not expect (module has %s, provider has %s)", a.Pack, a.Dest, pr.Symbol, pr.Module, pr.Have, pr.Want)
	}
	var via []string
	if e := pl.plan.Tree.Entry(pr.Module); e != nil {
		for _, n := range e.Needs {
			if a, ok := packExports[n.Name]; ok {
				via = append(via, a.Pack)
			}
		}
	}
	return fmt.Sprintf("base module %s (it uses pack %s)", text, strings.Join(dedup(via), ", "))
}

func dedup(s []string) []string {
	sort.Strings(s)
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
