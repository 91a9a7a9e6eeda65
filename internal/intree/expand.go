package intree

import (
	"regexp"
	"strings"
)

// varRefRE matches an item that is one plain variable reference,
// $(name) or ${name}.
var varRefRE = regexp.MustCompile(`^\$[({]([A-Za-z0-9_.-]+)[)}]$`)

// maxExpandDepth bounds nested variable references, and maxExpandItems
// what one value may expand to (references repeated at every level grow
// it exponentially); beyond either the item is opaque.
const (
	maxExpandDepth = 8
	maxExpandItems = 1 << 14
)

// expand returns the items of a kbuild value of dir with every plain
// variable reference replaced by the union of the values that dir's
// kbuild files assign to it, whatever their conditions (the most that may
// be built, as claims need). opaque are the items it cannot expand (make
// functions, variables assigned nowhere in dir, too deep a nesting).
func (t *tree) expand(dir, value string) (items, opaque []string) {
	t.expandInto(dir, value, 0, map[string]bool{}, &items, &opaque)
	return items, opaque
}

func (t *tree) expandInto(dir, value string, depth int, active map[string]bool, items, opaque *[]string) {
	for _, f := range strings.Fields(strings.ReplaceAll(value, "$(SRCARCH)", t.srcarch)) {
		if !strings.Contains(f, "$") {
			*items = append(*items, f)
			continue
		}
		m := varRefRE.FindStringSubmatch(f)
		vals := t.assigned(dir, m)
		if m == nil || vals == nil || depth >= maxExpandDepth || active[m[1]] || len(*items)+len(*opaque) >= maxExpandItems {
			*opaque = append(*opaque, f)
			continue
		}
		active[m[1]] = true
		for _, v := range vals {
			t.expandInto(dir, v, depth+1, active, items, opaque)
		}
		delete(active, m[1])
	}
}

// assigned returns the values dir's kbuild lines assign to the variable
// of the reference m (a varRefRE match), nil when none does.
func (t *tree) assigned(dir string, m []string) []string {
	if m == nil {
		return nil
	}
	var out []string
	lines := t.dirs[dir]
	for i := range lines {
		if l := &lines[i]; l.kind == kindAssign && l.name == m[1] {
			out = append(out, l.value)
		}
	}
	return out
}

// opaqueLine returns the first obj- or lib- line of dir, or line of a
// composite object those lines list, whose value this tool cannot
// expand, and the item, or nil: such a line may build any of dir's files
// into the kernel.
func (t *tree) opaqueLine(dir string) (*mkLine, string) {
	lines := t.dirs[dir]
	objects := map[string]bool{}
	for i := range lines {
		l := &lines[i]
		if l.kind != kindAssign || !strings.HasPrefix(l.name, "obj-") && !strings.HasPrefix(l.name, "lib-") {
			continue
		}
		items, op := t.expand(dir, l.value)
		if len(op) > 0 {
			return l, op[0]
		}
		for _, it := range items {
			objects[strings.TrimSuffix(it, ".o")] = true
		}
	}
	for i := range lines {
		l := &lines[i]
		if l.kind != kindAssign || !objects[compositeName(l.name)] {
			continue
		}
		if _, op := t.expand(dir, l.value); len(op) > 0 {
			return l, op[0]
		}
	}
	return nil, ""
}
