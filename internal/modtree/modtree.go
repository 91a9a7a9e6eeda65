// Package modtree is the core model of a kernel module tree: one kernel
// release, its modules with their symbols, and the vmlinux symbol table
// (Module.symvers). Sources (a directory, an image, packs, a kernel build)
// load into a Tree; sinks (depmod, the image writer) consume it. Validation
// of vermagic, symbol resolution and CRCs lives here, in one place.
package modtree

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"

	"golang.org/x/sync/errgroup"

	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
)

// Entry is one module file in a tree.
type Entry struct {
	// Path is relative to lib/modules/<release>, with '/' separators.
	Path string
	// Module is the parsed module.
	*kmodule.Module
	// Origin tells where the module came from (a pack name, "stock", ...);
	// empty when unknown.
	Origin string
}

// Tree is a set of modules for one kernel release.
type Tree struct {
	Release string
	// Modules in deterministic order (sorted by Path).
	Modules []*Entry
	// Symvers maps vmlinux (and other known) exported symbols to their CRC,
	// typically loaded from Module.symvers. It may be nil.
	Symvers map[string]SymverEntry
}

// skipDir reports whether a directory under lib/modules/<release> is not
// part of the module set (the build and source links or trees).
func skipDir(rel string) bool { return rel == "build" || rel == "source" }

// ListModules returns the relative paths of module files under dir
// (lib/modules/<release>), sorted, skipping build/ and source/. dir may be
// a symlink to the directory; it is an error if it is not a directory.
// Symlinks inside dir are not followed.
func ListModules(dir string) ([]string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(root); err != nil {
		return nil, err
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%s: not a directory", dir)
	}
	var out []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if skipDir(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && kmodule.IsModulePath(rel) {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(out)
	return out, nil
}

// LoadDir parses every module under dir (lib/modules/<release>) using all
// cores. Errors name the offending file.
func LoadDir(dir, release string) (*Tree, error) {
	paths, err := ListModules(dir)
	if err != nil {
		return nil, fmt.Errorf("modtree: %w", err)
	}
	t := &Tree{Release: release, Modules: make([]*Entry, len(paths))}
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, rel := range paths {
		g.Go(func() error {
			m, err := kmodule.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
			if err != nil {
				return fmt.Errorf("modtree: %w", err)
			}
			t.Modules[i] = &Entry{Path: rel, Module: m}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return t, nil
}

// ProblemKind classifies a validation problem.
type ProblemKind string

// Problem kinds.
const (
	Unresolved  ProblemKind = "unresolved"
	CRCMismatch ProblemKind = "crc-mismatch"
	Vermagic    ProblemKind = "vermagic"
)

// Problem is one finding of Validate.
type Problem struct {
	Kind   ProblemKind
	Module string // module path
	Origin string
	Symbol string
	Detail string
}

func (p Problem) String() string {
	who := p.Module
	if p.Origin != "" {
		who = p.Origin + ": " + p.Module
	}
	switch p.Kind {
	case Unresolved:
		return fmt.Sprintf("%s needs unknown symbol %s", who, p.Symbol)
	case CRCMismatch:
		return fmt.Sprintf("%s disagrees about version of symbol %s (%s)", who, p.Symbol, p.Detail)
	default:
		return fmt.Sprintf("%s: %s", who, p.Detail)
	}
}

// ValidateOptions selects the checks of Validate.
type ValidateOptions struct {
	// Vermagic, if set, is the vermagic every module must carry.
	Vermagic string
	// Only, if non-nil, restricts the reported problems to these module
	// paths (the rest of the tree still provides symbols).
	Only map[string]bool
}

// Validate checks that every module's needed symbols resolve against the
// other modules or Symvers, that CRCs agree wherever both sides carry one,
// and (optionally) that vermagic matches. Weak symbols are not reported.
// Without Symvers, symbols not exported by a module are not reported as
// unresolved (they are assumed to be in vmlinux).
func (t *Tree) Validate(o ValidateOptions) []Problem {
	exports := map[string]kmodule.Symbol{}
	for _, e := range t.Modules {
		for _, s := range e.Exports {
			exports[s.Name] = s
		}
	}
	var out []Problem
	for _, e := range t.Modules {
		if o.Only != nil && !o.Only[e.Path] {
			continue
		}
		if o.Vermagic != "" && e.Vermagic() != o.Vermagic {
			out = append(out, Problem{Kind: Vermagic, Module: e.Path, Origin: e.Origin,
				Detail: fmt.Sprintf("vermagic %q, want %q", e.Vermagic(), o.Vermagic)})
		}
		for _, n := range e.Needs {
			if n.Weak {
				continue
			}
			if x, ok := exports[n.Name]; ok {
				if n.HasCRC && x.HasCRC && uint32(n.CRC) != uint32(x.CRC) {
					out = append(out, Problem{Kind: CRCMismatch, Module: e.Path, Origin: e.Origin, Symbol: n.Name,
						Detail: fmt.Sprintf("module has 0x%08x, provider has 0x%08x", uint32(n.CRC), uint32(x.CRC))})
				}
				continue
			}
			if t.Symvers == nil {
				continue
			}
			sv, ok := t.Symvers[n.Name]
			if !ok {
				if n.VersionsOnly || n.Name == "__this_module" || n.Name == "_GLOBAL_OFFSET_TABLE_" {
					continue
				}
				out = append(out, Problem{Kind: Unresolved, Module: e.Path, Origin: e.Origin, Symbol: n.Name})
				continue
			}
			if n.HasCRC && uint32(n.CRC) != uint32(sv.CRC) {
				out = append(out, Problem{Kind: CRCMismatch, Module: e.Path, Origin: e.Origin, Symbol: n.Name,
					Detail: fmt.Sprintf("module has 0x%08x, Module.symvers has 0x%08x", uint32(n.CRC), uint32(sv.CRC))})
			}
		}
	}
	return out
}
