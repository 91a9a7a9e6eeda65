package merge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/pack"
	"github.com/wsl-modules/wsl-modules-action/internal/stage"

	"github.com/wsl-modules/wsl-modules-action/internal/depmod"
	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Options describe a merge: packs layered over a base into one image.
type Options struct {
	// Base is a directory (a root with lib/modules/<release>, or the
	// module tree itself) or an image (VHDX, VHD or raw; flat or nested).
	Base string
	// Packs are pack files, in any order (the result does not depend on
	// it). None: the base is re-packed with fresh depmod data.
	Packs []string
	// Out is the output .vhdx; it is written atomically.
	Out string
	// Layout of the output: flat or nested; "" keeps an image base's
	// layout (flat for a directory).
	Layout image.Layout
	// KernelRelease overrides the release read from the base (see
	// modtree.Open for the rule).
	KernelRelease string
	// Symvers is a Module.symvers file; "" uses the base's
	// build/Module.symvers when it has one.
	Symvers string
	// Prefer names the packs that win when several packs provide the same
	// module.
	Prefer []string
	// DryRun checks and plans without writing anything.
	DryRun bool
	// Force replaces an existing Out.
	Force bool
	// SourceDateEpoch is the Unix time of every timestamp in the image.
	SourceDateEpoch int64
	// Slack is the image's free space (0: none; see image.DefaultSlack).
	Slack int64
	// Progress reports the steps (may be nil).
	Progress *progress.Reporter
}

// Result describes a merge.
type Result struct {
	// Base is the base tree (closed: only its description may be read).
	Base *modtree.Tree
	// Plan is the checked placement of the packs.
	Plan *Plan
	// Packs are the opened packs, sorted by name.
	Packs []*pack.Pack
	// SymversUsed is the Module.symvers file the checks used ("" if none;
	// a path inside the base for its own build/Module.symvers).
	SymversUsed string
	// Layout is the output layout.
	Layout image.Layout
	// Record is the pack record written into the image.
	Record *pack.Record
	// Depmod is depmod's report on the merged tree (nil for a dry run).
	Depmod *depmod.Report
	// Image is the built image (nil for a dry run).
	Image *image.Result
}

// Merge layers packs over a base and writes one image: every check of
// PlanMerge runs before anything is written; the base is read in place
// (modtree.Open: a directory, or an image never extracted), shadowed stock
// modules and old depmod files are dropped, each pack goes to
// extra/<pack>/, modules.order gains the pack modules, the pack record
// (pack.RecordFile) is written, the indexes are generated for the whole
// tree (internal/stage) and the image is built atomically. On any error no
// output is left. The same inputs give the same bytes, whatever the order
// of o.Packs.
func Merge(ctx context.Context, o Options) (*Result, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	rep := o.Progress
	res := &Result{}
	var err error
	if res.Packs, err = openPacks(o.Packs, rep); err != nil {
		return nil, err
	}
	base, err := modtree.Open(ctx, o.Base, modtree.OpenOptions{Release: o.KernelRelease, Progress: rep})
	if err != nil {
		return nil, fmt.Errorf("merge: base: %w", err)
	}
	defer base.Close()
	res.Base = base
	if res.Layout, err = outputLayout(o, base); err != nil {
		return nil, err
	}
	mo, err := mergeOptions(o, base, res)
	if err != nil {
		return nil, err
	}
	done := rep.Step("checking %d packs against %s (%d modules)", len(res.Packs), base.Release, len(base.Modules))
	plan, err := PlanMerge(base, res.Packs, mo)
	done()
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	res.Plan = plan
	baseRec, _ := pack.ReadRecordFS(base.Files, o.Base)
	res.Record = makeRecord(base.Release, baseRec, plan, res.Packs)
	if o.DryRun {
		return res, nil
	}
	if err := build(ctx, o, res); err != nil {
		return nil, err
	}
	return res, nil
}

// check validates the options before anything is read.
func (o Options) check() error {
	if o.Out == "" && !o.DryRun {
		return errors.New("merge: no output file given")
	}
	switch o.Layout {
	case "", image.LayoutFlat, image.LayoutNested:
	default:
		return fmt.Errorf("merge: unknown layout %q (want flat or nested)", o.Layout)
	}
	if o.Out != "" && !o.Force && !o.DryRun {
		if _, err := os.Lstat(o.Out); err == nil {
			return fmt.Errorf("merge: %s already exists (use --force to overwrite)", o.Out)
		}
	}
	return nil
}

// openPacks reads every pack (a corrupt pack fails before the base is
// read), sorted by name.
func openPacks(paths []string, rep *progress.Reporter) ([]*pack.Pack, error) {
	done := rep.Step("reading %d packs", len(paths))
	defer done()
	var packs []*pack.Pack
	var errs []string
	for _, p := range paths {
		pk, err := pack.Open(p)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		packs = append(packs, pk)
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("merge: %s", strings.Join(errs, "\n  "))
	}
	sort.Slice(packs, func(i, j int) bool { return packs[i].Meta.Name < packs[j].Meta.Name })
	return packs, nil
}

