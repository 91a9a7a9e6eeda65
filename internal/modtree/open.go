package modtree

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Source kinds.
const (
	KindDir  = "dir"
	KindPack = "pack"
	// Images report their format: "vhdx", "vhd-fixed", "vhd-dynamic" or
	// "raw".
)

// Image layouts (see WSL.md §5).
const (
	LayoutFlat   = "flat"
	LayoutNested = "nested"
)

// Source describes where a tree was opened from.
type Source struct {
	// Path is the path given.
	Path string
	// Kind is KindDir, KindPack or the image format.
	Kind string
	// Layout is an image's layout (LayoutFlat or LayoutNested); "" for a
	// directory or pack.
	Layout string
	// ReleaseFrom says how the release was determined ("--kernel-release",
	// "nested directory name", "lib/modules directory name", "vermagic",
	// "pack.json").
	ReleaseFrom string
	// Headers is a nested image's <release>/linux-headers tree, or nil.
	Headers fs.FS
	// Ignored lists top-level entries of a nested image that are not part
	// of the tree (other than <release>/modules and linux-headers).
	Ignored []string
}

// OpenOptions control Open.
type OpenOptions struct {
	// Release is the kernel release given by the user (--kernel-release);
	// "" means: determine it from the source (see Open).
	Release string
	// Progress reports the steps (may be nil).
	Progress *progress.Reporter
}

// Open opens a module tree from src: a directory (a root holding
// lib/modules/<release>, or a module directory itself), a VHDX, VHD or raw
// image in the flat or nested layout (read in place, never extracted), or
// a module pack (.tar.zst with pack.json). Close the tree when done.
//
// The kernel release is decided by one rule, and ambiguity is an error:
//   - nested image: the name of the <release> directory holding modules/
//     (several of them need o.Release to choose);
//   - root directory: the single directory under lib/modules (several
//     need o.Release);
//   - pack: its pack.json;
//   - flat image or module directory: the release in the vermagic of its
//     modules (the first word), which must be the same for all of them.
//
// A release given in o.Release must agree with what the source says: the
// nested or lib/modules directory must exist, and the modules' vermagic
// must carry that release.
func Open(ctx context.Context, src string, o OpenOptions) (*Tree, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("modtree: %w", err)
	}
	var t *Tree
	switch {
	case fi.IsDir():
		t, err = openDir(ctx, src, o)
	case isPack(src):
		t, err = openPack(src, o)
	default:
		t, err = openImage(ctx, src, o)
	}
	if err != nil {
		return nil, err
	}
	if err := t.checkRelease(); err != nil {
		t.Close()
		return nil, err
	}
	if err := CheckLinks(t.Files, src); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// CheckLinks refuses symlinks in a module directory that point outside it
// (absolute targets, or relative ones that climb out): staging writes
// through such a link would land on the host. The top-level build and
// source links are allowed (they are dropped, never followed). name is
// used in errors.
func CheckLinks(fsys fs.FS, name string) error {
	if fsys == nil {
		return nil
	}
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("modtree: %s: %w", name, err)
		}
		if d.Type()&fs.ModeSymlink == 0 || !strings.Contains(p, "/") && skipTop(p) {
			return nil
		}
		target, err := fs.ReadLink(fsys, p)
		if err != nil {
			return fmt.Errorf("modtree: %s: %w", name, err)
		}
		if !linkInside(fsys, path.Dir(p), target, 0) {
			return fmt.Errorf("modtree: %s: %s is a link to %q, outside the module directory; refusing it", name, p, target)
		}
		return nil
	})
}

// linkInside reports whether target, as a link in directory dir of fsys,
// resolves inside fsys.
func linkInside(fsys fs.FS, dir, target string, hops int) bool {
	_, ok := resolveLink(fsys, dir, target, hops)
	return ok
}

// resolveLink resolves target from directory dir of fsys, following the
// links it passes through (at most 40 in all); ok is false when it climbs
// above the root or is absolute. The result is a clean path ("" is the
// root).
func resolveLink(fsys fs.FS, dir, target string, hops int) (string, bool) {
	if path.IsAbs(target) || hops > 40 {
		return "", false
	}
	cur := strings.TrimPrefix(path.Clean("/"+dir), "/")
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			if cur == "" {
				return "", false
			}
			if cur = path.Dir(cur); cur == "." {
				cur = ""
			}
			continue
		}
		next := path.Join(cur, c)
		fi, err := fs.Lstat(fsys, next)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		t, err := fs.ReadLink(fsys, next)
		if err != nil {
			return "", false
		}
		r, ok := resolveLink(fsys, cur, t, hops+1)
		if !ok {
			return "", false
		}
		cur = r
	}
	return cur, true
}

