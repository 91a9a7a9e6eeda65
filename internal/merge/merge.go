package merge

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/pack"

	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
)

// ErrCheck is wrapped by the error Plan returns when packs do not fit the
// base.
var ErrCheck = errors.New("pack check failed")

// MergeOptions control Plan.
type MergeOptions struct {
	// Prefer names packs that win when several packs provide the same
	// module name.
	Prefer []string
	// Symvers is the kernel's Module.symvers. Without it, vmlinux symbols
	// are known only through the base modules' __versions tables, and a
	// symbol found nowhere is a warning instead of an error.
	Symvers map[string]modtree.SymverEntry
	// Arch is the base's architecture; empty means: from the base modules.
	Arch string
	// BaseOrigins maps base module paths to the pack they came from in an
	// earlier merge (see Record). Base modules of a pack that is merged
	// again are replaced by the new version of the pack.
	BaseOrigins map[string]string
}

// Placement is one pack module placed in the merged tree.
type Placement struct {
	Pack string
	// File is the path inside the pack; Dest is the path in the merged
	// tree (extra/<pack>/...), relative to lib/modules/<release>.
	File, Dest string
	Data       []byte
	Module     *kmodule.Module
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
	// Tree is the combined module tree (base minus shadowed, plus packs).
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

// BaseArch returns the architecture of a tree's modules.
func BaseArch(t *modtree.Tree) string {
	for _, e := range t.Modules {
		return pack.ArchOf(e.Machine)
	}
	return ""
}

// BaseVermagic returns the vermagic shared by a tree's modules (the most
// common one).
func BaseVermagic(t *modtree.Tree) string {
	count := map[string]int{}
	best := ""
	for _, e := range t.Modules {
		v := e.Vermagic()
		count[v]++
		if count[v] > count[best] || (count[v] == count[best] && v < best) {
			best = v
		}
	}
	return best
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
		arch = BaseArch(base)
	}
	plan := &Plan{Release: base.Release, Arch: arch, Vermagic: BaseVermagic(base)}
	var errs []string
	prefer := map[string]bool{}
	for _, p := range o.Prefer {
		prefer[p] = true
	}
	seenPack := map[string]string{}
	unique := packs[:0]
	for _, p := range packs {
		if prev, dup := seenPack[p.Meta.Name]; dup {
			errs = append(errs, fmt.Sprintf("pack %s: given twice (%s and %s)", p.Meta.Name, prev, p.Source))
			continue
		}
		unique = append(unique, p)
		seenPack[p.Meta.Name] = p.Source
		if p.Meta.KernelRelease != base.Release {
			errs = append(errs, fmt.Sprintf("pack %s: built for kernel release %s, base is %s", p.Meta.Name, p.Meta.KernelRelease, base.Release))
		}
		if arch != "" && p.Meta.Arch != arch {
			errs = append(errs, fmt.Sprintf("pack %s: arch %s, base is %s", p.Meta.Name, p.Meta.Arch, arch))
		}
	}
	packs = unique
	for _, p := range o.Prefer {
		if _, ok := seenPack[p]; !ok {
			errs = append(errs, fmt.Sprintf("--prefer %s: no such pack", p))
		}
	}

	// Module names provided by several packs.
	byName := map[string][]Placement{}
	for _, p := range packs {
		for _, md := range p.Meta.Modules {
			rel := strings.TrimPrefix(md.File, p.Meta.Name+"/")
			pl := Placement{Pack: p.Meta.Name, File: md.File, Dest: "extra/" + p.Meta.Name + "/" + rel,
				Data: p.Files[md.File], Module: p.Parsed[md.File]}
			byName[md.Name] = append(byName[md.Name], pl)
		}
	}
	var names []string
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pls := byName[n]
		if len(pls) == 1 {
			plan.Add = append(plan.Add, pls[0])
			continue
		}
		var winners []Placement
		for _, pl := range pls {
			if prefer[pl.Pack] {
				winners = append(winners, pl)
			}
		}
		if len(winners) != 1 {
			var who []string
			for _, pl := range pls {
				who = append(who, pl.Pack+" ("+pl.File+")")
			}
			errs = append(errs, fmt.Sprintf("module %s is provided by several packs: %s; choose one with --prefer PACK", n, strings.Join(who, ", ")))
			continue
		}
		plan.Add = append(plan.Add, winners[0])
		for _, pl := range pls {
			if pl.Pack != winners[0].Pack {
				plan.Dropped = append(plan.Dropped, pl)
			}
		}
	}
	sort.Slice(plan.Add, func(i, j int) bool { return plan.Add[i].Dest < plan.Add[j].Dest })

	// Base modules of packs merged again, shadowed stock modules and the
	// combined tree.
	added := map[string]Placement{}
	only := map[string]bool{}
	for _, a := range plan.Add {
		added[a.Module.Name] = a
		only[a.Dest] = true
	}
	combined := &modtree.Tree{Release: base.Release}
	var remaining []*modtree.Entry
	for _, e := range base.Modules {
		if p, ok := o.BaseOrigins[e.Path]; ok {
			if _, again := seenPack[p]; again {
				plan.Replaced = append(plan.Replaced, e.Path)
				continue
			}
		}
		if a, ok := added[e.Name]; ok {
			plan.Shadows = append(plan.Shadows, Shadow{Pack: a.Pack, Module: e.Name, Dest: a.Dest, Stock: e.Path})
			continue
		}
		remaining = append(remaining, e)
	}
	combined.Modules = append(combined.Modules, remaining...)
	for _, a := range plan.Add {
		combined.Modules = append(combined.Modules, &modtree.Entry{Path: a.Dest, Module: a.Module, Origin: a.Pack})
	}
	sort.Slice(combined.Modules, func(i, j int) bool { return combined.Modules[i].Path < combined.Modules[j].Path })
	plan.Tree = combined

	// Symbols the packs export: clashes with vmlinux and other modules, and
	// the base modules that import them (their CRCs must agree too).
	packExports := map[string]Placement{}
	for _, a := range plan.Add {
		for _, x := range a.Module.Exports {
			if prev, dup := packExports[x.Name]; dup {
				errs = append(errs, fmt.Sprintf("pack %s: %s exports symbol %s, which pack %s (%s) exports too", a.Pack, a.Dest, x.Name, prev.Pack, prev.Dest))
				continue
			}
			packExports[x.Name] = a
			if sv, ok := o.Symvers[x.Name]; ok && sv.Module == "vmlinux" {
				errs = append(errs, fmt.Sprintf("pack %s: %s exports symbol %s, which the kernel (vmlinux) already exports", a.Pack, a.Dest, x.Name))
			}
		}
	}
	for _, e := range remaining {
		for _, x := range e.Exports {
			if a, ok := packExports[x.Name]; ok {
				plan.Warnings = append(plan.Warnings, fmt.Sprintf("pack %s: %s exports symbol %s, which %s exports too: the two cannot be loaded together", a.Pack, a.Dest, x.Name, e.Path))
			}
		}
		for _, n := range e.Needs {
			if _, ok := packExports[n.Name]; ok && !n.Weak {
				only[e.Path] = true
				break
			}
		}
	}

	strict := o.Symvers != nil
	combined.Symvers = o.Symvers
	if !strict {
		// vmlinux symbols as the stock modules import them.
		combined.Symvers = map[string]modtree.SymverEntry{}
		exported := map[string]bool{}
		for _, e := range base.Modules {
			for _, s := range e.Exports {
				exported[s.Name] = true
			}
		}
		for _, e := range base.Modules {
			for _, n := range e.Needs {
				if n.HasCRC && !exported[n.Name] {
					combined.Symvers[n.Name] = modtree.SymverEntry{CRC: n.CRC, Module: "vmlinux"}
				}
			}
		}
	}
	for _, pr := range combined.Validate(modtree.ValidateOptions{Vermagic: plan.Vermagic, Only: only}) {
		var msg string
		if pr.Origin != "" {
			msg = "pack " + pr.String()
		} else {
			// A base module importing a symbol a pack now provides.
			var via []string
			for _, n := range lookupNeeds(combined, pr.Module) {
				if a, ok := packExports[n]; ok {
					via = append(via, a.Pack)
				}
			}
			msg = fmt.Sprintf("base module %s (it uses pack %s)", pr.String(), strings.Join(dedup(via), ", "))
			if pr.Symbol != "" {
				if a, ok := packExports[pr.Symbol]; ok {
					msg = fmt.Sprintf("pack %s: %s exports symbol %s with a CRC the base module %s does not expect (%s)", a.Pack, a.Dest, pr.Symbol, pr.Module, pr.Detail)
				}
			}
		}
		if !strict {
			msg = strings.Replace(msg, "Module.symvers has", "the stock modules import it with", 1)
		}
		if pr.Kind == modtree.Unresolved && !strict {
			plan.Warnings = append(plan.Warnings, msg+" (not exported by any module, and no stock module imports it from the kernel; give Module.symvers to verify)")
			continue
		}
		errs = append(errs, msg)
	}
	sort.Strings(plan.Warnings)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrCheck, strings.Join(errs, "\n  "))
	}
	combined.Symvers = o.Symvers
	return plan, nil
}

// lookupNeeds returns the needed symbol names of the module at path p.
func lookupNeeds(t *modtree.Tree, p string) []string {
	for _, e := range t.Modules {
		if e.Path == p {
			var out []string
			for _, n := range e.Needs {
				out = append(out, n.Name)
			}
			return out
		}
	}
	return nil
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
