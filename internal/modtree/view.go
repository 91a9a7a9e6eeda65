package modtree

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
)

// IndexFiles are the files depmod writes into a module directory (kmod
// 30's set plus modules.weakdep). A staged tree never carries them over
// from its source: they are generated for the tree as it is.
var IndexFiles = []string{
	"modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep",
	"modules.weakdep", "modules.symbols", "modules.symbols.bin", "modules.builtin.bin",
	"modules.builtin.alias.bin", "modules.devname",
}

// ViewOptions say what a staged tree holds besides its modules.
type ViewOptions struct {
	// Files are generated files (depmod's indexes, records), by path;
	// they replace files of the same path.
	Files map[string][]byte
	// Drop lists more paths of Tree.Files not to carry over.
	Drop map[string]bool
}

// View is a tree as it is staged, as a read-only file system rooted at
// lib/modules/<release>: the modules at their paths, modules.order from
// Tree.Order, the generated files, and every other file of Tree.Files
// except module files (they come from Modules only), the index files
// (IndexFiles), the top-level build and source symlinks and an empty
// top-level lost+found. Directories left empty by modules that were
// dropped are left out. Symlinks are never followed: Open fails on them,
// Lstat and ReadLink report them. It implements fs.ReadDirFS, fs.StatFS
// and fs.ReadLinkFS; reads are safe from several goroutines if the
// entries' sources are.
type View struct {
	nodes map[string]*vnode
}

type vnode struct {
	mode     fs.FileMode
	size     int64
	target   string
	open     func() (io.ReadCloser, error)
	children map[string]bool
	module   bool // a module file (its parents may be pruned when empty)
}

// View composes the staged tree of t.
func (t *Tree) View(o ViewOptions) (*View, error) {
	v := &View{nodes: map[string]*vnode{".": {mode: fs.ModeDir | 0o755, children: map[string]bool{}}}}
	dropped := map[string]bool{}
	if t.Files != nil {
		if err := v.carry(t.Files, o.Drop, dropped); err != nil {
			return nil, err
		}
	}
	for _, e := range t.Modules {
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := v.add(e.Path, &vnode{mode: mode.Perm(), size: e.Size, open: e.open, module: true}); err != nil {
			return nil, err
		}
	}
	if t.Order != nil {
		if err := v.addData(OrderFile, FormatOrder(t.Order)); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(o.Files))
	for n := range o.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := v.addData(n, o.Files[n]); err != nil {
			return nil, err
		}
	}
	v.prune(dropped)
	return v, nil
}

// carry adds the files of fsys that a staged tree keeps, and records in
// dropped the directories that held module files.
func (v *View) carry(fsys fs.FS, drop, dropped map[string]bool) error {
	index := map[string]bool{OrderFile: true}
	for _, f := range IndexFiles {
		index[f] = true
	}
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("modtree: %w", err)
		}
		if p == "." {
			return nil
		}
		top := !strings.Contains(p, "/")
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("modtree: %w", err)
		}
		switch t := d.Type(); {
		case drop[p] || top && index[p]:
			if d.IsDir() {
				return fs.SkipDir
			}
		case t.IsDir():
			if top && p == "lost+found" {
				if ents, _ := fs.ReadDir(fsys, p); len(ents) == 0 {
					return fs.SkipDir
				}
			}
			return v.add(p, &vnode{mode: fs.ModeDir | info.Mode().Perm(), children: map[string]bool{}})
		case t&fs.ModeSymlink != 0:
			if top && skipTop(p) {
				return nil
			}
			target, err := fs.ReadLink(fsys, p)
			if err != nil {
				return fmt.Errorf("modtree: %w", err)
			}
			return v.add(p, &vnode{mode: fs.ModeSymlink | 0o777, size: int64(len(target)), target: target})
		case t.IsRegular() && isModuleFile(p):
			dropped[path.Dir(p)] = true
		case t.IsRegular():
			name := p
			return v.add(p, &vnode{mode: info.Mode().Perm(), size: info.Size(), open: func() (io.ReadCloser, error) { return fsys.Open(name) }})
		default:
			return fmt.Errorf("modtree: %s: %s is not a regular file, directory or symlink", p, t)
		}
		return nil
	})
}

// isModuleFile reports whether p is a module file by ListModulesFS's rule.
func isModuleFile(p string) bool {
	top, _, nested := strings.Cut(p, "/")
	return kmodule.IsModulePath(p) && !(nested && skipTop(top))
}

func (v *View) addData(p string, data []byte) error {
	return v.add(p, &vnode{mode: 0o644, size: int64(len(data)),
		open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }})
}

