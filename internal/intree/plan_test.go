package intree

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// synthTree is a small kernel-like tree with one case per rule.
var synthTree = map[string]string{
	"Makefile": "libs-y := lib/\n",
	"Kbuild":   "obj-y += fs/ drivers/\n",
	"fs/Makefile": `obj-y += core.o
obj-$(CONFIG_BASE) += base/
obj-$(CONFIG_NEWDIR) += newdir/
obj-$(CONFIG_SUBST) += subst.o
obj-$(subst m,y,$(CONFIG_SUBST)) += subst_core.o
ifdef CONFIG_IFD
obj-y += ifd_glue.o
endif
obj-$(CONFIG_IFD) += ifd.o
ifeq ($(ARCH),x86)
obj-$(CONFIG_UNKNOWNCOND) += uc.o
endif
ifeq ($(CONFIG_BASE),y)
obj-$(CONFIG_GOOD) += good.o # a comment naming CONFIG_SUBST
endif
obj-$(CONFIG_DUP) += core.o
obj-$(CONFIG_HDR) += hdr.o
good-y := good_main.o \
	good_helper.o
good-$(CONFIG_GOOD_EXTRA) += good_extra.o
`,
	"fs/core.c":        "#include \"hdr.h\"\nint core;\n",
	"fs/hdr.h":         "#if IS_ENABLED(CONFIG_HDR)\n#endif\n",
	"fs/hdr.c":         "int hdr;\n",
	"fs/good_main.c":   "#include \"good.h\"\n#if IS_ENABLED(CONFIG_GOOD)\nstatic const char *n = CONFIG_GOOD_NAME;\n#endif\n",
	"fs/good_helper.c": "int helper; /* CONFIG_GOOD_MODULE */\n",
	"fs/good.h":        "#ifdef CONFIG_GOOD_MODULE\n#endif\n",
	"fs/base/Makefile": "obj-y += base.o\n",
	"fs/base/base.c":   "// CONFIG_GOOD in a comment is no reference\nint base;\n",
	"fs/newdir/Makefile": `obj-$(CONFIG_NEWDIR) += nd.o
obj-y += nd_core.o
ccflags-$(CONFIG_NEWDIR) += -DND
`,
	"fs/newdir/nd.c":      "#ifdef CONFIG_NEWDIR_MODULE\n#endif\n",
	"fs/newdir/nd_core.c": "#if defined(CONFIG_NEWDIR)\n#endif\n",
	"drivers/Makefile": `obj-$(CONFIG_REFD) += refd.o
obj-$(CONFIG_GONEPARENT) += gone/
obj-y += claimed/ claimed/glue.o
obj-$(CONFIG_SHELLREF) += shellref.o
obj-$(CONFIG_NEST) += nest/
obj-y += opaque/
`,
	"drivers/nest/Makefile":       "obj-$(CONFIG_NEST) += nest.o\nobj-$(CONFIG_NEST_INNER) += inner/\n",
	"drivers/nest/nest.c":         "int nest;\n",
	"drivers/nest/inner/Makefile": "obj-$(CONFIG_NEST_INNER) += inner.o\n",
	"drivers/nest/inner/inner.c":  "int inner;\n",
	"drivers/opaque/Makefile":     "obj-y += $(call objs,core)\nobj-$(CONFIG_OPQ) += opq.o\n",
	"drivers/opaque/opq.c":        "int opq;\n",
	"drivers/claimed/Makefile":    "obj-$(CONFIG_CLAIM) += claim.o\n",
	"drivers/claimed/claim.c":     "#if IS_ENABLED(CONFIG_CLAIM)\n#endif\n",
	"drivers/claimed/glue.c":      "int x;\n#if IS_ENABLED(CONFIG_CLAIM)\n#endif\n",
	"scripts/check.sh":            "is_enabled CONFIG_SHELLREF && echo\n",
	"drivers/gone/Makefile":       "obj-$(CONFIG_GONE) += gone.o\n",
	"include/linux/refd.h":        "#ifdef CONFIG_REFD_MODULE\n#endif\n",
	"lib/Makefile":                "obj-$(CONFIG_LIBM) += libm.o\nvarobjs = varbuilt.o\nobj-y += $(varobjs)\nobj-$(CONFIG_VARM) += varbuilt.o\n",
	"lib/varbuilt.c":              "int varbuilt;\n",
	"lib/libm.c":                  "int libm;\n",
	"tools/x.c":                   "#ifdef CONFIG_REFD\n#endif\n",
	"arch/arm64/Kbuild":           "obj-$(CONFIG_GOOD) += y/\n",
	"arch/arm64/mm/kasan.c":       "#if IS_ENABLED(CONFIG_GOOD)\n#endif\n",
	"Documentation/x.c":           "CONFIG_GOOD\n",
	"drivers/noline_user.c":       "int x;\n",
	"scripts/Makefile.extra":      "# nothing\n",
}

