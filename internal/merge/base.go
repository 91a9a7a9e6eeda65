package merge

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/pack"

	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Base is the module tree packs are merged over, opened from a directory or
// an image.
type Base struct {
	// Source is the path given (directory or image file).
	Source string
	// Kind is "dir" or the image format ("vhdx", "vhd-fixed",
	// "vhd-dynamic", "raw").
	Kind string
	// Layout is the layout of an image base (flat or nested); "" for a
	// directory.
	Layout image.Layout
	// Release is the kernel release, and ReleaseFrom says how it was
	// determined ("--kernel-release", "nested directory name",
	// "lib/modules directory name", "vermagic").
	Release, ReleaseFrom string
	// ModuleDir is the host directory holding the module tree (for an
	// image: the extracted copy, owned by the Base until Close).
	ModuleDir string
	// Headers is the extracted <release>/linux-headers of a nested image,
	// or "".
	Headers string
	// Ignored lists top-level entries of a nested image that a merge does
	// not carry over (other than <release>/modules and linux-headers).
	Ignored []string
	// Tree is the loaded module tree.
	Tree *modtree.Tree
	// Record is the pack record of a base merged before (nil if none).
	Record *pack.Record

	tmp string // temporary directory to remove on Close, if any
}

// Close removes what OpenBase extracted.
func (b *Base) Close() error {
	if b.tmp == "" {
		return nil
	}
	err := os.RemoveAll(b.tmp)
	b.tmp = ""
	return err
}

// owned reports whether ModuleDir is a private copy that may be modified.
func (b *Base) owned() bool { return b.tmp != "" }

// BaseOptions control OpenBase.
type BaseOptions struct {
	// Release is the kernel release given by the user (--kernel-release);
	// "" means: determine it from the base (see OpenBase).
	Release string
	// TempDir is where an image base is extracted ("" = os.TempDir()).
	TempDir string
	// Progress reports the steps (may be nil).
	Progress *progress.Reporter
}

// OpenBase opens the base of a merge: a directory (a root holding
// lib/modules/<release>, or a module tree itself) or a VHDX, VHD or raw
// image in the flat or nested layout, which is extracted into a temporary
// directory (removed by Close).
//
// The kernel release is decided by one rule, and ambiguity is an error:
//   - nested image: the name of the <release> directory holding modules/
//     (several of them need --kernel-release to choose);
//   - root directory: the single directory under lib/modules (several
//     need --kernel-release);
//   - flat image or module directory: the release in the vermagic of its
//     modules (the first word), which must be the same for all of them.
//
// A release given in o.Release must agree with what the base says:
// the nested directory must exist, and the modules' vermagic must carry
// that release.
func OpenBase(ctx context.Context, src string, o BaseOptions) (*Base, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("merge: base: %w", err)
	}
	b := &Base{Source: src}
	ok := false
	defer func() {
		if !ok {
			b.Close()
		}
	}()
	if fi.IsDir() {
		b.Kind = "dir"
		if err := b.openDir(src, o.Release); err != nil {
			return nil, err
		}
	} else {
		if err := b.openImage(ctx, src, o); err != nil {
			return nil, err
		}
	}
	done := o.Progress.Step("loading base modules from %s", b.ModuleDir)
	t, err := modtree.LoadDir(b.ModuleDir, b.Release)
	done()
	if err != nil {
		return nil, fmt.Errorf("merge: base %s: %w", src, err)
	}
	b.Tree = t
	if err := b.checkRelease(o.Release); err != nil {
		return nil, err
	}
	t.Release = b.Release
	if b.Record, err = pack.ReadRecordDir(b.ModuleDir); err != nil {
		return nil, fmt.Errorf("merge: base %s: %w", src, err)
	}
	ok = true
	return b, nil
}

// isModuleTree reports whether dir looks like lib/modules/<release>.
func isModuleTree(dir string) bool {
	for _, m := range []string{"modules.order", "modules.dep", "kernel"} {
		if _, err := os.Stat(filepath.Join(dir, m)); err == nil {
			return true
		}
	}
	return false
}

func subdirs(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func (b *Base) openDir(src, release string) error {
	lm := filepath.Join(src, "lib", "modules")
	if rels := subdirs(lm); len(rels) > 0 {
		switch {
		case release != "":
			d := filepath.Join(lm, release)
			if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
				return fmt.Errorf("merge: base %s: no lib/modules/%s (it has %s)", src, release, strings.Join(rels, ", "))
			}
			b.Release, b.ReleaseFrom = release, "--kernel-release"
		case len(rels) == 1:
			b.Release, b.ReleaseFrom = rels[0], "lib/modules directory name"
		default:
			return fmt.Errorf("merge: base %s: several kernel releases under lib/modules (%s); choose one with --kernel-release", src, strings.Join(rels, ", "))
		}
		b.ModuleDir = filepath.Join(lm, b.Release)
		return nil
	}
	if !isModuleTree(src) {
		return fmt.Errorf("merge: base %s: neither a root with lib/modules/<release> nor a module tree (modules.order, modules.dep or kernel/)", src)
	}
	b.ModuleDir = src
	if release != "" {
		b.Release, b.ReleaseFrom = release, "--kernel-release"
	}
	return nil
}