// add places n at p, creating missing parent directories (0755); a file
// replaces a file, and nothing replaces a directory.
func (v *View) add(p string, n *vnode) error {
	if !fs.ValidPath(p) || p == "." {
		return fmt.Errorf("modtree: invalid path %q in the staged tree", p)
	}
	dir, name := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	parent := v.nodes[dir]
	if parent == nil {
		if err := v.add(dir, &vnode{mode: fs.ModeDir | 0o755, children: map[string]bool{}}); err != nil {
			return err
		}
		parent = v.nodes[dir]
	}
	if !parent.mode.IsDir() {
		return fmt.Errorf("modtree: %s: parent %s is not a directory in the staged tree", p, dir)
	}
	if old := v.nodes[p]; old != nil && (old.mode.IsDir() || n.mode.IsDir()) {
		if old.mode.IsDir() && n.mode.IsDir() {
			return nil
		}
		return fmt.Errorf("modtree: %s is both a directory and a file in the staged tree", p)
	}
	parent.children[name] = true
	v.nodes[p] = n
	return nil
}

// prune removes directories in dirs (and their parents) that are empty.
func (v *View) prune(dirs map[string]bool) {
	for d := range dirs {
		for d != "." && d != "" {
			n := v.nodes[d]
			if n == nil || !n.mode.IsDir() || len(n.children) > 0 {
				break
			}
			delete(v.nodes, d)
			parent := path.Dir(d)
			delete(v.nodes[parent].children, path.Base(d))
			d = parent
		}
	}
}

func (v *View) lookup(op, name string) (*vnode, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	n := v.nodes[name]
	if n == nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	return n, nil
}

// Open opens a file or directory of the view; symlinks are not followed.
func (v *View) Open(name string) (fs.File, error) {
	n, err := v.lookup("open", name)
	if err != nil {
		return nil, err
	}
	switch {
	case n.mode&fs.ModeSymlink != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a symbolic link (not followed)")}
	case n.mode.IsDir():
		ents, _ := v.ReadDir(name)
		return &viewDir{info: v.info(name, n), ents: ents}, nil
	}
	return &viewFile{info: v.info(name, n), open: n.open}, nil
}

// ReadDir lists a directory of the view, sorted by name.
func (v *View) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := v.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if !n.mode.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	names := make([]string, 0, len(n.children))
	for c := range n.children {
		names = append(names, c)
	}
	sort.Strings(names)
	out := make([]fs.DirEntry, len(names))
	for i, c := range names {
		p := path.Join(name, c)
		out[i] = fs.FileInfoToDirEntry(v.info(p, v.nodes[p]))
	}
	return out, nil
}

// Stat returns a file's information (of the link itself for a symlink).
func (v *View) Stat(name string) (fs.FileInfo, error) { return v.Lstat(name) }

// Lstat returns a file's information without following a symlink.
func (v *View) Lstat(name string) (fs.FileInfo, error) {
	n, err := v.lookup("lstat", name)
	if err != nil {
		return nil, err
	}
	return v.info(name, n), nil
}

// ReadLink returns a symlink's target.
func (v *View) ReadLink(name string) (string, error) {
	n, err := v.lookup("readlink", name)
	if err != nil {
		return "", err
	}
	if n.mode&fs.ModeSymlink == 0 {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return n.target, nil
}

func (v *View) info(name string, n *vnode) fs.FileInfo {
	return viewInfo{name: path.Base(name), n: n}
}

type viewInfo struct {
	name string
	n    *vnode
}

func (i viewInfo) Name() string       { return i.name }
func (i viewInfo) Size() int64        { return i.n.size }
func (i viewInfo) Mode() fs.FileMode  { return i.n.mode }
func (i viewInfo) ModTime() time.Time { return time.Time{} }
func (i viewInfo) IsDir() bool        { return i.n.mode.IsDir() }
func (i viewInfo) Sys() any           { return nil }

type viewFile struct {
	info fs.FileInfo
	open func() (io.ReadCloser, error)
	r    io.ReadCloser
}

func (f *viewFile) Stat() (fs.FileInfo, error) { return f.info, nil }

func (f *viewFile) Read(p []byte) (int, error) {
	if f.r == nil {
		r, err := f.open()
		if err != nil {
			return 0, err
		}
		f.r = r
	}
	return f.r.Read(p)
}

func (f *viewFile) Close() error {
	if f.r == nil {
		return nil
	}
	return f.r.Close()
}

type viewDir struct {
	info fs.FileInfo
	ents []fs.DirEntry
	pos  int
}

func (d *viewDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *viewDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.Name(), Err: errors.New("is a directory")}
}
func (d *viewDir) Close() error { return nil }

// ReadDir reads the directory's entries, n at a time (n <= 0: all).
func (d *viewDir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.ents[d.pos:]
	if n <= 0 {
		d.pos = len(d.ents)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.pos += n
	return rest[:n], nil
}
