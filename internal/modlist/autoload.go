package modlist

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// Autoload is a module entry's autoload: field, which puts modules on
// WSL's loadKernelModules= list (modprobed at boot, after the defaults):
// autoload: true for every module the entry builds, autoload: [a, b] for
// the named ones (packages that build several .ko files), false or
// absent for none.
type Autoload struct {
	// All is autoload: true.
	All bool
	// Names are the listed module names.
	Names []string
	// Pos locates the autoload: value; NamePos each of Names.
	Pos     Pos
	NamePos []Pos

	problem string // what is wrong with the value, reported by Parse
}

// Enabled reports whether the entry asks for any module to be loaded.
func (a Autoload) Enabled() bool { return a.All || len(a.Names) > 0 }

// UnmarshalYAML implements go-yaml's NodeUnmarshaler: it keeps the
// positions of the value and of each name.
func (a *Autoload) UnmarshalYAML(n ast.Node) error {
	*a = Autoload{Pos: nodePos(n)}
	switch x := n.(type) {
	case *ast.BoolNode:
		a.All = x.Value
	case *ast.NullNode:
	case *ast.SequenceNode:
		if len(x.Values) == 0 {
			a.problem = "an empty list; write false or leave autoload out"
		}
		for _, v := range x.Values {
			s, ok := v.(*ast.StringNode)
			if !ok {
				a.problem = fmt.Sprintf("want module names, got %s", strings.TrimSpace(v.String()))
				return nil
			}
			a.Names = append(a.Names, s.Value)
			a.NamePos = append(a.NamePos, nodePos(v))
		}
	default:
		a.problem = fmt.Sprintf("want true, false or a list of module names, got %s", strings.TrimSpace(n.String()))
	}
	return nil
}

func nodePos(n ast.Node) Pos {
	if t := n.GetToken(); t != nil && t.Position != nil {
		return Pos{t.Position.Line, t.Position.Column}
	}
	return Pos{}
}

// modNameRE is a module name as modprobe takes it.
var modNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (v *validator) autoload(m *Module, p, fld string) {
	a := &m.Autoload
	if a.problem != "" {
		v.badAt(a.Pos, fld+".autoload", "%s", a.problem)
		return
	}
	seen := map[string]int{}
	for j, n := range a.Names {
		f := fmt.Sprintf("%s.autoload[%d]", fld, j)
		switch {
		case strings.HasSuffix(n, ".ko") || strings.Contains(n, ".ko."):
			v.badAt(a.NamePos[j], f, "%q: a module name, without .ko", n)
		case !modNameRE.MatchString(n):
			v.badAt(a.NamePos[j], f, "%q is not a module name (letters, digits, '_' and '-')", n)
		default:
			if k, dup := seen[ModuleName(n)]; dup {
				v.badAt(a.NamePos[j], f, "%q is listed twice (also autoload[%d])", n, k)
			}
			seen[ModuleName(n)] = j
		}
	}
}

// ModuleName returns the name modprobe knows a module by, from a .ko path
// (extra/x/ddcci-backlight.ko, compressed or not) or a name: the file name
// without its suffixes, with '-' written '_' (modprobe treats them alike,
// the kernel names modules with '_').
func ModuleName(file string) string {
	n := path.Base(strings.ReplaceAll(file, "\\", "/"))
	for _, s := range []string{".gz", ".xz", ".zst"} {
		n = strings.TrimSuffix(n, s)
	}
	n = strings.TrimSuffix(n, ".ko")
	return strings.ReplaceAll(n, "-", "_")
}

// AutoloadNames returns WSL's loadKernelModules= names for the list, in
// list order, each once, as ModuleName spells them. built maps a listed
// module's Name to what its build installed (.ko paths, as the build's
// Files, or module names): autoload: true takes all of them, a list of
// names is taken as written. Entries missing from built (not built, or
// left out with keep-going) add nothing.
func (l *List) AutoloadNames(built map[string][]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range l.autoloadEntries(built) {
		if !seen[e.name] {
			seen[e.name] = true
			out = append(out, e.name)
		}
	}
	return out
}

// CheckAutoload checks every name AutoloadNames would return with
// resolve (for the pipeline: whether depmod's output of the image knows
// the module). Each unknown name is an *Error at its position in the file
// (modules[i].autoload[j], or modules[i].autoload for autoload: true); all
// are returned joined. Entries missing from built are not checked.
func (l *List) CheckAutoload(built map[string][]string, resolve func(name string) bool) error {
	var errs []error
	for _, e := range l.autoloadEntries(built) {
		if resolve(e.name) {
			continue
		}
		m := &l.Modules[e.module]
		msg := fmt.Sprintf("module %q is not in the image, so WSL could not load it", e.name)
		if m.Autoload.All {
			msg = fmt.Sprintf("module %q (built by %s) is not in the image, so WSL could not load it", e.name, m.Name)
		}
		errs = append(errs, &Error{File: l.File, Line: e.pos.Line, Column: e.pos.Column, Field: e.field, Msg: msg})
	}
	return errors.Join(errs...)
}

type autoloadEntry struct {
	name   string
	module int // index in l.Modules
	field  string
	pos    Pos
}

func (l *List) autoloadEntries(built map[string][]string) []autoloadEntry {
	var out []autoloadEntry
	for i := range l.Modules {
		m := &l.Modules[i]
		files, ok := built[m.Name]
		if !ok || !m.Autoload.Enabled() {
			continue
		}
		if m.Autoload.All {
			for _, f := range files {
				out = append(out, autoloadEntry{ModuleName(f), i, fmt.Sprintf("modules[%d].autoload", i), m.Autoload.Pos})
			}
			continue
		}
		for j, n := range m.Autoload.Names {
			p := m.Autoload.Pos
			if j < len(m.Autoload.NamePos) {
				p = m.Autoload.NamePos[j]
			}
			out = append(out, autoloadEntry{ModuleName(n), i, fmt.Sprintf("modules[%d].autoload[%d]", i, j), p})
		}
	}
	return out
}
