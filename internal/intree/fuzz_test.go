package intree

import (
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// FuzzParseKbuild parses arbitrary make text as a kbuild file (the
// planner reads every kbuild file of the source it is given) and
// evaluates its conditionals and expansions: no panic, every line number
// within the text, every assignment with a name.
func FuzzParseKbuild(f *testing.F) {
	for name, body := range synthTree {
		if isKbuildName(name[strings.LastIndexByte(name, '/')+1:]) {
			f.Add([]byte(body))
		}
	}
	f.Add([]byte("ifeq ($(CONFIG_A),y)\nx := 1 \\\n  2 # c\nelse ifdef CONFIG_B\ndefine y\nobj-y += a.o\nendef\nendif\nendif\nelse\n"))
	f.Add([]byte("v = $(v) $(w)\nw = $(v)\nobj-y += $(v) ${w} $(call f,x)\n"))
	c := kconfig.Config{"CONFIG_A": "y", "CONFIG_B": "m"}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := strings.Count(string(data), "\n") + 1
		lines := parseKbuild("Makefile", data)
		tr := &tree{dirs: map[string][]mkLine{"d": lines}, comps: map[string]map[string][]string{}}
		for _, l := range lines {
			if l.line < 1 || l.line > n {
				t.Fatalf("line %d of a %d-line text", l.line, n)
			}
			if l.kind == kindAssign && l.name == "" {
				t.Fatalf("assignment without a name: %q", l.text)
			}
			evalBranches(l.conds, c)
			if l.kind == kindAssign {
				tr.expand("d", l.value)
			}
		}
		tr.compIndex("d")
		tr.opaqueLine("d")
	})
}

// TestExpandBounded: references repeated at every level (10^8 items if
// expanded) end as opaque, quickly, rather than expanding.
func TestExpandBounded(t *testing.T) {
	text := "obj-y += $(v0)\n"
	for i := 0; i < 8; i++ {
		text += "v" + string(rune('0'+i)) + " = " + strings.Repeat("$(v"+string(rune('1'+i))+") ", 10) + "\n"
	}
	text += "v8 = a.o\n"
	tr := &tree{dirs: map[string][]mkLine{"d": parseKbuild("Makefile", []byte(text))}, comps: map[string]map[string][]string{}}
	items, opaque := tr.expand("d", "$(v0)")
	if len(items)+len(opaque) > maxExpandItems+10*maxExpandDepth || len(opaque) == 0 {
		t.Errorf("%d items, %d opaque", len(items), len(opaque))
	}
	if l, _ := tr.opaqueLine("d"); l == nil || l.line != 1 {
		t.Errorf("opaque line %+v", l)
	}
}