func (b *Base) openImage(ctx context.Context, src string, o BaseOptions) error {
	d, err := image.OpenDisk(src)
	if err != nil {
		return fmt.Errorf("merge: base: %w", err)
	}
	defer d.Close()
	b.Kind = d.Format
	parent := o.TempDir
	if parent == "" {
		parent = os.TempDir()
	}
	if b.tmp, err = os.MkdirTemp(parent, ".wsl-modules-merge-base-*"); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	dir := filepath.Join(b.tmp, "image")
	done := o.Progress.Step("extracting base image %s (%s)", src, d.Format)
	_, err = image.Extract(ctx, d, dir, false)
	done()
	if err != nil {
		return fmt.Errorf("merge: base %s: %w", src, err)
	}
	var nested []string
	for _, s := range subdirs(dir) {
		if fi, err := os.Stat(filepath.Join(dir, s, "modules")); err == nil && fi.IsDir() {
			nested = append(nested, s)
		}
	}
	switch {
	case o.Release != "" && contains(nested, o.Release):
		b.Release, b.ReleaseFrom = o.Release, "--kernel-release"
	case o.Release == "" && len(nested) == 1 && !isModuleTree(dir):
		b.Release, b.ReleaseFrom = nested[0], "nested directory name"
	case o.Release == "" && len(nested) > 1 && !isModuleTree(dir):
		return fmt.Errorf("merge: base %s: nested image with several releases (%s); choose one with --kernel-release", src, strings.Join(nested, ", "))
	case isModuleTree(dir):
		b.Layout, b.ModuleDir = image.LayoutFlat, dir
		if o.Release != "" {
			b.Release, b.ReleaseFrom = o.Release, "--kernel-release"
		}
		return nil
	case len(nested) > 0:
		return fmt.Errorf("merge: base %s: nested image for %s, not %s", src, strings.Join(nested, ", "), o.Release)
	default:
		return fmt.Errorf("merge: base %s: the image holds neither a module tree at its root (flat layout: modules.dep, modules.order or kernel/) nor <release>/modules (nested layout)", src)
	}
	b.Layout = image.LayoutNested
	rd := filepath.Join(dir, b.Release)
	b.ModuleDir = filepath.Join(rd, "modules")
	if fi, err := os.Stat(filepath.Join(rd, "linux-headers")); err == nil && fi.IsDir() {
		b.Headers = filepath.Join(rd, "linux-headers")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != b.Release && e.Name() != "lost+found" {
			b.Ignored = append(b.Ignored, e.Name())
		}
	}
	ents, _ = os.ReadDir(rd)
	for _, e := range ents {
		if e.Name() != "modules" && e.Name() != "linux-headers" {
			b.Ignored = append(b.Ignored, b.Release+"/"+e.Name())
		}
	}
	return nil
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// vermagicRelease returns the kernel release of a vermagic string (its
// first word).
func vermagicRelease(v string) string {
	if f := strings.Fields(v); len(f) > 0 {
		return f[0]
	}
	return ""
}

// checkRelease decides the release from the modules' vermagic when the
// layout did not, and checks that the modules agree with it.
func (b *Base) checkRelease(given string) error {
	count := map[string]int{}
	example := map[string]string{}
	for _, e := range b.Tree.Modules {
		r := vermagicRelease(e.Vermagic())
		count[r]++
		if _, ok := example[r]; !ok {
			example[r] = e.Path
		}
	}
	var rels []string
	for r := range count {
		rels = append(rels, r)
	}
	sort.Strings(rels)
	describe := func() string {
		var parts []string
		for _, r := range rels {
			parts = append(parts, fmt.Sprintf("%q in %d modules (e.g. %s)", r, count[r], example[r]))
		}
		return strings.Join(parts, ", ")
	}
	if b.Release == "" {
		switch len(rels) {
		case 0:
			return fmt.Errorf("merge: base %s: no modules to read the kernel release from; give --kernel-release", b.Source)
		case 1:
			if rels[0] == "" {
				return fmt.Errorf("merge: base %s: the modules carry no vermagic; give --kernel-release", b.Source)
			}
			b.Release, b.ReleaseFrom = rels[0], "vermagic"
			return nil
		}
		return fmt.Errorf("merge: base %s: the modules' vermagic names several kernel releases: %s; give --kernel-release", b.Source, describe())
	}
	if len(rels) > 0 && count[b.Release] == 0 {
		return fmt.Errorf("merge: base %s: kernel release %s (from %s), but the modules' vermagic says %s", b.Source, b.Release, b.ReleaseFrom, describe())
	}
	return nil
}

// BaseSymvers returns the path of the base's own Module.symvers (the
// kernel-devel tree at build/ in our images), or "" if it has none.
func (b *Base) BaseSymvers() string {
	p := filepath.Join(b.ModuleDir, "build", "Module.symvers")
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p
	}
	return ""
}
