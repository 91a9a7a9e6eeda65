package intree

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Unit is one in-tree kbuild directory built as an external module
// against the prepared stock tree: a copy of the directory, with the
// options on make's command line (so its kbuild file selects the
// objects) and their C defines in a header every file includes first
// (what include/generated/autoconf.h would hold with the fragment).
type Unit struct {
	// Name names the build (log, manifest module): UnitName(Dir).
	Name string `json:"name"`
	// Dir is the directory in the kernel source (slash separated).
	Dir string `json:"dir"`
	// Whole is set when kbuild did not descend into Dir with the stock
	// config: everything its kbuild file builds as modules is the
	// unit's. Otherwise only Objects are built.
	Whole bool `json:"whole,omitempty"`
	// Objects are the unit's objects in Dir (foo.o builds foo.ko); for a
	// whole unit, informational.
	Objects []string `json:"objects,omitempty"`
	// Sources are a file unit's own source files (relative to Dir): the
	// objects' parts, which say what the modules export and use.
	Sources []string `json:"sources,omitempty"`
	// Selected are the options whose obj- lines select the unit.
	Selected []string `json:"selected"`
	// Options are every option the fragment changes: the build gets all
	// of them, as a kernel build with the fragment would.
	Options []Option `json:"options"`
}

// UnitName is the build name of the unit for dir: "in-tree-" and the
// directory with / as -, which no listed module's name can collide with
// unnoticed (modbuild refuses duplicate names).
func UnitName(dir string) string { return "in-tree-" + strings.ReplaceAll(dir, "/", "-") }

// ConfigHeader is the header of defines written into the build copy.
const ConfigHeader = ".wsl-modules-config.h"

// origKbuild is where Prepare moves a directory's own Kbuild file.
const origKbuild = ".wsl-modules-Kbuild.orig"

