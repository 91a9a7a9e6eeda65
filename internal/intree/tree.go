package intree

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// tree is what the planner knows of a kernel source tree: the kbuild
// structure of every directory and the files its scans read.
type tree struct {
	src, srcarch string
	// dirs maps a kbuild directory ("" is the top) to the lines of its
	// kbuild file and the files that includes.
	dirs map[string][]mkLine
	// parsed are the make files read as part of some directory.
	parsed map[string]bool
	// makeFiles are every make text file (and shell script, which may
	// read the config too); codeFiles every C, assembly, header and Rust
	// file (slash paths, sorted).
	makeFiles, codeFiles []string
	// top are the lines of the top Makefile and the arch Makefile, which
	// list the top-level directories (core-y, libs-y, drivers-y).
	top []mkLine
	// comps caches compIndex per directory.
	comps map[string]map[string][]string
}

// skipTop are top-level directories that hold nothing kbuild compiles
// into the kernel or its modules.
var skipTop = map[string]bool{"Documentation": true, "tools": true, "LICENSES": true}

// isCodeFile reports whether a file is C, assembly, a header or Rust.
func isCodeFile(n string) bool {
	switch path.Ext(n) {
	case ".c", ".h", ".S", ".rs", ".inc":
		return true
	}
	return false
}

