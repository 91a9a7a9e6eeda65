package symcrc

import (
	"bytes"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/csource"
)

// maxDepth bounds macro expansion (EXPORT_TRACEPOINT_SYMBOL_GPL →
// EXPORT_STATIC_CALL_GPL → EXPORT_SYMBOL_GPL is three levels).
const maxDepth = 6

// rules are the macros whose expansion exports something, by name (a
// name may have several definitions, under different #ifs: all count).
type rules map[string][]macroDef

// fileScan is what one source file contributes to the index.
type fileScan struct {
	exports  []string // names the file exports
	patterns []string // regexps of token-pasted names of exports in macros it does not invoke
	includes []string // files it #includes with quotes, relative to the tree
}

// headerScan is what a header contributes: its export macros, and the
// export calls outside macros (kernel/rcu/tree_plugin.h exports for the
// tree.c that includes it), unexpanded until all headers' macros are known.
type headerScan struct {
	rules rules
	calls []macroCall
}

// scanHeader returns the export macros of a header (bodies with an
// EXPORT_ call) and its own export calls; zero when it has none.
func scanHeader(data []byte) headerScan {
	if !bytes.Contains(data, []byte("EXPORT_")) {
		return headerScan{}
	}
	defs, rest, bodies := splitDefines(csource.StripComments(data))
	var out headerScan
	for i, d := range defs {
		d.calls = scanCalls(bodies[i], exportLike)
		if len(d.calls) == 0 || isTerminal(d.name) {
			continue
		}
		if out.rules == nil {
			out.rules = rules{}
		}
		out.rules[d.name] = append(out.rules[d.name], d)
	}
	out.calls = scanCalls(rest, exportLike)
	return out
}

// headerExports expands a header's own export calls.
func headerExports(calls []macroCall, global rules) []string {
	x := expander{global: global, seen: map[string]bool{}}
	for _, c := range calls {
		x.expand(c, nil, 0)
	}
	return x.names()
}

// scanSource scans a .c or .S file (rel is its path in the tree) for the
// names it exports, given the export macros of all headers (global).
func scanSource(rel string, data []byte, global rules, globalNames [][]byte) fileScan {
	var fs fileScan
	for _, inc := range quotedIncludes(data) {
		fs.includes = append(fs.includes, path.Join(path.Dir(rel), inc))
	}
	if !bytes.Contains(data, []byte("EXPORT_")) && !containsAny(data, globalNames) {
		return fs
	}
	defs, rest, bodies := splitDefines(csource.StripComments(data))
	defined := make(map[string]bool, len(defs))
	for _, d := range defs {
		defined[d.name] = true
	}
	want := func(id string) bool { return exportLike(id) || defined[id] || global[id] != nil }
	local := rules{}
	for i := range defs {
		defs[i].calls = scanCalls(bodies[i], want)
		local[defs[i].name] = append(local[defs[i].name], defs[i])
	}
	x := expander{local: local, global: global, seen: map[string]bool{}}
	for _, c := range scanCalls(rest, want) {
		x.expand(c, nil, 0)
	}
	fs.exports = x.names()
	fs.patterns = localPatterns(defs)
	return fs
}

// quotedIncludes returns the names of the #include "x.c" and
// #include "x.h" lines of data.
func quotedIncludes(data []byte) []string {
	var out []string
	for off := 0; ; {
		i := bytes.Index(data[off:], []byte("include"))
		if i < 0 {
			return out
		}
		at := off + i
		off = at + len("include")
		lineStart := bytes.LastIndexByte(data[:at], '\n') + 1
		if string(bytes.TrimSpace(data[lineStart:at])) != "#" {
			continue
		}
		lineEnd := bytes.IndexByte(data[off:], '\n')
		if lineEnd < 0 {
			lineEnd = len(data) - off
		}
		rest := bytes.TrimSpace(data[off : off+lineEnd])
		name, ok := bytes.CutPrefix(rest, []byte("\""))
		if end := bytes.IndexByte(name, '"'); ok && end > 0 {
			if n := string(name[:end]); !strings.ContainsAny(n, " <>") && (strings.HasSuffix(n, ".c") || strings.HasSuffix(n, ".h")) {
				out = append(out, n)
			}
		}
	}
}

// containsAny reports whether data contains one of the needles.
func containsAny(data []byte, needles [][]byte) bool {
	for _, n := range needles {
		if bytes.Contains(data, n) {
			return true
		}
	}
	return false
}

// expander expands calls to export macros into the names they export.
type expander struct {
	local, global rules
	seen          map[string]bool
}

func (x *expander) add(name string) { x.seen[name] = true }

func (x *expander) names() []string {
	out := make([]string, 0, len(x.seen))
	for n := range x.seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// expand adds the names that call c exports; env holds the values of the
// enclosing macro's parameters.
func (x *expander) expand(c macroCall, env map[string]string, depth int) {
	if isTerminal(c.name) {
		if len(c.args) > 0 {
			if n, ok := eval(c.args[0], env); ok {
				x.add(n)
			}
		}
		return
	}
	defs := x.local[c.name]
	if defs == nil {
		defs = x.global[c.name]
	}
	expanded := false
	for _, d := range defs {
		if depth >= maxDepth || (d.params != nil) != (c.args != nil) {
			continue
		}
		inner := make(map[string]string, len(d.params))
		for i, p := range d.params {
			if i < len(c.args) {
				v, _ := eval(c.args[i], env)
				inner[p] = v
			}
		}
		for _, bc := range d.calls {
			x.expand(bc, inner, depth+1)
		}
		expanded = true
	}
	if !expanded && exportLike(c.name) && len(c.args) > 0 {
		// An export macro without a definition the scan can use
		// (EXPORT_WEXT_HANDLER-like wrappers): its first argument.
		if n, ok := eval(c.args[0], env); ok {
			x.add(n)
		}
	}
}

// localPatterns returns, for the export calls in a file's own macros
// whose argument pastes a parameter ("__asan_load##size"), a regexp of
// the names they can produce. They locate symbols of macros the scan
// could not expand (invoked from another file, or with computed
// arguments). Patterns with fewer than 3 literal characters are useless
// and left out.
func localPatterns(defs []macroDef) []string {
	var out []string
	for _, d := range defs {
		if len(d.params) == 0 {
			continue
		}
		params := map[string]bool{}
		for _, p := range d.params {
			params[p] = true
		}
		for _, c := range d.calls {
			if !isTerminal(c.name) || len(c.args) == 0 {
				continue
			}
			if re, ok := pastePattern(c.args[0], params); ok {
				out = append(out, re)
			}
		}
	}
	return out
}

// pastePattern turns "a##p##b" (p a parameter) into ^a[A-Za-z0-9_]+b$.
func pastePattern(arg string, params map[string]bool) (string, bool) {
	var sb strings.Builder
	literal, wild := 0, false
	sb.WriteString("^")
	for _, piece := range strings.Split(arg, "##") {
		piece = strings.TrimSpace(piece)
		switch {
		case params[piece]:
			sb.WriteString("[A-Za-z0-9_]+")
			wild = true
		case isName(piece):
			sb.WriteString(regexp.QuoteMeta(piece))
			literal += len(piece)
		default:
			return "", false
		}
	}
	sb.WriteString("$")
	return sb.String(), wild && literal >= 3
}
