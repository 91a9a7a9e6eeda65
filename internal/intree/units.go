package intree

import (
	"fmt"
	"path"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// unitAcc collects one unit while planning.
type unitAcc struct {
	dir      string
	whole    bool
	objects  map[string]bool // file units: object names (foo.o) in dir
	selected map[string]bool // the options whose lines select it
	// lines are the obj lines that select it (for messages).
	lines []objLine
}

func (p *planner) unit(dir string) *unitAcc {
	u := p.units[dir]
	if u == nil {
		u = &unitAcc{dir: dir, objects: map[string]bool{}, selected: map[string]bool{}}
		p.units[dir] = u
	}
	return u
}

// parentOf is the parent of a slash directory path ("" for top-level ones).
func parentOf(dir string) string {
	if d := path.Dir(dir); d != "." {
		return d
	}
	return ""
}

// reach tells whether kbuild descends into dir under config c (named
// which, for the memo): an ancestor's obj-<key> += <dir>/ (or subdir-)
// line that builds, from a reached ancestor, or a top-level list of the
// top or arch Makefile.
func (p *planner) reach(dir string, c kconfig.Config, which string) tri {
	if dir == "" {
		return yes
	}
	key := which + "\x00" + dir
	if r, ok := p.reachMemo[key]; ok {
		return r
	}
	res := p.reachTop(dir, c)
	for a := parentOf(dir); res != yes; a = parentOf(a) {
		rel := dir
		if a != "" {
			rel = strings.TrimPrefix(dir, a+"/")
		}
		for _, ol := range p.t.objLines(a) {
			if !listsDir(ol, rel) {
				continue
			}
			r := ol.builds(c)
			if r != no {
				if ra := p.reach(a, c, which); ra == no {
					r = no
				} else if ra == unknown {
					r = unknown
				}
			}
			if r == yes {
				res = yes
				break
			}
			if r == unknown {
				res = unknown
			}
		}
		if a == "" {
			break
		}
	}
	p.reachMemo[key] = res
	return res
}

// listsDir reports whether an obj or subdir line descends into rel.
func listsDir(ol objLine, rel string) bool {
	for _, it := range ol.items {
		if it == rel+"/" || ol.subdir && strings.TrimSuffix(it, "/") == rel {
			return true
		}
	}
	return false
}

// reachTop looks dir up in the top-level lists (core-y, libs-y,
// drivers-y, ... of the top and arch Makefiles).
func (p *planner) reachTop(dir string, c kconfig.Config) tri {
	for i := range p.t.top {
		l := &p.t.top[i]
		if l.kind != kindAssign || !strings.HasSuffix(l.name, "-y") {
			continue
		}
		for _, it := range strings.Fields(strings.ReplaceAll(l.value, "$(SRCARCH)", p.t.srcarch)) {
			// The top Makefile's conditionals are about what make is
			// asked to do (config targets, external modules), not the
			// config: only a config condition that is false counts.
			if it == dir+"/" && evalBranches(l.conds, c) != no {
				return yes
			}
		}
	}
	return no
}

// deriveUnits finds, for every option that becomes m, the obj lines that
// select it and makes the units: objects of a directory, or a directory
// kbuild did not descend into before (a whole unit).
func (p *planner) deriveUnits() {
	for dir := range p.t.dirs {
		for _, ol := range p.t.objLines(dir) {
			if ol.opt == "" || !p.modOpts[ol.opt] {
				continue
			}
			switch evalBranches(ol.conds, p.o.After) {
			case no:
				continue
			case unknown:
				p.refuse(ol.opt, ol.mkLine, "is read by make only under a condition this tool cannot evaluate (%s)", condText(ol.conds))
				continue
			}
			p.addItems(ol)
		}
	}
	p.checkUnits()
}

// condText names the conditionals of a line.
func condText(bs []branch) string {
	var out []string
	for _, b := range bs {
		c := b.cond
		if c == "" {
			c = "else"
		}
		out = append(out, fmt.Sprintf("%s:%d: %s", b.file, b.line, c))
	}
	return strings.Join(out, "; ")
}

// addItems records what one obj-$(CONFIG_X) line of an option selects.
func (p *planner) addItems(ol objLine) {
	for _, it := range ol.items {
		switch {
		case strings.Contains(it, "$"):
			p.refuse(ol.opt, ol.mkLine, "lists %s, which this tool cannot expand", it)
		case strings.HasSuffix(it, "/") && !ol.subdir:
			sub := path.Join(ol.dir, strings.TrimSuffix(it, "/"))
			switch p.reach(sub, p.o.Before, "before") {
			case yes:
				continue // already built with the stock config: the line changes nothing
			case unknown:
				p.refuse(ol.opt, ol.mkLine, "descends into %s/, and whether the stock config already builds it cannot be told", sub)
				continue
			}
			u := p.unit(sub)
			u.whole = true
			u.selected[ol.opt] = true
			u.lines = append(u.lines, ol)
		case strings.HasSuffix(it, ".o") && !strings.Contains(it, "/") && !ol.subdir:
			u := p.unit(ol.dir)
			u.objects[it] = true
			u.selected[ol.opt] = true
			u.lines = append(u.lines, ol)
		default:
			p.refuse(ol.opt, ol.mkLine, "lists %s, which is neither an object of its directory nor a subdirectory", it)
		}
	}
}

// checkUnits checks the units: kbuild reaches them with the new config,
// units (file or whole) inside a whole unit merge into it, and no object of a file
// unit is also built (into the kernel or as a stock module) by another
// line.
func (p *planner) checkUnits() {
	for dir, u := range p.units {
		// A unit inside a whole unit is built by it (every option goes to
		// every build, so its make descends there too): merge it.
		if w := p.wholeAbove(parentOf(dir)); w != "" && dir != "" {
			wu := p.units[w]
			for o := range u.selected {
				wu.selected[o] = true
			}
			delete(p.units, dir)
			continue
		}
		// A whole unit is reached through its own line (the option is m
		// now); a file unit's directory must be reached already.
		if p.reach(dir, p.o.After, "after") != yes {
			for o := range u.selected {
				p.refuseOpt(o, "kbuild does not descend into %s/ with this config (or this tool cannot tell that it does), so no module would be built there", dir)
			}
			continue
		}
		if !u.whole {
			p.checkObjects(u)
		}
	}
}

// wholeAbove returns the whole unit dir is in (dir itself or an
// ancestor), or "".
func (p *planner) wholeAbove(dir string) string {
	for d := dir; ; d = parentOf(d) {
		if u := p.units[d]; u != nil && u.whole {
			return d
		}
		if d == "" {
			return ""
		}
	}
}

// checkObjects refuses objects of a file unit that another line of the
// directory builds with the stock or the new config: into the kernel
// (kbuild then builds no module) or as a stock module; and any the
// directory's lib- lines list.
func (p *planner) checkObjects(u *unitAcc) {
	if l, it := p.t.opaqueLine(u.dir); l != nil {
		for o := range u.selected {
			p.refuse(o, l, "lists %s, which this tool cannot expand: it may build the module's sources into the kernel", it)
		}
		return
	}
	lines := p.t.dirs[u.dir]
	for i := range lines {
		l := &lines[i]
		if l.kind != kindAssign || !strings.HasPrefix(l.name, "lib-") {
			continue
		}
		items, _ := p.t.expand(u.dir, l.value)
		for _, it := range items {
			if u.objects[it] {
				for o := range u.selected {
					p.refuse(o, l, "also lists %s in %s, which links it into the kernel", it, l.name)
				}
			}
		}
	}
	for _, ol := range p.t.objLines(u.dir) {
		if ol.subdir || u.selected[ol.opt] && ol.opt != "" {
			continue
		}
		items, _ := p.t.expand(u.dir, ol.value)
		for _, it := range items {
			if !u.objects[it] {
				continue
			}
			for _, c := range []kconfig.Config{p.o.Before, p.o.After} {
				if r := ol.builds(c); r != no {
					for o := range u.selected {
						p.refuse(o, ol.mkLine, "also builds %s (%s), which the stock kernel already has built in or as a module", it, ol.name)
					}
					break
				}
			}
		}
	}
}
