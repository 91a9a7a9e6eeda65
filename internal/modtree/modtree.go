// Package modtree is the core model of a kernel module tree: one kernel
// release, its modules with their symbols, the vmlinux symbol table
// (Module.symvers) and the files around them (modules.order,
// modules.builtin, a build/ tree).
//
// Every source opens as a Tree: a directory (Load, LoadDir), a VHDX, VHD
// or raw image in the flat or nested layout, read in place, or a module
// pack (Open), a kernel build (its installed module directory) and a
// kernel image's exports (Symvers). Validate is the one check of vermagic,
// symbol resolution and CRCs; Overlay is the one way to add and drop
// modules; View presents the tree as it would be staged, for the one
// staging sink (internal/stage) and the image writer.
package modtree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/pack"
)

// Entry is one module file in a tree.
type Entry struct {
	// Path is relative to lib/modules/<release>, with '/' separators.
	Path string
	// Module is the parsed module.
	*kmodule.Module
	// Origin tells where the module came from (a pack name, "stock", a
	// listed module's name, ...); empty when unknown.
	Origin string
	// Size is the byte size of the file as stored (compressed or not),
	// and Mode its permission bits (0: 0644).
	Size int64
	Mode fs.FileMode

	open func() (io.ReadCloser, error)
}

// Open returns the module file's bytes as stored.
func (e *Entry) Open() (io.ReadCloser, error) {
	if e.open == nil {
		return nil, fmt.Errorf("modtree: %s: no content", e.Path)
	}
	return e.open()
}

// NewEntry parses data as the module at path p; the entry serves data as
// its content.
func NewEntry(p string, data []byte, origin string) (*Entry, error) {
	m, err := kmodule.Parse(p, data)
	if err != nil {
		return nil, fmt.Errorf("modtree: %s: %w", p, err)
	}
	return &Entry{Path: p, Module: m, Origin: origin, Size: int64(len(data)),
		open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}, nil
}

// Tree is a set of modules for one kernel release, with the files depmod
// reads besides the modules.
type Tree struct {
	// Release is the kernel release (uname -r).
	Release string
	// Modules in deterministic order: sorted by Path, unless a caller
	// orders them otherwise (depmod's index order). A symbol exported by
	// several modules is provided by the last one.
	Modules []*Entry
	// Symvers maps vmlinux (and other known) exported symbols to their CRC,
	// typically loaded from Module.symvers. It may be nil.
	Symvers map[string]SymverEntry
	// Order holds the lines of modules.order (nil: there is none);
	// OrderUnterminated is set when its last line lacks a newline.
	Order             []string
	OrderUnterminated bool
	// Builtin and BuiltinModinfo are modules.builtin and
	// modules.builtin.modinfo (nil: missing).
	Builtin, BuiltinModinfo []byte
	// Files is the tree's directory (lib/modules/<release>) as a file
	// system, for the files other than modules (a build/ tree, records);
	// nil for a tree that has none (a pack).
	Files fs.FS
	// Source describes where the tree was opened from.
	Source Source

	closer io.Closer
}

// Close releases what Open holds (an image file); the tree's entries and
// Files must not be read afterwards. Closing a tree from Load is a no-op.
func (t *Tree) Close() error {
	if t == nil || t.closer == nil {
		return nil
	}
	err := t.closer.Close()
	t.closer = nil
	return err
}

// Entry returns the module at path p, or nil.
func (t *Tree) Entry(p string) *Entry {
	for _, e := range t.Modules {
		if e.Path == p {
			return e
		}
	}
	return nil
}

// Arch returns the architecture of the tree's modules (x86_64, arm64,
// ...), from the first module; "" for an empty tree.
func (t *Tree) Arch() string {
	for _, e := range t.Modules {
		return pack.ArchOf(e.Machine)
	}
	return ""
}

