package intree

import (
	"strings"
	"testing"
)

// TestUnitValidate: a unit read back from kernel.json (a cache or an
// artifact, so not trusted) is refused when any field could reach the
// generated Kbuild or header as other text.
func TestUnitValidate(t *testing.T) {
	good := func() Unit {
		return Unit{Name: "in-tree-fs-nls", Dir: "fs/nls", Objects: []string{"nls_utf8.o"}, Sources: []string{"nls_utf8.c"},
			Options: []Option{{Name: "CONFIG_NLS_UTF8", Value: "m"}}, Selected: []string{"CONFIG_NLS_UTF8"}}
	}
	if u := good(); u.Validate() != nil {
		t.Fatalf("good unit: %v", u.Validate())
	}
	for name, c := range map[string]struct {
		edit func(*Unit)
		want string
	}{
		"dir escapes":       {func(u *Unit) { u.Dir, u.Name = "../etc", UnitName("../etc") }, "not a clean relative path"},
		"dir with a dollar": {func(u *Unit) { u.Dir, u.Name = "fs/$(x)", UnitName("fs/$(x)") }, "not a clean relative path"},
		"name":              {func(u *Unit) { u.Name = "provider" }, `name "provider"`},
		"object":            {func(u *Unit) { u.Objects = []string{"a.o\nobj-y += b.o"} }, "object"},
		"source":            {func(u *Unit) { u.Sources = []string{"../../init/main.c"} }, "source"},
		"option value":      {func(u *Unit) { u.Options[0].Value = "m\n#define X" }, "option"},
		"option y":          {func(u *Unit) { u.Options[0].Value = "y" }, "option"},
		"option twice":      {func(u *Unit) { u.Options = append(u.Options, u.Options[0]) }, "twice"},
		"selected":          {func(u *Unit) { u.Selected = []string{"CONFIG_NLS_UTF8\nobj-y += evil.o"} }, "not one of its options"},
		"no objects":        {func(u *Unit) { u.Objects = nil }, "no objects"},
	} {
		u := good()
		c.edit(&u)
		if err := u.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
