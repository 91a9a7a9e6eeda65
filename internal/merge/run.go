package merge

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/pack"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
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
	// OpenBase for the rule).
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
	// TempDir holds temporary files ("" = the directory of Out, so that
	// hard links to a directory base work; os.TempDir() for dry runs).
	TempDir string
	// Progress reports the steps (may be nil).
	Progress *progress.Reporter
}

// Result describes a merge.
type Result struct {
	// Base describes the base (its temporary files are already removed).
	Base *Base
	// Plan is the checked placement of the packs.
	Plan *Plan
	// Packs are the opened packs, sorted by name.
	Packs []*pack.Pack
	// SymversUsed is the Module.symvers file the checks used ("" if none).
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

// depmodOutputs are the files depmod writes, which merge regenerates.
var depmodOutputs = depmod.OutputFiles

// Merge layers packs over a base and writes one image: every check of
// PlanMerge runs before anything is written; then the base tree is staged
// in a temporary directory (hard links where possible), shadowed stock
// modules and old depmod files are dropped, each pack goes to
// extra/<pack>/, modules.order gains the pack modules, the pack record
// (RecordFile) is written, depmod runs over the whole tree and the image
// is built atomically. On any error no output is left. The same inputs
// give the same bytes, whatever the order of o.Packs.
func Merge(ctx context.Context, o Options) (*Result, error) {
	if o.Out == "" && !o.DryRun {
		return nil, errors.New("merge: no output file given")
	}
	switch o.Layout {
	case "", image.LayoutFlat, image.LayoutNested:
	default:
		return nil, fmt.Errorf("merge: unknown layout %q (want flat or nested)", o.Layout)
	}
	if o.Out != "" && !o.Force && !o.DryRun {
		if _, err := os.Lstat(o.Out); err == nil {
			return nil, fmt.Errorf("merge: %s already exists (use --force to overwrite)", o.Out)
		}
	}
	rep := o.Progress
	res := &Result{}

	// Packs first: a corrupt pack should fail before a base is extracted.
	done := rep.Step("reading %d packs", len(o.Packs))
	var errs []string
	for _, p := range o.Packs {
		pk, err := pack.Open(p)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		res.Packs = append(res.Packs, pk)
	}
	done()
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("merge: %s", strings.Join(errs, "\n  "))
	}
	sort.Slice(res.Packs, func(i, j int) bool { return res.Packs[i].Meta.Name < res.Packs[j].Meta.Name })

	tmpParent := o.TempDir
	if tmpParent == "" && !o.DryRun {
		tmpParent = filepath.Dir(o.Out)
	}
	base, err := OpenBase(ctx, o.Base, BaseOptions{Release: o.KernelRelease, TempDir: tmpParent, Progress: rep})
	if err != nil {
		return nil, err
	}
	defer base.Close()
	res.Base = base

	res.Layout = o.Layout
	if res.Layout == "" {
		res.Layout = base.Layout
	}
	if res.Layout == "" {
		res.Layout = image.LayoutFlat
	}
	if base.Headers != "" && res.Layout != image.LayoutNested {
		return nil, fmt.Errorf("merge: base %s has linux-headers, which the flat layout cannot hold; use --layout nested", o.Base)
	}

	res.SymversUsed = o.Symvers
	if res.SymversUsed == "" {
		res.SymversUsed = base.BaseSymvers()
	}
	mo := MergeOptions{Prefer: o.Prefer, BaseOrigins: map[string]string{}}
	if res.SymversUsed != "" {
		sv, err := modtree.ReadSymvers(res.SymversUsed)
		if err != nil {
			return nil, fmt.Errorf("merge: %w", err)
		}
		// Module symbols come from the modules themselves (a shadowed
		// or absent module's exports must not count).
		mo.Symvers = map[string]modtree.SymverEntry{}
		for name, e := range sv {
			if e.Module == "vmlinux" {
				mo.Symvers[name] = e
			}
		}
	}
	for path, p := range base.Record.Origins() {
		mo.BaseOrigins[path] = p.Name
	}
	done = rep.Step("checking %d packs against %s (%d modules)", len(res.Packs), base.Release, len(base.Tree.Modules))
	plan, err := PlanMerge(base.Tree, res.Packs, mo)
	done()
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	res.Plan = plan
	res.Record = makeRecord(base, plan, res.Packs)
	if o.DryRun {
		return res, nil
	}

	// Stage.
	stageRoot, err := os.MkdirTemp(tmpParent, ".wsl-modules-merge-*")
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	defer os.RemoveAll(stageRoot)
	mdir := filepath.Join(stageRoot, "lib", "modules", base.Release)
	if err := os.MkdirAll(filepath.Dir(mdir), 0o755); err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	done = rep.Step("staging the merged tree")
	err = stage(ctx, base, plan, res.Record, mdir)
	done()
	if err != nil {
		return nil, err
	}
	rep.Printf("running depmod over %d modules", len(plan.Tree.Modules))
	dr, err := depmod.Run(ctx, depmod.Options{BaseDir: stageRoot, Release: base.Release, Symvers: res.SymversUsed, Progress: rep})
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	res.Depmod = dr
	if len(dr.Duplicates) > 0 {
		d := dr.Duplicates[0]
		return nil, fmt.Errorf("merge: module %s is at %s and %s in the merged tree", d.Name, d.Winner, d.Loser)
	}
	img, err := image.Build(ctx, image.Options{
		Source: stageRoot, Release: base.Release, Layout: res.Layout, Headers: base.Headers,
		Slack: o.Slack, SourceDateEpoch: o.SourceDateEpoch, Force: o.Force,
	}, o.Out, rep)
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	res.Image = img
	return res, nil
}