// outputLayout is the layout asked for, else the base image's, else flat.
func outputLayout(o Options, base *modtree.Tree) (image.Layout, error) {
	l := o.Layout
	if l == "" {
		l = image.Layout(base.Source.Layout)
	}
	if l == "" {
		l = image.LayoutFlat
	}
	if base.Source.Headers != nil && l != image.LayoutNested {
		return "", fmt.Errorf("merge: base %s has linux-headers, which the flat layout cannot hold; use --layout nested", o.Base)
	}
	return l, nil
}

// mergeOptions reads the Module.symvers to check against (--symvers, else
// the base's own build/Module.symvers) and the base's pack record.
func mergeOptions(o Options, base *modtree.Tree, res *Result) (MergeOptions, error) {
	mo := MergeOptions{Prefer: o.Prefer, BaseOrigins: map[string]string{}}
	var all map[string]modtree.SymverEntry
	var err error
	switch {
	case o.Symvers != "":
		res.SymversUsed = o.Symvers
		all, err = modtree.ReadSymvers(o.Symvers)
	case base.Files != nil:
		if f, ferr := base.Files.Open(baseSymvers); ferr == nil {
			res.SymversUsed = filepath.Join(o.Base, baseSymvers)
			all, err = modtree.ParseSymvers(f, res.SymversUsed)
			f.Close()
		}
	}
	if err != nil {
		return mo, fmt.Errorf("merge: %w", err)
	}
	if all != nil {
		// Module symbols come from the modules themselves (a shadowed or
		// absent module's exports must not count).
		mo.Symvers = map[string]modtree.SymverEntry{}
		for name, e := range all {
			if e.Module == modtree.ProviderVmlinux {
				mo.Symvers[name] = e
			}
		}
	}
	rec, err := pack.ReadRecordFS(base.Files, o.Base)
	if err != nil {
		return mo, fmt.Errorf("merge: base %s: %w", o.Base, err)
	}
	for p, rp := range rec.Origins() {
		mo.BaseOrigins[p] = rp.Name
	}
	return mo, nil
}

// baseSymvers is where our images keep the kernel's Module.symvers: in
// the kernel-devel tree at build/.
const baseSymvers = "build/Module.symvers"

// build stages the merged tree and writes the image.
func build(ctx context.Context, o Options, res *Result) error {
	plan := res.Plan
	drop := map[string]bool{}
	for _, s := range plan.Shadows {
		drop[s.Stock] = true
	}
	rep := o.Progress
	rep.Printf("generating the indexes of %d modules", len(plan.Tree.Modules))
	st, err := stage.View(plan.Tree, stage.Options{NoDuplicates: true, Files: map[string][]byte{pack.RecordFile: res.Record.Encode()},
		Progress: rep})
	if st != nil {
		res.Depmod = st.Depmod
	}
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	img, err := image.Build(ctx, image.Options{Modules: st.View, Release: plan.Release, Layout: res.Layout,
		HeadersFS: res.Base.Source.Headers, Slack: o.Slack, SourceDateEpoch: o.SourceDateEpoch, Force: o.Force}, o.Out, rep)
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	res.Image = img
	return nil
}

func makeRecord(release string, baseRec *pack.Record, plan *Plan, packs []*pack.Pack) *pack.Record {
	rec := &pack.Record{Format: pack.RecordFormat, Release: release}
	kept := map[string]bool{}
	for _, p := range packs {
		kept[p.Meta.Name] = true
	}
	// Packs of an earlier merge that are not merged again stay recorded.
	if baseRec != nil {
		for _, rp := range baseRec.Packs {
			if !kept[rp.Name] {
				rec.Packs = append(rec.Packs, rp)
			}
		}
		for _, s := range baseRec.Shadows {
			if !kept[s.Pack] {
				rec.Shadows = append(rec.Shadows, s)
			}
		}
	}
	files := map[string][]string{}
	for _, a := range plan.Add {
		files[a.Pack] = append(files[a.Pack], a.Dest)
	}
	for _, p := range packs {
		rec.Packs = append(rec.Packs, pack.RecordPack{Name: p.Meta.Name, Version: p.Meta.Version, SHA256: p.SHA256, Files: files[p.Meta.Name]})
	}
	for _, s := range plan.Shadows {
		rec.Shadows = append(rec.Shadows, pack.RecordShadow{Module: s.Module, Stock: s.Stock, Pack: s.Pack, File: s.Dest})
	}
	sort.Slice(rec.Packs, func(i, j int) bool { return rec.Packs[i].Name < rec.Packs[j].Name })
	sort.Slice(rec.Shadows, func(i, j int) bool { return rec.Shadows[i].Stock < rec.Shadows[j].Stock })
	return rec
}
