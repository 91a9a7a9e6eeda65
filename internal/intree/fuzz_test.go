package intree

import (
	"bytes"
	"fmt"
	"path"
	"reflect"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/csource"
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

// scanReference is scanCodeFile without its shortcuts: every file's
// comments stripped and searched, every line parsed for an include.
func scanReference(rel string, data []byte, want, bases map[string]bool) ([]hit, []include) {
	hits := configHits(rel, csource.StripComments(data), want)
	var incs []include
	for _, l := range bytes.Split(data, []byte("\n")) {
		if inc, ok := parseInclude(l); ok && bases[path.Base(inc.target)] {
			inc.from = rel
			incs = append(incs, inc)
		}
	}
	return hits, incs
}

// codeScanSeeds are code files of the kinds the scan meets: references in
// code, in comments and in strings, includes of every form.
var codeScanSeeds = []string{
	"#include <linux/rfkill.h>\n#if defined(CONFIG_RFKILL) || defined(CONFIG_RFKILL_MODULE)\nint x;\n#endif\n",
	"/* CONFIG_RFKILL */\n// CONFIG_RFKILL_MODULE\n#  include \"local.h\" /* include */\nchar *s = \"CONFIG_RFKILL\";\n",
	"#include\"udf_sb.h\"\r\n#include <asm/udf_sb.h>\nXCONFIG_RFKILL CONFIG_RFKILLS\n#includenot <x.h>\ninclude \"udf_sb.h\"\n",
}

// FuzzScanCodeFile: the scan's shortcuts (skip a file that lacks every
// wanted name, parse only lines that say include) never change what it
// finds, on any text, compared with scanning every file in full.
func FuzzScanCodeFile(f *testing.F) {
	for _, s := range codeScanSeeds {
		f.Add([]byte(s))
	}
	want := map[string]bool{"CONFIG_RFKILL": true, "CONFIG_RFKILL_MODULE": true, "CONFIG_A": true}
	bases := map[string]bool{"rfkill.h": true, "local.h": true, "udf_sb.h": true, "x.h": true}
	f.Fuzz(func(t *testing.T, data []byte) {
		h1, i1 := scanCodeFile("f.c", data, want, bases)
		h2, i2 := scanReference("f.c", data, want, bases)
		if !reflect.DeepEqual(h1, h2) || !reflect.DeepEqual(i1, i2) {
			t.Fatalf("scan %v %v, full scan %v %v", h1, i1, h2, i2)
		}
	})
}

// TestScanCodeFile: references outside comments with their lines, and
// the includes of wanted base names.
func TestScanCodeFile(t *testing.T) {
	want := map[string]bool{"CONFIG_RFKILL": true, "CONFIG_RFKILL_MODULE": true}
	bases := map[string]bool{"rfkill.h": true, "local.h": true}
	var hits []string
	var incs []string
	for i, s := range codeScanSeeds {
		hs, is := scanCodeFile(fmt.Sprint(i), []byte(s), want, bases)
		for _, h := range hs {
			hits = append(hits, fmt.Sprintf("%s:%d:%s", h.file, h.line, h.token))
		}
		for _, in := range is {
			incs = append(incs, fmt.Sprintf("%s:%s:%v", in.from, in.target, in.quoted))
		}
	}
	if got, w := strings.Join(hits, " "), "0:2:CONFIG_RFKILL 0:2:CONFIG_RFKILL_MODULE 1:4:CONFIG_RFKILL"; got != w {
		t.Errorf("hits %s, want %s", got, w)
	}
	if got, w := strings.Join(incs, " "), "0:linux/rfkill.h:false 1:local.h:true"; got != w {
		t.Errorf("includes %s, want %s", got, w)
	}
}
