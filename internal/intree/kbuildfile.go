package intree

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// lineKind classifies a logical line of a kbuild file.
type lineKind int

const (
	kindOther  lineKind = iota // rules, recipes, define bodies, anything else
	kindAssign                 // VAR op value
	kindCond                   // ifeq, ifneq, ifdef, ifndef, else ...
	kindInclude
)

// mkLine is one logical line (continuations joined, comment removed) of a
// kbuild file, with the conditional branches it sits in.
type mkLine struct {
	file  string // slash path relative to the source tree
	line  int    // first physical line
	text  string // the logical line, comment removed
	kind  lineKind
	name  string // kindAssign: the variable name; kindInclude: the path
	op    string // kindAssign: "+=", ":=", "=", ...
	value string // kindAssign: the value
	conds []branch
}

// branch is one branch of a conditional: the branch is taken when every
// cond in not is false and cond (if set) is true.
type branch struct {
	not  []string
	cond string // "" for a final else
	file string
	line int
}

// splitLogical splits make text into logical lines: backslash-newline
// continues a line, '#' outside $(...) starts a comment (\# is a
// literal). Each line comes with its first physical line number.
func splitLogical(data []byte) (lines []string, nums []int) {
	phys := strings.Split(string(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))), "\n")
	for i := 0; i < len(phys); i++ {
		start := i
		var b strings.Builder
		l := phys[i]
		for strings.HasSuffix(l, "\\") && !strings.HasSuffix(l, "\\\\") && i+1 < len(phys) {
			b.WriteString(strings.TrimSuffix(l, "\\"))
			b.WriteByte(' ')
			i++
			l = phys[i]
		}
		b.WriteString(l)
		lines = append(lines, stripMakeComment(b.String()))
		nums = append(nums, start+1)
	}
	return lines, nums
}

// stripMakeComment removes a make comment: from the first '#' that is
// neither escaped nor inside a $(...) or ${...} reference.
func stripMakeComment(s string) string {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
		case c == '$' && i+1 < len(s) && (s[i+1] == '(' || s[i+1] == '{'):
			depth++
			i++
		case (c == ')' || c == '}') && depth > 0:
			depth--
		case c == '#' && depth == 0:
			return s[:i]
		}
	}
	return s
}

// condKeywords start conditional directives.
var condKeywords = []string{"ifeq", "ifneq", "ifdef", "ifndef"}

// isCondStart reports whether t (trimmed) opens a conditional.
func isCondStart(t string) bool {
	for _, k := range condKeywords {
		if t == k || strings.HasPrefix(t, k+" ") || strings.HasPrefix(t, k+"\t") || strings.HasPrefix(t, k+"(") {
			return true
		}
	}
	return false
}

// parseKbuild parses a kbuild file's text (rel names it for messages).
// Conditional directives are tracked (with define/endef bodies kept as
// "other" lines); unbalanced conditionals end at the end of the file.
func parseKbuild(rel string, data []byte) []mkLine {
	lines, nums := splitLogical(data)
	var out []mkLine
	var stack [][]branch // per open if: its branches so far
	inDefine := false
	cur := func() []branch {
		var bs []branch
		for _, s := range stack {
			bs = append(bs, s[len(s)-1])
		}
		return bs
	}
	for i, raw := range lines {
		t := strings.TrimSpace(raw)
		if t == "" {
			continue
		}
		ml := mkLine{file: rel, line: nums[i], text: t, conds: cur()}
		switch {
		case inDefine:
			inDefine = t != "endef" && !strings.HasPrefix(t, "endef ")
		case strings.HasPrefix(t, "define ") || strings.HasPrefix(t, "override define ") || t == "define":
			inDefine = true
		case strings.HasPrefix(raw, "\t"):
			// A recipe line.
		case isCondStart(t):
			ml.kind = kindCond
			stack = append(stack, []branch{{cond: t, file: rel, line: nums[i]}})
		case t == "else" || strings.HasPrefix(t, "else ") || strings.HasPrefix(t, "else\t"):
			ml.kind = kindCond
			if n := len(stack); n > 0 {
				top := stack[n-1]
				last := top[len(top)-1]
				not := append(append([]string{}, last.not...), last.cond)
				stack[n-1] = append(top, branch{not: not, cond: strings.TrimSpace(strings.TrimPrefix(t, "else")), file: rel, line: nums[i]})
			}
		case t == "endif" || strings.HasPrefix(t, "endif "):
			ml.kind = kindCond
			if n := len(stack); n > 0 {
				stack = stack[:n-1]
			}
		case strings.HasPrefix(t, "include ") || strings.HasPrefix(t, "-include ") || strings.HasPrefix(t, "sinclude "):
			ml.kind = kindInclude
			_, ml.name, _ = strings.Cut(t, " ")
			ml.name = strings.TrimSpace(ml.name)
		default:
			if name, op, value, ok := splitAssign(t); ok {
				ml.kind, ml.name, ml.op, ml.value = kindAssign, name, op, value
			}
		}
		out = append(out, ml)
	}
	return out
}

