package modtree

import "sort"

// Overlay returns a new tree: t without the modules at the paths in drop,
// plus the modules of add (which replace modules of t at the same path).
// Release, Symvers and the other files are t's; modules are sorted by
// path. t is not changed.
func (t *Tree) Overlay(add []*Entry, drop map[string]bool) *Tree {
	out := *t
	byPath := map[string]bool{}
	for _, e := range add {
		byPath[e.Path] = true
	}
	out.Modules = make([]*Entry, 0, len(t.Modules)+len(add))
	for _, e := range t.Modules {
		if !drop[e.Path] && !byPath[e.Path] {
			out.Modules = append(out.Modules, e)
		}
	}
	out.Modules = append(out.Modules, add...)
	sortEntries(out.Modules)
	out.closer = nil
	return &out
}

// sortEntries sorts entries by path.
func sortEntries(es []*Entry) {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Path < es[j].Path })
}