// synth plans frag (options, one per line from line 4) over the synthetic
// tree; implied are options the fragment made visible.
func synth(t *testing.T, frag []string, implied map[string]string) (*Plan, error) {
	t.Helper()
	src := t.TempDir()
	for p, body := range synthTree {
		full := filepath.Join(src, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var text string
	for _, o := range frag {
		text += o + "=m\n"
	}
	f, err := kconfig.ParseFragment("wsl-modules.yml", 4, text)
	if err != nil {
		t.Fatal(err)
	}
	before := kconfig.Config{"CONFIG_BASE": "y", "CONFIG_MODULES": "y"}
	after := kconfig.Config{}
	for k, v := range before {
		after[k] = v
	}
	for _, o := range frag {
		after[o] = "m"
	}
	for k, v := range implied {
		after[k] = v
	}
	return PlanFragment(context.Background(), Options{Src: src, SrcArch: "x86", Fragment: f, Before: before, After: after})
}

func TestPlanModuleOnly(t *testing.T) {
	p, err := synth(t, []string{"CONFIG_GOOD", "CONFIG_NEWDIR"}, map[string]string{"CONFIG_LIBM": "m", "CONFIG_GOOD_NAME": `"x"`})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range p.Units {
		got = append(got, u.Dir)
		if err := u.Validate(); err != nil {
			t.Error(err)
		}
	}
	if !slices.Equal(got, []string{"fs", "fs/newdir", "lib"}) {
		t.Fatalf("units %v", got)
	}
	fs, nd, lib := p.Units[0], p.Units[1], p.Units[2]
	if fs.Whole || !slices.Equal(fs.Objects, []string{"good.o"}) || !slices.Equal(fs.Sources, []string{"good_helper.c", "good_main.c"}) ||
		!slices.Equal(fs.Selected, []string{"CONFIG_GOOD"}) || fs.Name != "in-tree-fs" {
		t.Errorf("fs unit %+v", fs)
	}
	if !nd.Whole || !slices.Equal(nd.Selected, []string{"CONFIG_NEWDIR"}) || !slices.Equal(lib.Objects, []string{"libm.o"}) ||
		!slices.Equal(lib.Selected, []string{"CONFIG_LIBM"}) {
		t.Errorf("newdir %+v, lib %+v", nd, lib)
	}
	if len(fs.Options) != 4 || !slices.Contains(fs.ConfigLines(), `CONFIG_GOOD_NAME="x"`) {
		t.Errorf("options %+v", fs.Options)
	}

	// The build files: the defines header and the Kbuild wrapper.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Makefile"), []byte("obj-y += core.o\n"), 0o644)
	if err := fs.Prepare(dir); err != nil {
		t.Fatal(err)
	}
	hdr, _ := os.ReadFile(filepath.Join(dir, ConfigHeader))
	kb, _ := os.ReadFile(filepath.Join(dir, "Kbuild"))
	for _, want := range []string{"#define CONFIG_GOOD_MODULE 1\n", "#define CONFIG_GOOD_NAME \"x\"\n", "#define CONFIG_LIBM_MODULE 1\n"} {
		if !strings.Contains(string(hdr), want) {
			t.Errorf("header lacks %q:\n%s", want, hdr)
		}
	}
	for _, want := range []string{"include " + filepath.Join(dir, "Makefile") + "\n", "obj-y :=\n", "obj-m := good.o\n"} {
		if !strings.Contains(string(kb), want) {
			t.Errorf("Kbuild lacks %q:\n%s", want, kb)
		}
	}
	args := strings.Join(fs.MakeArgs(dir), " ")
	if !strings.Contains(args, "CONFIG_GOOD=m") || !strings.Contains(args, "KCFLAGS=-include "+filepath.Join(dir, ConfigHeader)) {
		t.Errorf("make args %s", args)
	}
	if got := fs.InstallPath("good.ko"); got != "kernel/fs/good.ko" {
		t.Errorf("install path %s", got)
	}
}

// TestPlanNestedWhole: a whole directory inside another whole one is
// built by the outer build (every option goes to every build), so the
// plan has one unit, selected by both options.
func TestPlanNestedWhole(t *testing.T) {
	p, err := synth(t, []string{"CONFIG_NEST", "CONFIG_NEST_INNER"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Units) != 1 || p.Units[0].Dir != "drivers/nest" || !p.Units[0].Whole ||
		!slices.Equal(p.Units[0].Selected, []string{"CONFIG_NEST", "CONFIG_NEST_INNER"}) {
		t.Errorf("units %+v", p.Units)
	}
}

func TestPlanRefusals(t *testing.T) {
	for _, c := range []struct {
		opt  string
		want []string
	}{
		{"CONFIG_SUBST", []string{"fs/Makefile:5: builds subst_core.o into the kernel when CONFIG_SUBST is m"}},
		{"CONFIG_IFD", []string{"fs/Makefile:6: CONFIG_IFD is used there other than to select a module (`ifdef CONFIG_IFD`)"}},
		{"CONFIG_UNKNOWNCOND", []string{"fs/Makefile:11: is read by make only under a condition this tool cannot evaluate (fs/Makefile:10: ifeq ($(ARCH),x86))"}},
		{"CONFIG_DUP", []string{"fs/Makefile:1: also builds core.o (obj-y)"}},
		{"CONFIG_HDR", []string{"fs/hdr.h:1: CONFIG_HDR referenced there, outside the sources of the modules built for it"}},
		{"CONFIG_REFD", []string{"include/linux/refd.h:1: CONFIG_REFD_MODULE referenced there"}},
		{"CONFIG_GONE", []string{"kbuild does not descend into drivers/gone/ with this config"}},
		{"CONFIG_NOLINE", []string{"no kbuild file builds a module for it"}},
		// drivers/Makefile builds claimed/glue.o into the kernel.
		{"CONFIG_CLAIM", []string{"drivers/claimed/glue.c:2: CONFIG_CLAIM referenced there"}},
		{"CONFIG_SHELLREF", []string{"scripts/check.sh:1: CONFIG_SHELLREF is used there other than to select a module"}},
		// An object built in through a variable is still found.
		{"CONFIG_VARM", []string{"lib/Makefile:3: also builds varbuilt.o (obj-y)"}},
		// What cannot be expanded may build the module's sources in.
		{"CONFIG_OPQ", []string{"drivers/opaque/Makefile:1: lists $(call, which this tool cannot expand"}},
	} {
		_, err := synth(t, []string{c.opt}, nil)
		if err == nil {
			t.Errorf("%s: planned", c.opt)
			continue
		}
		msg := err.Error()
		for _, w := range append(c.want, "wsl-modules.yml:4: config-fragment: "+c.opt+": ", "(use kernel: build)") {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q lacks %q", c.opt, msg, w)
			}
		}
		if pe, ok := err.(*Error); !ok || len(pe.Refusals) != 1 || pe.Summary() == "" {
			t.Errorf("%s: %#v", c.opt, err)
		}
	}
	// Several options: every refusal, by fragment line.
	_, err := synth(t, []string{"CONFIG_GOOD", "CONFIG_SUBST", "CONFIG_HDR"}, nil)
	if pe, ok := err.(*Error); !ok || len(pe.Refusals) != 2 || pe.Refusals[0].Option != "CONFIG_SUBST" || pe.Refusals[1].FragmentLine != 6 ||
		!strings.HasPrefix(err.Error(), "stock mode cannot apply this config fragment") || !strings.Contains(pe.Summary(), "(and 1 more)") {
		t.Errorf("two refusals: %v", err)
	}
	// A change CheckResult refuses comes through as a refusal.
	_, err = synth(t, []string{"CONFIG_GOOD"}, map[string]string{"CONFIG_BASE": "m"})
	if _, ok := err.(*Error); !ok || !strings.Contains(err.Error(), "CONFIG_BASE: y -> m") {
		t.Errorf("check result: %v", err)
	}
}

func TestKbuildParsing(t *testing.T) {
	for line, want := range map[string][3]string{
		"obj-$(subst m,y,$(CONFIG_A)) += a.o": {"obj-$(subst m,y,$(CONFIG_A))", "+=", "a.o"},
		"foo-objs := a.o b.o":                 {"foo-objs", ":=", "a.o b.o"},
		"override X ?= 1":                     {"X", "?=", "1"},
	} {
		n, op, v, ok := splitAssign(line)
		if !ok || [3]string{n, op, v} != want {
			t.Errorf("splitAssign(%q) = %q %q %q %v", line, n, op, v, ok)
		}
	}
	for _, line := range []string{"a.o: a.c", "foo bar = x", "$(obj)/x: y"} {
		if _, _, _, ok := splitAssign(line); ok {
			t.Errorf("splitAssign(%q): an assignment", line)
		}
	}
	c := kconfig.Config{"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_S": `"x"`}
	for d, want := range map[string]tri{
		"ifdef CONFIG_A": yes, "ifndef CONFIG_A": no, "ifdef CONFIG_C": no,
		"ifeq ($(CONFIG_B),m)": yes, "ifneq ($(CONFIG_C),)": no, `ifeq "$(CONFIG_A)" "y"`: yes,
		"ifeq ($(CONFIG_A)$(CONFIG_B),ym)": yes, "ifeq ($(ARCH),x86)": unknown, "ifdef ARCH": unknown,
		"ifeq ($(CONFIG_S),\"x\")": yes,
	} {
		if got := evalDirective(d, c); got != want {
			t.Errorf("evalDirective(%q) = %v, want %v", d, got, want)
		}
	}
	lines := parseKbuild("M", []byte("ifdef CONFIG_C\na := 1\nelse ifeq ($(CONFIG_A),y)\nb := 2\nelse\nc := 3\nendif\n"))
	for _, l := range lines {
		if l.kind != kindAssign {
			continue
		}
		want := map[string]tri{"a": no, "b": yes, "c": no}[l.name]
		if got := evalBranches(l.conds, c); got != want {
			t.Errorf("%s: %v, want %v", l.name, got, want)
		}
	}
}