// isPack reports whether the file p starts like a zstd stream and is named
// like a pack.
func isPack(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := f.Read(head)
	return strings.HasSuffix(p, ".tar.zst") && bytes.Equal(head[:n], []byte{0x28, 0xB5, 0x2F, 0xFD})
}

func openDir(ctx context.Context, src string, o OpenOptions) (*Tree, error) {
	mdir, rel, from, err := dirModuleDir(src, o.Release)
	if err != nil {
		return nil, err
	}
	done := o.Progress.Step("loading modules from %s", mdir)
	fsys, real, err := hostFS(mdir)
	if err != nil {
		done()
		return nil, fmt.Errorf("modtree: %s: %w", src, err)
	}
	t, err := load(ctx, fsys, real, rel)
	done()
	if err != nil {
		return nil, fmt.Errorf("modtree: %s: %w", src, err)
	}
	t.Source = Source{Path: src, Kind: KindDir, ReleaseFrom: from}
	return t, nil
}

// FindModuleDir is the one rule for where a host directory's modules
// are: the single (or the given) lib/modules/<release> of a root, else
// the directory itself when it looks like a module directory
// (modules.order, modules.dep or kernel/). It returns that directory and
// the release (release, the lib/modules name, or "" when neither says).
func FindModuleDir(src, release string) (dir, rel string, err error) {
	dir, rel, _, err = dirModuleDir(src, release)
	return dir, rel, err
}

// dirModuleDir is FindModuleDir, also saying where the release came
// from. It finds the module directory of a host directory: the
// single (or the given) lib/modules/<release>, else the directory itself
// when it looks like a module directory.
func dirModuleDir(src, release string) (mdir, rel, from string, err error) {
	if _, err := os.Stat(src); err != nil {
		return "", "", "", fmt.Errorf("modtree: %w", err)
	}
	lm := filepath.Join(src, "lib", "modules")
	if rels := subdirs(os.DirFS(lm), "."); len(rels) > 0 {
		switch {
		case release != "":
			d := filepath.Join(lm, release)
			if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
				return "", "", "", fmt.Errorf("modtree: %s: no lib/modules/%s (it has %s)", src, release, strings.Join(rels, ", "))
			}
			return d, release, "--kernel-release", nil
		case len(rels) == 1:
			return filepath.Join(lm, rels[0]), rels[0], "lib/modules directory name", nil
		}
		return "", "", "", fmt.Errorf("modtree: %s: several kernel releases under lib/modules (%s); choose one with --kernel-release", src, strings.Join(rels, ", "))
	}
	if !IsModuleDir(os.DirFS(src)) {
		return "", "", "", fmt.Errorf("modtree: %s: neither a root with lib/modules/<release> nor a module directory (modules.order, modules.dep or kernel/)", src)
	}
	if release != "" {
		return src, release, "--kernel-release", nil
	}
	return src, "", "", nil
}

// subdirs returns the names of the real directories (not links) in dir of
// fsys, sorted.
func subdirs(fsys fs.FS, dir string) []string {
	ents, _ := fs.ReadDir(fsys, dir)
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
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
// source did not, and checks that the modules agree with it.
func (t *Tree) checkRelease() error {
	count := map[string]int{}
	example := map[string]string{}
	for _, e := range t.Modules {
		r := vermagicRelease(e.Vermagic())
		count[r]++
		if _, ok := example[r]; !ok {
			example[r] = e.Path
		}
	}
	rels := make([]string, 0, len(count))
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
	src := t.Source.Path
	if t.Release == "" {
		switch {
		case len(rels) == 0:
			return fmt.Errorf("modtree: %s: no modules to read the kernel release from; give --kernel-release", src)
		case len(rels) == 1 && rels[0] == "":
			return fmt.Errorf("modtree: %s: the modules carry no vermagic; give --kernel-release", src)
		case len(rels) == 1:
			t.Release, t.Source.ReleaseFrom = rels[0], "vermagic"
			return nil
		}
		return fmt.Errorf("modtree: %s: the modules' vermagic names several kernel releases: %s; give --kernel-release", src, describe())
	}
	if len(rels) > 0 && count[t.Release] == 0 {
		return fmt.Errorf("modtree: %s: kernel release %s (from %s), but the modules' vermagic says %s", src, t.Release, t.Source.ReleaseFrom, describe())
	}
	return nil
}