// Vermagic returns the vermagic most of the tree's modules carry (ties
// go to the smallest string); "" for an empty tree.
func (t *Tree) Vermagic() string {
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

// Provider returns who provides symbol sym: the path of the (last) module
// exporting it, else "vmlinux" when Symvers lists it; ok is false when
// nothing does.
func (t *Tree) Provider(sym string) (provider string, ok bool) {
	for i := len(t.Modules) - 1; i >= 0; i-- {
		for _, x := range t.Modules[i].Exports {
			if x.Name == sym {
				return t.Modules[i].Path, true
			}
		}
	}
	if _, in := t.Symvers[sym]; in {
		return "vmlinux", true
	}
	return "", false
}

// skipTop reports whether a top-level name of a module directory is not
// part of the module set: the build and source links (or trees).
func skipTop(name string) bool { return name == "build" || name == "source" }

// ListModulesFS returns the paths of the module files in fsys (a
// lib/modules/<release> directory), sorted: regular files named *.ko,
// *.ko.gz, *.ko.xz or *.ko.zst, outside the top-level build/ and source/.
// Symlinks are not followed. This is the one rule of what a module is.
func ListModulesFS(fsys fs.FS) ([]string, error) {
	var out []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && !strings.Contains(p, "/") && skipTop(p) {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && kmodule.IsModulePath(p) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(out)
	return out, nil
}

// ListModules is ListModulesFS over the host directory dir, which may be
// a symlink to it; it is an error if dir is not a directory.
func ListModules(dir string) ([]string, error) {
	fsys, _, err := hostFS(dir)
	if err != nil {
		return nil, err
	}
	return ListModulesFS(fsys)
}

// hostFS returns a file system of the host directory dir (resolving a
// symlink to it) and its real path.
func hostFS(dir string) (fs.FS, string, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, "", err
	}
	if st, err := os.Stat(real); err != nil {
		return nil, "", err
	} else if !st.IsDir() {
		return nil, "", fmt.Errorf("%s: not a directory", dir)
	}
	return os.DirFS(real), real, nil
}

// IsModuleDir reports whether fsys looks like a lib/modules/<release>
// directory: it has modules.order, modules.dep or kernel/.
func IsModuleDir(fsys fs.FS) bool {
	for _, m := range []string{"modules.order", "modules.dep", "kernel"} {
		if _, err := fs.Stat(fsys, m); err == nil {
			return true
		}
	}
	return false
}

// Load parses every module of fsys (a lib/modules/<release> directory)
// using all cores, and reads modules.order, modules.builtin and
// modules.builtin.modinfo. Errors name the offending file.
func Load(ctx context.Context, fsys fs.FS, release string) (*Tree, error) {
	return load(ctx, fsys, "", release)
}

// LoadDir is Load over the host directory dir; module files are mapped
// into memory rather than read.
func LoadDir(dir, release string) (*Tree, error) {
	fsys, real, err := hostFS(dir)
	if err != nil {
		return nil, fmt.Errorf("modtree: %w", err)
	}
	t, err := load(context.Background(), fsys, real, release)
	if err != nil {
		return nil, err
	}
	t.Source = Source{Path: dir, Kind: KindDir}
	return t, nil
}

func load(ctx context.Context, fsys fs.FS, host, release string) (*Tree, error) {
	paths, err := ListModulesFS(fsys)
	if err != nil {
		return nil, fmt.Errorf("modtree: %w", err)
	}
	t := &Tree{Release: release, Modules: make([]*Entry, len(paths)), Files: fsys}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, rel := range paths {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			e, err := loadEntry(fsys, host, rel)
			if err != nil {
				return fmt.Errorf("modtree: %w", err)
			}
			t.Modules[i] = e
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := t.readInputs(fsys); err != nil {
		return nil, err
	}
	return t, nil
}

// loadEntry parses one module of fsys; with a host directory the file is
// mapped rather than read.
func loadEntry(fsys fs.FS, host, rel string) (*Entry, error) {
	e := &Entry{Path: rel, open: func() (io.ReadCloser, error) { return fsys.Open(rel) }}
	var err error
	if host != "" {
		p := filepath.Join(host, filepath.FromSlash(rel))
		if e.Module, err = kmodule.ReadFile(p); err != nil {
			return nil, err
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		e.Size, e.Mode = st.Size(), st.Mode().Perm()
		return e, nil
	}
	data, err := fs.ReadFile(fsys, rel)
	if err != nil {
		return nil, err
	}
	if e.Module, err = kmodule.Parse(rel, data); err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	e.Size, e.Mode = int64(len(data)), 0o644
	if st, err := fs.Stat(fsys, rel); err == nil {
		e.Mode = st.Mode().Perm()
	}
	return e, nil
}

// readInputs reads modules.order, modules.builtin and
// modules.builtin.modinfo; missing files stay nil.
func (t *Tree) readInputs(fsys fs.FS) error {
	read := func(name string) ([]byte, error) {
		b, err := fs.ReadFile(fsys, name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("modtree: %w", err)
		}
		if b == nil {
			b = []byte{}
		}
		return b, nil
	}
	order, err := read(OrderFile)
	if err != nil {
		return err
	}
	if order != nil {
		t.Order = ParseOrder(order)
		t.OrderUnterminated = len(order) > 0 && order[len(order)-1] != '\n'
	}
	if t.Builtin, err = read("modules.builtin"); err != nil {
		return err
	}
	t.BuiltinModinfo, err = read("modules.builtin.modinfo")
	return err
}

// HostEntry is the entry at path p of an already parsed module m whose
// bytes are the host file host.
func HostEntry(p, host string, m *kmodule.Module, origin string) (*Entry, error) {
	st, err := os.Stat(host)
	if err != nil {
		return nil, fmt.Errorf("modtree: %w", err)
	}
	return &Entry{Path: p, Module: m, Origin: origin, Size: st.Size(), Mode: st.Mode().Perm(),
		open: func() (io.ReadCloser, error) { return os.Open(host) }}, nil
}
