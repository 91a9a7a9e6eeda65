package intree

import (
	"path"
	"strings"
)

// sourcesOf returns the source files (that exist in the tree) of objects
// of dir: each object's composite parts, or the object itself, as .c, .S
// or .rs files.
func (p *planner) sourcesOf(dir string, objects []string, code map[string]bool) []string {
	var out []string
	comp := p.t.compIndex(dir)
	for _, o := range objects {
		parts := comp[strings.TrimSuffix(o, ".o")]
		if len(parts) == 0 {
			parts = []string{o}
		}
		for _, part := range parts {
			if !strings.HasSuffix(part, ".o") || strings.Contains(part, "$") {
				continue
			}
			stem := path.Join(dir, strings.TrimSuffix(part, ".o"))
			for _, ext := range []string{".c", ".S", ".rs"} {
				if code[stem+ext] {
					out = append(out, stem+ext)
				}
			}
		}
	}
	return out
}

// claims maps every source file that some directory's obj-* or lib-*
// lines build (any key, any condition; as an object or a composite part;
// variables expanded) to those objects ("dir/foo.o"). What cannot be
// expanded is refused for file units (checkObjects).
func (p *planner) claims(code map[string]bool) map[string][]string {
	out := map[string][]string{}
	for dir, lines := range p.t.dirs {
		for i := range lines {
			l := &lines[i]
			if l.kind != kindAssign || !strings.HasPrefix(l.name, "obj-") && !strings.HasPrefix(l.name, "lib-") {
				continue
			}
			items, _ := p.t.expand(dir, l.value)
			for _, it := range items {
				if !strings.HasSuffix(it, ".o") {
					continue
				}
				obj := path.Join(dir, it)
				for _, f := range p.sourcesOf(dir, []string{it}, code) {
					out[f] = append(out[f], obj)
				}
			}
		}
	}
	return out
}

// unitObject reports whether obj ("dir/foo.o") is built by a unit.
func (p *planner) unitObject(obj string) bool {
	d := path.Dir(obj)
	if u := p.units[d]; u != nil && !u.whole && u.objects[path.Base(obj)] {
		return true
	}
	return p.wholeAbove(d) != ""
}

// ownFiles decides which code files are the units' own module sources,
// where references to the fragment's options change only the modules
// built here: every file of a whole unit, and a file unit's directory's
// files with its objects' sources; less any file that another object,
// anywhere, builds (built in, or a stock module) and any file other code
// #includes (that code may be built into the kernel), transitively.
func (p *planner) ownFiles(scan *codeScan, code map[string]bool) map[string]bool {
	own := map[string]bool{}
	for dir, u := range p.units {
		for f := range code {
			if u.whole && strings.HasPrefix(f, dir+"/") || !u.whole && path.Dir(f) == dir {
				own[f] = true
			}
		}
		if !u.whole {
			var objs []string
			for o := range u.objects {
				objs = append(objs, o)
			}
			for _, f := range p.sourcesOf(dir, objs, code) {
				own[f] = true
			}
		}
	}
	for f, objs := range p.claims(code) {
		for _, o := range objs {
			if own[f] && !p.unitObject(o) {
				delete(own, f)
			}
		}
	}
	edges := resolveIncludes(scan.includes, code, own)
	for changed := true; changed; {
		changed = false
		for _, e := range edges {
			if own[e[1]] && !own[e[0]] {
				delete(own, e[1])
				changed = true
			}
		}
	}
	return own
}

// resolveIncludes maps includes to the files of cands they may name: a
// quoted include relative to the including file, and any include whose
// path (with a directory) ends a candidate's path.
func resolveIncludes(incs []include, code, cands map[string]bool) [][2]string {
	var out [][2]string
	for _, inc := range incs {
		if inc.quoted {
			if r := path.Join(path.Dir(inc.from), inc.target); code[r] {
				if cands[r] {
					out = append(out, [2]string{inc.from, r})
				}
				continue
			}
		}
		if !strings.Contains(inc.target, "/") {
			continue
		}
		suffix := "/" + path.Clean(inc.target)
		for c := range cands {
			if strings.HasSuffix(c, suffix) {
				out = append(out, [2]string{inc.from, c})
			}
		}
	}
	return out
}
