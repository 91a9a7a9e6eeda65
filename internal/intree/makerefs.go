package intree

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/csource"
)

// configTokens returns the CONFIG_ identifiers of make text.
func configTokens(s string) []string {
	var out []string
	csource.Idents([]byte(s), "CONFIG_", func(i, j int) bool {
		out = append(out, s[i:j])
		return true
	})
	return out
}

// checkMakeRefs refuses every use of an option in make text other than
// the ones that only select modules: obj-$(CONFIG_X) += ... lines, the
// composite parts of a unit's objects (foo-$(CONFIG_X) += ...), and
// anything in the make files of a whole unit. ifdef/ifeq on the option,
// $(subst m,y,...), lib-, ccflags-, the top Makefile and the rest may all
// change the built-in kernel or a stock module.
func (p *planner) checkMakeRefs() {
	seen := map[string]bool{}
	for dir, lines := range p.t.dirs {
		inWhole := p.wholeAbove(dir) != ""
		for i := range lines {
			l := &lines[i]
			for _, tok := range configTokens(l.text) {
				if p.opts[tok] == nil || inWhole || p.allowedMake(dir, l, tok) {
					continue
				}
				key := fmt.Sprintf("%s:%d:%s", l.file, l.line, tok)
				if !seen[key] {
					seen[key] = true
					p.refuse(tok, l, "%s", makeUse(l, tok))
				}
			}
		}
	}
	for _, f := range p.t.makeFiles {
		if p.t.parsed[f] || p.wholeAbove(path.Dir(f)) != "" && path.Dir(f) != "." {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.t.src, filepath.FromSlash(f)))
		if err != nil {
			continue
		}
		lines, nums := splitLogical(b)
		for i, text := range lines {
			for _, tok := range configTokens(text) {
				if p.opts[tok] != nil {
					l := &mkLine{file: f, line: nums[i], text: strings.TrimSpace(text)}
					p.refuse(tok, l, "%s", makeUse(l, tok))
				}
			}
		}
	}
}

// allowedMake reports whether a make line that mentions tok only selects
// modules of the plan's units.
func (p *planner) allowedMake(dir string, l *mkLine, tok string) bool {
	if l.kind != kindAssign || strings.Contains(l.value, tok) {
		return false
	}
	ref := "$(" + tok + ")"
	if l.name == "obj-"+ref {
		return true
	}
	prefix, ok := strings.CutSuffix(l.name, "-"+ref)
	if !ok {
		return false
	}
	prefix = strings.TrimSuffix(prefix, "-objs")
	u := p.units[dir]
	return u != nil && !u.whole && u.objects[prefix+".o"]
}

// makeUse describes a refused use of an option in make text.
func makeUse(l *mkLine, tok string) string {
	text := strings.Join(strings.Fields(l.text), " ")
	if len(text) > 120 {
		text = text[:117] + "..."
	}
	if l.kind == kindAssign && strings.HasPrefix(l.name, "obj-$(subst m,y,") {
		return fmt.Sprintf("builds %s into the kernel when %s is m (`%s`)", l.value, tok, text)
	}
	return fmt.Sprintf("%s is used there other than to select a module (`%s`), which can change the built-in kernel or a stock module", tok, text)
}
