package intree

import (
	"regexp"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// tri is a three-valued truth: conditions the planner cannot evaluate
// are unknown, never guessed.
type tri int

const (
	unknown tri = iota
	no
	yes
)

func triOf(b bool) tri {
	if b {
		return yes
	}
	return no
}

func (t tri) not() tri {
	switch t {
	case yes:
		return no
	case no:
		return yes
	}
	return unknown
}

// makeValue is what $(CONFIG_X) expands to in kbuild for config c: the
// value in include/config/auto.conf, empty for n or absent options.
func makeValue(c kconfig.Config, name string) string {
	if v := c.Get(name); v != "n" {
		return v
	}
	return ""
}

var configRefRE = regexp.MustCompile(`\$[({](CONFIG_[A-Za-z0-9_]+)[)}]`)

// expand substitutes the $(CONFIG_X) references of s with their values
// in c; ok is false when another reference or function call remains.
func expand(s string, c kconfig.Config) (string, bool) {
	out := configRefRE.ReplaceAllStringFunc(s, func(m string) string {
		return makeValue(c, m[2:len(m)-1])
	})
	return out, !strings.Contains(out, "$")
}

// evalDirective evaluates one conditional directive (ifeq, ifneq, ifdef,
// ifndef, with the else keyword already removed) under c.
func evalDirective(d string, c kconfig.Config) tri {
	kw, rest, _ := strings.Cut(strings.TrimSpace(d), " ")
	if i := strings.IndexByte(kw, '('); i > 0 {
		kw, rest = kw[:i], kw[i:]+" "+rest
	}
	rest = strings.TrimSpace(rest)
	switch kw {
	case "ifdef", "ifndef":
		if !strings.HasPrefix(rest, "CONFIG_") || strings.ContainsAny(rest, "$ \t") {
			return unknown
		}
		r := triOf(makeValue(c, rest) != "")
		if kw == "ifndef" {
			r = r.not()
		}
		return r
	case "ifeq", "ifneq":
		a, b, ok := directiveArgs(rest)
		if !ok {
			return unknown
		}
		ea, oka := expand(a, c)
		eb, okb := expand(b, c)
		if !oka || !okb {
			return unknown
		}
		r := triOf(strings.TrimSpace(ea) == strings.TrimSpace(eb))
		if kw == "ifneq" {
			r = r.not()
		}
		return r
	}
	return unknown
}

// directiveArgs splits the arguments of ifeq/ifneq: "(a,b)", or two
// quoted strings ("a" "b", 'a' 'b').
func directiveArgs(s string) (a, b string, ok bool) {
	if strings.HasPrefix(s, "(") && strings.HasSuffix(s, ")") {
		inner := s[1 : len(s)-1]
		depth := 0
		for i := 0; i < len(inner); i++ {
			switch inner[i] {
			case '(', '{':
				depth++
			case ')', '}':
				depth--
			case ',':
				if depth == 0 {
					return inner[:i], inner[i+1:], true
				}
			}
		}
		return "", "", false
	}
	var parts []string
	for len(s) > 0 && len(parts) < 2 {
		q := s[0]
		if q != '"' && q != '\'' {
			return "", "", false
		}
		end := strings.IndexByte(s[1:], q)
		if end < 0 {
			return "", "", false
		}
		parts = append(parts, s[1:1+end])
		s = strings.TrimSpace(s[end+2:])
	}
	if len(parts) != 2 || s != "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// evalBranches tells whether a line under the branches bs is read by
// make with config c.
func evalBranches(bs []branch, c kconfig.Config) tri {
	res := yes
	for _, b := range bs {
		for _, n := range b.not {
			switch evalDirective(n, c) {
			case yes:
				return no
			case unknown:
				res = unknown
			}
		}
		if b.cond == "" {
			continue
		}
		switch evalDirective(b.cond, c) {
		case no:
			return no
		case unknown:
			res = unknown
		}
	}
	return res
}