// loadTree walks the source once, lists its make and code files (other
// architectures' arch/ directories left out) and parses every
// directory's kbuild file with its includes.
func loadTree(ctx context.Context, src, srcarch string) (*tree, error) {
	t := &tree{src: src, srcarch: srcarch, dirs: map[string][]mkLine{}, parsed: map[string]bool{}, comps: map[string]map[string][]string{}}
	if _, err := os.Stat(filepath.Join(src, "Makefile")); err != nil {
		return nil, fmt.Errorf("intree: %s is not a kernel source tree (no top-level Makefile)", src)
	}
	var kdirs []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && skipDir(rel, d.Name(), srcarch) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		switch n := d.Name(); {
		case isKbuildName(n) || strings.HasSuffix(n, ".sh"):
			t.makeFiles = append(t.makeFiles, rel)
			if n == "Kbuild" || n == "Makefile" {
				kdirs = append(kdirs, path.Dir(rel))
			}
		case isCodeFile(n):
			t.codeFiles = append(t.codeFiles, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("intree: scanning %s: %w", src, err)
	}
	sort.Strings(t.makeFiles)
	sort.Strings(t.codeFiles)
	for _, d := range kdirs {
		if d == "." {
			d = ""
		}
		if _, done := t.dirs[d]; !done {
			if t.dirs[d], err = t.parseDir(d); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range []string{"Makefile", path.Join("arch", srcarch, "Makefile")} {
		if b, err := os.ReadFile(filepath.Join(src, filepath.FromSlash(f))); err == nil {
			t.top = append(t.top, parseKbuild(f, b)...)
		}
	}
	return t, nil
}

// skipDir reports whether the walk leaves a directory out: hidden ones,
// Documentation, tools, and other architectures.
func skipDir(rel, name, srcarch string) bool {
	if strings.HasPrefix(name, ".") || !strings.Contains(rel, "/") && skipTop[rel] {
		return true
	}
	if a, ok := strings.CutPrefix(rel, "arch/"); ok && !strings.Contains(a, "/") {
		return a != srcarch
	}
	return false
}

// maxIncludes bounds the make files one directory's kbuild file may
// include, transitively.
const maxIncludes = 64

// parseDir parses dir's kbuild file and, recursively, the make files it
// includes that are in the tree (each once). A file it cannot read
// (other than a missing include: generated at build time), or
// more includes than maxIncludes, is an error: lines left unread could be
// what builds a file into the kernel.
func (t *tree) parseDir(dir string) ([]mkLine, error) {
	main := kbuildFileOf(t.src, dir)
	if main == "" {
		return nil, nil
	}
	seen := map[string]bool{}
	var read func(rel string) ([]mkLine, error)
	read = func(rel string) ([]mkLine, error) {
		if seen[rel] {
			return nil, nil
		}
		if len(seen) >= maxIncludes {
			return nil, fmt.Errorf("intree: %s: more than %d make files included", main, maxIncludes)
		}
		seen[rel] = true
		b, err := os.ReadFile(filepath.Join(t.src, filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrNotExist) && rel != main {
			return nil, nil // generated at build time, not part of the tree
		}
		if err != nil {
			return nil, fmt.Errorf("intree: %w", err)
		}
		t.parsed[rel] = true
		var out []mkLine
		for _, l := range parseKbuild(rel, b) {
			out = append(out, l)
			if l.kind != kindInclude {
				continue
			}
			for _, inc := range strings.Fields(l.name) {
				r := resolveInclude(inc, dir, t.srcarch)
				if r == "" {
					continue
				}
				inner, err := read(r)
				if err != nil {
					return nil, err
				}
				for _, il := range inner {
					il.conds = append(append([]branch{}, l.conds...), il.conds...)
					out = append(out, il)
				}
			}
		}
		return out, nil
	}
	return read(main)
}

// objLine is an obj-<key> (or subdir-<key>) assignment of a directory.
type objLine struct {
	*mkLine
	dir   string
	key   string // after "obj-": "y", "m", "" or "$(CONFIG_X)", or anything else
	opt   string // CONFIG_X when key is exactly $(CONFIG_X)
	items []string
	// subdir is set for subdir-y/subdir-m (items are directory names).
	subdir bool
}

// objLines returns the obj-* and subdir-* assignments of dir.
func (t *tree) objLines(dir string) []objLine {
	var out []objLine
	lines := t.dirs[dir]
	for i := range lines {
		l := &lines[i]
		if l.kind != kindAssign {
			continue
		}
		var key string
		var sub bool
		switch {
		case strings.HasPrefix(l.name, "obj-"):
			key = l.name[len("obj-"):]
		case strings.HasPrefix(l.name, "subdir-"):
			key, sub = l.name[len("subdir-"):], true
		default:
			continue
		}
		ol := objLine{mkLine: l, dir: dir, key: key, subdir: sub}
		if m := configRefRE.FindStringSubmatch(key); m != nil && m[0] == key {
			ol.opt = m[1]
		}
		value := strings.ReplaceAll(l.value, "$(SRCARCH)", t.srcarch)
		ol.items = strings.Fields(value)
		out = append(out, ol)
	}
	return out
}

// selector is what an obj line's key expands to under a config: "y",
// "m" or "" (not built); ok is false when it cannot be told.
func (ol objLine) selector(c kconfig.Config) (string, bool) {
	switch {
	case ol.key == "y" || ol.key == "m":
		return ol.key, true
	case ol.key == "" || ol.key == "n":
		return "", true
	case ol.opt != "":
		v := makeValue(c, ol.opt)
		if v != "y" && v != "m" {
			v = ""
		}
		return v, true
	}
	return "", false
}

// builds reports whether the line takes effect under c: it is read (its
// conditionals hold) and its key selects y or m.
func (ol objLine) builds(c kconfig.Config) tri {
	r := evalBranches(ol.conds, c)
	if r == no {
		return no
	}
	sel, ok := ol.selector(c)
	switch {
	case !ok:
		return unknown
	case sel == "":
		return no
	}
	return r
}

// compIndex returns dir's composite objects: for each name, the items of
// every name-y, name-m, name-objs, name- and name-$(CONFIG_X) line,
// whatever their conditions (the union of what may be built).
func (t *tree) compIndex(dir string) map[string][]string {
	if idx, ok := t.comps[dir]; ok {
		return idx
	}
	idx := map[string][]string{}
	lines := t.dirs[dir]
	for i := range lines {
		l := &lines[i]
		if l.kind != kindAssign {
			continue
		}
		if name := compositeName(l.name); name != "" {
			items, _ := t.expand(dir, l.value)
			idx[name] = append(idx[name], items...)
		}
	}
	t.comps[dir] = idx
	return idx
}

// kbuildLists are the kbuild variable prefixes that are not composite
// objects (obj-y, lib-m, ccflags-y, ...).
var kbuildLists = map[string]bool{"obj": true, "lib": true, "subdir": true, "ccflags": true, "asflags": true, "ldflags": true,
	"cppflags": true, "rustflags": true, "always": true, "hostprogs": true, "userprogs": true, "extra": true, "targets": true,
	"clean-files": true, "subdir-ccflags": true, "subdir-asflags": true, "hostprogs-always": true, "userprogs-always": true}

// compositeName returns foo for a variable foo-y, foo-m, foo-objs, foo-
// or foo-$(CONFIG_X), "" for anything else.
func compositeName(v string) string {
	var name string
	if strings.HasSuffix(v, ")") {
		if i := strings.LastIndex(v, "-$("); i > 0 && configRefRE.FindString(v[i+1:]) == v[i+1:] {
			name = v[:i]
		}
	} else if i := strings.LastIndexByte(v, '-'); i > 0 {
		switch v[i+1:] {
		case "y", "m", "objs", "":
			name = v[:i]
		}
	}
	if kbuildLists[name] || strings.Contains(name, "$") {
		return ""
	}
	return name
}