var (
	optionRE = regexp.MustCompile(`^CONFIG_[A-Za-z0-9_]+$`)
	objectRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.+-]*\.o$`)
)

// Validate checks a unit read back from a record: a clean relative
// directory, object and option names, values on one line, each option
// once, and only its own options selecting it.
func (u *Unit) Validate() error {
	if u.Dir == "" || path.Clean(u.Dir) != u.Dir || path.IsAbs(u.Dir) || u.Dir == ".." || strings.HasPrefix(u.Dir, "../") ||
		strings.ContainsAny(u.Dir, " \t\n\\$") {
		return fmt.Errorf("intree: unit directory %q is not a clean relative path", u.Dir)
	}
	if u.Name != UnitName(u.Dir) {
		return fmt.Errorf("intree: unit %q: name %q, want %q", u.Dir, u.Name, UnitName(u.Dir))
	}
	if !u.Whole && len(u.Objects) == 0 {
		return fmt.Errorf("intree: unit %s: no objects", u.Dir)
	}
	for _, o := range u.Objects {
		if !objectRE.MatchString(o) {
			return fmt.Errorf("intree: unit %s: object %q", u.Dir, o)
		}
	}
	for _, f := range u.Sources {
		if f == "" || path.Clean(f) != f || path.IsAbs(f) || f == ".." || strings.HasPrefix(f, "../") {
			return fmt.Errorf("intree: unit %s: source %q", u.Dir, f)
		}
	}
	seen := map[string]bool{}
	for _, o := range u.Options {
		if !optionRE.MatchString(o.Name) || o.Value == "" || o.Value == "y" || o.Value == "n" || strings.ContainsAny(o.Value, "\n\r\x00") {
			return fmt.Errorf("intree: unit %s: option %s=%q", u.Dir, o.Name, o.Value)
		}
		if seen[o.Name] {
			return fmt.Errorf("intree: unit %s: option %s twice", u.Dir, o.Name)
		}
		seen[o.Name] = true
	}
	for _, o := range u.Selected {
		if !seen[o] {
			return fmt.Errorf("intree: unit %s: selected by %q, which is not one of its options", u.Dir, o)
		}
	}
	return nil
}

// ConfigLines are the unit's options as .config lines (for the record):
// the ones that select it first, then the fragment's others.
func (u *Unit) ConfigLines() []string {
	var first, rest []string
	for _, o := range u.Options {
		l := o.Name + "=" + o.Value
		if slices.Contains(u.Selected, o.Name) {
			first = append(first, l)
		} else {
			rest = append(rest, l)
		}
	}
	return append(first, rest...)
}

// header is the defines header: CONFIG_X_MODULE for m, CONFIG_X <value>
// for other values, as the kernel's autoconf.h writes them.
func (u *Unit) header() string {
	var b strings.Builder
	b.WriteString("/* Written by wsl-modules-action: the config fragment's options, as autoconf.h would define them. */\n")
	for _, o := range u.Options {
		if o.Value == "m" {
			fmt.Fprintf(&b, "#define %s_MODULE 1\n", o.Name)
		} else {
			fmt.Fprintf(&b, "#define %s %s\n", o.Name, o.Value)
		}
	}
	return b.String()
}

// Prepare readies dir, a copy of the unit's directory, for its build:
// it writes the defines header and, for a file unit, a Kbuild file that
// reads the directory's own kbuild file and then builds only the unit's
// objects (nothing built in, no other module, no subdirectory).
func (u *Unit) Prepare(dir string) error {
	if !filepath.IsAbs(dir) || strings.ContainsAny(dir, " \t\n$#\\") {
		return fmt.Errorf("intree: build directory %q: need an absolute path without spaces or make metacharacters", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigHeader), []byte(u.header()), 0o644); err != nil {
		return fmt.Errorf("intree: %w", err)
	}
	if u.Whole {
		return nil
	}
	orig := filepath.Join(dir, "Makefile")
	if _, err := os.Stat(filepath.Join(dir, "Kbuild")); err == nil {
		orig = filepath.Join(dir, origKbuild)
		if err := os.Rename(filepath.Join(dir, "Kbuild"), orig); err != nil {
			return fmt.Errorf("intree: %w", err)
		}
	} else if _, err := os.Stat(orig); err != nil {
		return fmt.Errorf("intree: %s: no Kbuild or Makefile in the copy of %s", u.Name, u.Dir)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by wsl-modules-action: %s of the kernel source, building only %s (%s).\n",
		u.Dir, strings.Join(u.Objects, " "), strings.Join(u.Selected, " "))
	fmt.Fprintf(&b, "include %s\n", orig)
	for _, v := range []string{"obj-y", "lib-y", "lib-m", "subdir-y", "subdir-m", "extra-y"} {
		fmt.Fprintf(&b, "%s :=\n", v)
	}
	fmt.Fprintf(&b, "obj-m := %s\n", strings.Join(u.Objects, " "))
	if err := os.WriteFile(filepath.Join(dir, "Kbuild"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("intree: %w", err)
	}
	return nil
}

// MakeArgs are the make arguments of the build in dir (after Prepare):
// every option's value (the kbuild file's obj-$(CONFIG_X) lines then
// select the objects) and the defines header for C and assembly.
func (u *Unit) MakeArgs(dir string) []string {
	var out []string
	for _, o := range u.Options {
		out = append(out, o.Name+"="+o.Value)
	}
	inc := "-include " + filepath.Join(dir, ConfigHeader)
	return append(out, "KCFLAGS="+inc, "KAFLAGS="+inc)
}

// Modules returns the modules a file unit must produce, as paths in the
// build copy (foo.ko for foo.o); nil for a whole unit, which installs
// whatever its kbuild file builds.
func (u *Unit) Modules() []string {
	if u.Whole {
		return nil
	}
	var out []string
	for _, o := range u.Objects {
		out = append(out, strings.TrimSuffix(o, ".o")+".ko")
	}
	return out
}

// InstallPath is where a module built at rel (slash path in the build
// copy) goes under lib/modules/<release>: kernel/<Dir>/<rel>, as
// modules_install of a kernel built with the fragment would put it.
func (u *Unit) InstallPath(rel string) string { return path.Join("kernel", u.Dir, rel) }