// splitAssign splits "NAME op VALUE" (op one of = := ::= += ?= !=); a
// leading override or export is dropped. NAME may hold $(...) references
// with spaces. A rule ("target: prerequisites") is not an assignment.
func splitAssign(t string) (name, op, value string, ok bool) {
	for _, p := range []string{"override ", "export "} {
		t = strings.TrimPrefix(t, p)
	}
	depth, space := 0, false
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c == '$' && i+1 < len(t) && (t[i+1] == '(' || t[i+1] == '{'):
			if space {
				return "", "", "", false
			}
			depth++
			i++
			continue
		case (c == ')' || c == '}') && depth > 0:
			depth--
			continue
		case depth > 0:
			continue
		case c == ' ' || c == '\t':
			space = true
			continue
		}
		for _, o := range []string{"::=", ":=", "+=", "?=", "!=", "="} {
			if strings.HasPrefix(t[i:], o) {
				name = strings.TrimSpace(t[:i])
				if name == "" {
					return "", "", "", false
				}
				return name, o, strings.TrimSpace(t[i+len(o):]), true
			}
		}
		if c == ':' || space {
			// A rule, or words before an operator: not an assignment.
			return "", "", "", false
		}
	}
	return "", "", "", false
}

// kbuildFileOf returns the kbuild file of directory dir (relative) in the
// source tree: Kbuild when it exists, else Makefile, as kbuild reads them;
// "" when there is none.
func kbuildFileOf(src, dir string) string {
	for _, n := range []string{"Kbuild", "Makefile"} {
		rel := path.Join(dir, n)
		if st, err := os.Stat(filepath.Join(src, filepath.FromSlash(rel))); err == nil && st.Mode().IsRegular() {
			return rel
		}
	}
	return ""
}

// isKbuildName reports whether a file name is make text kbuild may read
// (Makefile, Kbuild and their Makefile.x / Kbuild.x companions, *.mk).
func isKbuildName(n string) bool {
	return n == "Makefile" || n == "Kbuild" || strings.HasPrefix(n, "Makefile.") || strings.HasPrefix(n, "Kbuild.") ||
		strings.HasSuffix(n, ".mk")
}

// resolveInclude maps an include directive's path, written in a kbuild
// file of dir, to a slash path in the source tree: $(srctree), $(src),
// $(obj) and $(SRCARCH) are substituted; anything else unresolved gives "".
func resolveInclude(p, dir, srcarch string) string {
	r := strings.NewReplacer("$(srctree)/$(src)", dir, "$(srctree)/$(obj)", dir, "$(srctree)", ".",
		"$(src)", dir, "$(obj)", dir, "$(SRCARCH)", srcarch)
	p = r.Replace(p)
	if p == "" || strings.ContainsAny(p, "$ \t") || strings.HasPrefix(p, "/") {
		return ""
	}
	// kbuild runs make in the tree's top: relative paths are from there.
	p = path.Clean(p)
	if p == ".." || strings.HasPrefix(p, "../") {
		return ""
	}
	return p
}
