package modlist

import (
	"fmt"
	"strings"
)

// TemplateVars are the values available to make: arguments.
type TemplateVars struct {
	// KernelRelease is `make kernelrelease` (uname -r).
	KernelRelease string
	// Arch is x86_64 or arm64.
	Arch string
	// KernelDir is the kernel build tree modules are built against.
	KernelDir string
}

// templateFields are the only substitutions a make: argument may use.
var templateFields = map[string]func(TemplateVars) string{
	"KernelRelease": func(v TemplateVars) string { return v.KernelRelease },
	"Arch":          func(v TemplateVars) string { return v.Arch },
	"KernelDir":     func(v TemplateVars) string { return v.KernelDir },
}

const templateHelp = "only {{.KernelRelease}}, {{.Arch}} and {{.KernelDir}} may be substituted"

// MakeArgs expands the module's make: arguments: each {{.Field}} (spaces
// inside the braces allowed) becomes that field of v. Parse has checked
// the syntax; the error is for an expansion longer than MaxExpanded.
func (m *Module) MakeArgs(v TemplateVars) ([]string, error) {
	out := make([]string, 0, len(m.Make))
	for i, s := range m.Make {
		x, err := expand(s, &v)
		if err != nil {
			e := &Error{File: m.file, Field: fmt.Sprintf("modules[%d].make[%d]", m.index, i), Msg: err.Error()}
			if i < len(m.makePos) {
				e.Line, e.Column = m.makePos[i].Line, m.makePos[i].Column
			}
			return nil, e
		}
		out = append(out, x)
	}
	return out, nil
}

// checkTemplate checks a make: argument's syntax and length.
func checkTemplate(s string) error {
	if len(s) > MaxMakeArg {
		return fmt.Errorf("%d bytes; a make argument may have at most %d", len(s), MaxMakeArg)
	}
	_, err := expand(s, nil)
	return err
}

// expand substitutes the {{.Field}} of s; with v nil it only checks them.
// Nothing else of Go's templates is accepted: no actions, pipelines,
// functions or comments, which could run for long or grow without bound.
func expand(s string, v *TemplateVars) (string, error) {
	var b strings.Builder
	for {
		open := strings.Index(s, "{{")
		if open < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:open])
		rest := s[open+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return "", fmt.Errorf("unclosed {{ in %q (%s)", s, templateHelp)
		}
		inner := strings.TrimSpace(rest[:end])
		name, ok := strings.CutPrefix(inner, ".")
		field := templateFields[name]
		if !ok || field == nil {
			return "", fmt.Errorf("{{%s}}: %s", rest[:end], templateHelp)
		}
		if v != nil {
			b.WriteString(field(*v))
		}
		if b.Len() > MaxExpanded {
			return "", fmt.Errorf("expands to more than %d bytes", MaxExpanded)
		}
		s = rest[end+2:]
	}
	if b.Len() > MaxExpanded {
		return "", fmt.Errorf("expands to more than %d bytes", MaxExpanded)
	}
	return b.String(), nil
}
