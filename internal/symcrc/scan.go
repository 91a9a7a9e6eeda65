package symcrc

import (
	"bytes"
	"regexp"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/csource"
)

// This file finds, in the text of one C or assembly source file, the
// names it exports. It is a lexical scan, not a preprocessor: it sees
// every EXPORT_SYMBOL-like call whatever the #if around it (the index over-
// approximates; genksyms over the preprocessed file decides), and it
// expands the macros that wrap exports (EXPORT_TRACEPOINT_SYMBOL_GPL,
// EXPORT_STATIC_CALL, a file's own "#define DEFINE_X(name) ...
// EXPORT_SYMBOL(get_##name)") far enough to name what they export.

// macroCall is an identifier in the text, with its arguments when it is
// followed by a parenthesised list (args is nil otherwise).
type macroCall struct {
	name string
	args []string
}

// macroDef is a #define: params is nil for an object-like macro; calls
// are the interesting identifiers of its body.
type macroDef struct {
	name   string
	params []string
	calls  []macroCall
}

// maxArgs bounds the text an argument list may span, so that an
// unbalanced parenthesis cannot make the scan quadratic.
const maxArgs = 4096

// splitDefines separates the #define logical lines of text (comments
// already stripped) from the rest: it returns the definitions and a copy
// of text with them blanked out.
func splitDefines(text []byte) ([]macroDef, []byte, [][]byte) {
	rest := make([]byte, len(text))
	copy(rest, text)
	var defs []macroDef
	var bodies [][]byte
	for start := 0; start < len(text); {
		end := logicalLineEnd(text, start)
		line := text[start:end]
		if name, params, body, ok := parseDefine(line); ok {
			defs = append(defs, macroDef{name: name, params: params})
			bodies = append(bodies, body)
			for j := start; j < end; j++ {
				if rest[j] != '\n' {
					rest[j] = ' '
				}
			}
		}
		start = end + 1
	}
	return defs, rest, bodies
}

// logicalLineEnd returns the index of the newline ending the logical line
// that starts at start (lines ending in a backslash continue).
func logicalLineEnd(text []byte, start int) int {
	for i := start; i < len(text); i++ {
		if text[i] != '\n' {
			continue
		}
		j := i - 1
		for j >= start && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r') {
			j--
		}
		if j >= start && text[j] == '\\' {
			continue
		}
		return i
	}
	return len(text)
}

var defineRE = regexp.MustCompile(`^[ \t]*#[ \t]*define[ \t]+([A-Za-z_][A-Za-z0-9_]*)(\([^)]*\))?`)

// parseDefine parses a #define logical line: the macro name, its
// parameters (nil when object-like) and its body with line continuations
// turned into spaces.
func parseDefine(line []byte) (name string, params []string, body []byte, ok bool) {
	if !bytes.Contains(line, []byte("define")) {
		return "", nil, nil, false
	}
	m := defineRE.FindSubmatchIndex(line)
	if m == nil {
		return "", nil, nil, false
	}
	name = string(line[m[2]:m[3]])
	if m[4] >= 0 {
		params = []string{}
		for _, p := range strings.Split(string(line[m[4]+1:m[5]-1]), ",") {
			if p = strings.TrimSpace(p); p != "" {
				params = append(params, p)
			}
		}
	}
	body = bytes.ReplaceAll(line[m[1]:], []byte("\\\n"), []byte("  "))
	return name, params, body, true
}

// scanCalls returns the identifiers of text for which want is true, with
// their argument lists. String literals are skipped.
func scanCalls(text []byte, want func(string) bool) []macroCall {
	var calls []macroCall
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c == '"' {
			i = csource.SkipLiteral(text, i)
			continue
		}
		if !csource.IsIdentByte(c) {
			continue
		}
		j := i
		for j < len(text) && csource.IsIdentByte(text[j]) {
			j++
		}
		id := string(text[i:j])
		if c < '0' || c > '9' {
			if want(id) {
				calls = append(calls, macroCall{name: id, args: parseArgs(text, j)})
			}
		}
		i = j - 1
	}
	return calls
}

// parseArgs parses the parenthesised, comma-separated argument list that
// follows position i (after blanks), or returns nil when there is none or
// it is not closed within maxArgs bytes.
func parseArgs(text []byte, i int) []string {
	for i < len(text) && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r' || text[i] == '\\') {
		i++
	}
	if i >= len(text) || text[i] != '(' {
		return nil
	}
	args := []string{}
	depth, start := 0, i+1
	for j := i; j < len(text) && j < i+maxArgs; j++ {
		switch text[j] {
		case '"', '\'':
			j = csource.SkipLiteral(text, j)
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return append(args, strings.TrimSpace(string(text[start:j])))
			}
		case ',':
			if depth == 1 {
				args = append(args, strings.TrimSpace(string(text[start:j])))
				start = j + 1
			}
		}
	}
	return nil
}

// exportLike reports whether a macro name looks like an export macro.
func exportLike(name string) bool { return strings.Contains(name, "EXPORT_") }

// isTerminal reports whether a macro exports exactly its first argument:
// EXPORT_SYMBOL and its variants (_GPL, _NS, _NS_GPL, _GPL_FOR_MODULES,
// _IF_KUNIT, ...) and the internal _EXPORT_SYMBOL/__EXPORT_SYMBOL.
func isTerminal(name string) bool {
	return strings.HasPrefix(strings.TrimLeft(name, "_"), "EXPORT_SYMBOL")
}

// staticCallPrefix maps the static-call name macros of
// include/linux/static_call_types.h to the prefix they paste on.
var staticCallPrefix = map[string]string{"STATIC_CALL_KEY": "__SCK__", "STATIC_CALL_TRAMP": "__SCT__"}

// eval evaluates a macro argument as the preprocessor would for a symbol
// name: parameters replaced by their values, "##" pasting, and the
// STATIC_CALL_KEY/TRAMP name macros. ok is false when the result is not a
// name.
func eval(text string, env map[string]string) (string, bool) {
	text = strings.TrimSpace(text)
	for m, prefix := range staticCallPrefix {
		if rest, found := strings.CutPrefix(text, m); found {
			rest = strings.TrimSpace(rest)
			if strings.HasPrefix(rest, "(") && strings.HasSuffix(rest, ")") {
				inner, ok := eval(rest[1:len(rest)-1], env)
				return prefix + inner, ok
			}
		}
	}
	var sb strings.Builder
	for _, piece := range strings.Split(text, "##") {
		piece = strings.TrimSpace(piece)
		if v, ok := env[piece]; ok {
			piece = v
		}
		sb.WriteString(piece)
	}
	s := sb.String()
	return s, isName(s)
}

// isName reports whether s is made of identifier characters only.
func isName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !csource.IsIdentByte(s[i]) {
			return false
		}
	}
	return true
}
