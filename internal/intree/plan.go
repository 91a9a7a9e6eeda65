package intree

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// Options are the inputs of PlanFragment.
type Options struct {
	// Src is the kernel source directory.
	Src string
	// SrcArch is the kernel's arch directory (x86, arm64): other arch/
	// directories are never built, so they are not read.
	SrcArch string
	// Fragment is the module list's config fragment.
	Fragment *kconfig.Fragment
	// Before is the stock config after olddefconfig; After the same with
	// the fragment appended, after olddefconfig.
	Before, After kconfig.Config
	// Jobs bounds the parallel file reads (0: the number of CPUs).
	Jobs int
}

// Plan is what a config fragment adds in stock mode: the options it
// changes and the in-tree directories to build as modules.
type Plan struct {
	// Options are every option the fragment changes (its own lines and
	// the options they make visible), with their new values.
	Options []Option `json:"options"`
	// Units are the directories to build, sorted by directory.
	Units []Unit `json:"units"`
	// Notes are what is worth telling (options already m, newly visible
	// values).
	Notes []string `json:"notes,omitempty"`
	// Base is the stock config the plan was made against (Options.Before;
	// not recorded).
	Base kconfig.Config `json:"-"`
}

// Option is one option the fragment changes.
type Option struct {
	// Name is CONFIG_X; Value its new value as in .config (m, or the
	// value of a newly visible string, int or hex option).
	Name  string `json:"name"`
	Value string `json:"value"`
	// Line is the fragment line that sets it (0: made visible by one).
	Line int `json:"line,omitempty"`
}

// PlanFragment finds, for every option the fragment makes m, the kbuild
// directory and objects that build it, and refuses (an *Error naming the
// option and, where there is one, the file and line) anything that could
// change the built-in kernel or a stock module: an option with no obj-
// line, one kbuild would not reach, an object also built otherwise, a use
// of the option in make text other than selecting a module, and a
// reference (IS_ENABLED, #ifdef, defined(...)) to CONFIG_X or
// CONFIG_X_MODULE in code that is not the units' own module source.
// Refusing is the safe answer whenever the tree cannot be read plainly.
func PlanFragment(ctx context.Context, o Options) (*Plan, error) {
	if o.Fragment == nil || o.Before == nil || o.After == nil {
		return nil, errors.New("intree: PlanFragment needs the fragment and both configs")
	}
	notes, err := o.Fragment.CheckResult(o.Before, o.After)
	if err != nil {
		return nil, &Error{Refusals: []Refusal{{Msg: err.Error()}}}
	}
	p := newPlanner(o)
	p.plan.Notes = append(p.plan.Notes, notes...)
	if len(p.modOpts) == 0 && len(p.opts) == 0 {
		return p.plan, nil
	}
	if p.t, err = loadTree(ctx, o.Src, o.SrcArch); err != nil {
		return nil, err
	}
	p.deriveUnits()
	if err := p.checkCode(ctx); err != nil {
		return nil, err
	}
	p.checkMakeRefs()
	p.checkSelected()
	if len(p.refusals) > 0 {
		return nil, p.error()
	}
	p.finish()
	return p.plan, nil
}

// planner is the state of one PlanFragment.
type planner struct {
	o    Options
	t    *tree
	plan *Plan
	// opts are the changed options by name; modOpts those that became m.
	opts     map[string]*Option
	modOpts  map[string]bool
	units    map[string]*unitAcc
	refusals []Refusal
	// code is the set of code files (after checkCode).
	code map[string]bool
	// reachMemo caches reach per config and directory.
	reachMemo map[string]tri
}