func makeRecord(base *Base, plan *Plan, packs []*pack.Pack) *pack.Record {
	rec := &pack.Record{Format: pack.RecordFormat, Release: base.Release}
	kept := map[string]bool{}
	for _, p := range packs {
		kept[p.Meta.Name] = true
	}
	// Packs of an earlier merge that are not merged again stay recorded.
	if base.Record != nil {
		for _, rp := range base.Record.Packs {
			if !kept[rp.Name] {
				rec.Packs = append(rec.Packs, rp)
			}
		}
		for _, s := range base.Record.Shadows {
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

// stage fills mdir (lib/modules/<release> of the staging root) with the
// merged tree.
func stage(ctx context.Context, base *Base, plan *Plan, rec *pack.Record, mdir string) error {
	drop := map[string]bool{pack.RecordFile: true}
	for _, f := range depmodOutputs {
		drop[f] = true
	}
	for _, s := range plan.Shadows {
		drop[s.Stock] = true
	}
	for _, r := range plan.Replaced {
		drop[r] = true
	}
	if base.owned() {
		// The extracted image is ours: move it instead of copying.
		if err := os.Rename(base.ModuleDir, mdir); err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		base.ModuleDir = mdir
		for f := range drop {
			if err := os.Remove(filepath.Join(mdir, filepath.FromSlash(f))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("merge: %w", err)
			}
		}
	} else if err := linkTree(ctx, base.ModuleDir, mdir, drop); err != nil {
		return err
	}
	for _, a := range plan.Add {
		p := filepath.Join(mdir, filepath.FromSlash(a.Dest))
		if err := mkdirAll(mdir, filepath.Dir(p)); err != nil {
			return err
		}
		if err := writeFile(p, a.Data); err != nil {
			return err
		}
	}
	// Empty directories left by replaced packs go too.
	for _, r := range plan.Replaced {
		for d := filepath.Dir(filepath.Join(mdir, filepath.FromSlash(r))); d != mdir; d = filepath.Dir(d) {
			if os.Remove(d) != nil {
				break
			}
		}
	}
	if err := writeOrder(mdir, plan); err != nil {
		return err
	}
	return writeFile(filepath.Join(mdir, pack.RecordFile), rec.Encode())
}

// writeFile writes a new file with mode 0644 whatever the umask, so that
// images are reproducible.
func writeFile(p string, data []byte) error {
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	return nil
}

// mkdirAll creates dir and its missing parents below top with mode 0755
// whatever the umask.
func mkdirAll(top, dir string) error {
	if dir == top {
		return nil
	}
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("merge: %s is not a directory", dir)
		}
		return nil
	}
	if err := mkdirAll(top, filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	return nil
}

// writeOrder rewrites modules.order: shadowed and replaced entries go, and
// the pack modules are appended in path order (as build does for its
// out-of-tree modules), so depmod orders them the same way kmod would.
func writeOrder(mdir string, plan *Plan) error {
	p := filepath.Join(mdir, "modules.order")
	old, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("merge: %w", err)
	}
	gone := map[string]bool{}
	for _, s := range plan.Shadows {
		gone[s.Stock] = true
	}
	for _, r := range plan.Replaced {
		gone[r] = true
	}
	var adds []string
	for _, a := range plan.Add {
		gone[a.Dest] = true // appended below, once
		adds = append(adds, a.Dest)
	}
	sort.Strings(adds)
	var b strings.Builder
	for _, l := range depmod.ParseOrder(old) {
		if l == "" || gone[l] {
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	for _, a := range adds {
		b.WriteString(a)
		b.WriteByte('\n')
	}
	if old == nil && len(adds) == 0 {
		return nil
	}
	// Remove first: the staged file may be a hard link to the base.
	os.Remove(p)
	return writeFile(p, []byte(b.String()))
}

// linkTree recreates the tree at src in dst (which must not exist): files
// as hard links (copies across file systems), symlinks as symlinks, except
// the relative paths in drop.
func linkTree(ctx context.Context, src, dst string, drop map[string]bool) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if drop[filepath.ToSlash(rel)] {
			return nil
		}
		t := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(t, 0o755); err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			return os.Chmod(t, fi.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			return os.Symlink(target, t)
		case d.Type().IsRegular():
			if err := os.Link(p, t); err == nil {
				return nil
			}
			if err := atomicfile.CopyFile(p, t, fi.Mode().Perm()); err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			return nil
		}
		return fmt.Errorf("merge: base %s: %s is not a file, directory or symlink", src, rel)
	})
}