// newPlanner lists the options the fragment changes: every option whose
// value went from n (or absent) to something set.
func newPlanner(o Options) *planner {
	p := &planner{o: o, plan: &Plan{Options: []Option{}, Units: []Unit{}, Base: o.Before}, opts: map[string]*Option{},
		modOpts: map[string]bool{}, units: map[string]*unitAcc{}, reachMemo: map[string]tri{}}
	lines := map[string]int{}
	for _, l := range o.Fragment.Lines {
		lines[l.Name] = l.Line
		if o.Before.Get(l.Name) == "m" {
			p.plan.Notes = append(p.plan.Notes, fmt.Sprintf("%s is already m in the stock config: Microsoft's kernel ships its module", l.Name))
		}
	}
	for _, ch := range kconfig.DiffConfig(o.Before, o.After) {
		if ch.New == "" || ch.New == "n" || ch.Old != "" && ch.Old != "n" {
			continue
		}
		p.plan.Options = append(p.plan.Options, Option{Name: ch.Name, Value: ch.New, Line: lines[ch.Name]})
	}
	for i := range p.plan.Options {
		opt := &p.plan.Options[i]
		p.opts[opt.Name] = opt
		if opt.Value == "m" {
			p.modOpts[opt.Name] = true
		}
	}
	return p
}

// checkCode scans the code for references to the options and refuses
// those outside the units' own sources.
func (p *planner) checkCode(ctx context.Context) error {
	want := map[string]bool{}
	for n := range p.opts {
		want[n] = true
		if p.modOpts[n] {
			want[n+"_MODULE"] = true
		}
	}
	code := make(map[string]bool, len(p.t.codeFiles))
	bases := map[string]bool{}
	for _, f := range p.t.codeFiles {
		code[f] = true
	}
	p.code = code
	for dir := range p.units {
		for _, f := range p.t.codeFiles {
			if strings.HasPrefix(f, dir+"/") {
				bases[path.Base(f)] = true
			}
		}
	}
	scan, err := p.t.scanCode(ctx, want, bases, p.o.Jobs)
	if err != nil {
		return err
	}
	own := p.ownFiles(scan, code)
	byLine := map[string][]string{}
	var order []string
	for _, h := range scan.hits {
		if own[h.file] {
			continue
		}
		opt := h.token
		if p.opts[opt] == nil {
			opt = strings.TrimSuffix(opt, "_MODULE")
		}
		k := fmt.Sprintf("%s\x00%s:%d", opt, h.file, h.line)
		if _, ok := byLine[k]; !ok {
			order = append(order, k)
		}
		byLine[k] = append(byLine[k], h.token)
	}
	for _, k := range order {
		opt, where, _ := strings.Cut(k, "\x00")
		p.refuseAt(opt, where, "%s referenced there, outside the sources of the modules built for it: that code may be built into the kernel (or a stock module), and %s=m would change it",
			strings.Join(byLine[k], " and "), opt)
		p.refusals[len(p.refusals)-1].code = true
	}
	return nil
}

// checkSelected refuses fragment options no unit builds.
func (p *planner) checkSelected() {
	sel := map[string]bool{}
	for _, u := range p.units {
		for o := range u.selected {
			sel[o] = true
		}
	}
	for _, opt := range p.plan.Options {
		if opt.Line > 0 && opt.Value == "m" && !sel[opt.Name] && !p.refused(opt.Name) {
			p.refuseOpt(opt.Name, "no kbuild file builds a module for it (no obj-$(%s) += <object or directory> line that takes effect), so stock mode has nothing to build", opt.Name)
		}
	}
}

// finish turns the units into the plan's, sorted and named.
func (p *planner) finish() {
	var dirs []string
	for d := range p.units {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		u := p.units[d]
		pu := Unit{Name: UnitName(d), Dir: d, Whole: u.whole, Options: p.plan.Options}
		for o := range u.objects {
			pu.Objects = append(pu.Objects, o)
		}
		if !u.whole {
			for _, f := range p.sourcesOf(d, pu.Objects, p.code) {
				pu.Sources = append(pu.Sources, strings.TrimPrefix(f, d+"/"))
			}
			sort.Strings(pu.Sources)
		}
		for o := range u.selected {
			pu.Selected = append(pu.Selected, o)
		}
		sort.Strings(pu.Objects)
		sort.Strings(pu.Selected)
		p.plan.Units = append(p.plan.Units, pu)
	}
	for _, o := range p.plan.Options {
		if o.Value != "m" {
			p.plan.Notes = append(p.plan.Notes, fmt.Sprintf("%s=%s (made visible by the fragment) is passed to the modules' builds", o.Name, o.Value))
		}
	}
}
