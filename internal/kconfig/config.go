package kconfig

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// Config is a parsed kernel .config: option name (with the CONFIG_ prefix)
// to value. Options written as "# CONFIG_X is not set" have the value "n".
type Config map[string]string

var (
	setRE   = regexp.MustCompile(`^(CONFIG_[A-Za-z0-9_]+)=(.*)$`)
	unsetRE = regexp.MustCompile(`^# (CONFIG_[A-Za-z0-9_]+) is not set$`)
)

// ParseConfig reads a .config.
func ParseConfig(r io.Reader) (Config, error) {
	c := Config{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := setRE.FindStringSubmatch(line); m != nil {
			c[m[1]] = m[2]
		} else if m := unsetRE.FindStringSubmatch(line); m != nil {
			c[m[1]] = "n"
		}
	}
	return c, sc.Err()
}

// ReadConfig reads a .config file.
func ReadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := ParseConfig(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Get returns the value of an option ("n" when absent).
func (c Config) Get(name string) string {
	if v, ok := c[name]; ok {
		return v
	}
	return "n"
}

// Unquoted returns a string option's value without its quotes.
func (c Config) Unquoted(name string) string {
	v := c[name]
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`)
	}
	return v
}

// ConfigChange is one option whose value differs between two configs.
type ConfigChange struct {
	Name     string
	Old, New string // "" when absent
}

func (c ConfigChange) String() string {
	o, n := c.Old, c.New
	if o == "" {
		o = "(absent)"
	}
	if n == "" {
		n = "(absent)"
	}
	return fmt.Sprintf("%s: %s -> %s", c.Name, o, n)
}

// DiffConfig lists the options whose values differ between a and b, sorted
// by name. An absent option and "n" are treated as equal.
func DiffConfig(a, b Config) []ConfigChange {
	names := map[string]bool{}
	for k := range a {
		names[k] = true
	}
	for k := range b {
		names[k] = true
	}
	var out []ConfigChange
	for k := range names {
		av, bv := a[k], b[k]
		if av == bv || (av == "" && bv == "n") || (av == "n" && bv == "") {
			continue
		}
		out = append(out, ConfigChange{Name: k, Old: av, New: bv})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// FragmentLine is one CONFIG_X=m line of a config fragment.
type FragmentLine struct {
	Name string
	Line int // line in the fragment's file (or in the fragment)
}

// Fragment is a parsed config fragment: only n->m changes are allowed, so
// every meaningful line is CONFIG_X=m.
type Fragment struct {
	// File names the file holding the fragment (for errors).
	File string
	// Lines are the options to set to m.
	Lines []FragmentLine
}

// ParseFragment parses fragment text. file and firstLine locate it (the
// fragment may be a block inside wsl-modules.yml): line i of the text is
// reported as firstLine+i. Anything other than CONFIG_X=m, comments and
// blank lines is refused, naming the line.
func ParseFragment(file string, firstLine int, text string) (*Fragment, error) {
	if firstLine <= 0 {
		firstLine = 1
	}
	f := &Fragment{File: file}
	seen := map[string]int{}
	for i, raw := range strings.Split(text, "\n") {
		ln := firstLine + i
		line := strings.TrimSpace(raw)
		if line == "" {
			continue
		}
		if m := unsetRE.FindStringSubmatch(line); m != nil {
			return nil, fragmentErr("%s:%d: config-fragment: %s: only n->m changes are allowed; \"is not set\" lines are refused", file, ln, m[1])
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		m := setRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fragmentErr("%s:%d: config-fragment: %q is not a CONFIG_X=m line", file, ln, line)
		}
		if m[2] != "m" {
			return nil, fragmentErr("%s:%d: config-fragment: %s=%s: only n->m changes of tristate options are allowed", file, ln, m[1], m[2])
		}
		if prev, dup := seen[m[1]]; dup {
			return nil, fragmentErr("%s:%d: config-fragment: %s repeated (first on line %d)", file, ln, m[1], prev)
		}
		seen[m[1]] = ln
		f.Lines = append(f.Lines, FragmentLine{Name: m[1], Line: ln})
	}
	return f, nil
}

// Text returns the fragment as config lines.
func (f *Fragment) Text() string {
	var b strings.Builder
	for _, l := range f.Lines {
		fmt.Fprintf(&b, "%s=m\n", l.Name)
	}
	return b.String()
}

// CheckBase refuses fragment lines whose option is already y in the base
// config (y->m would change the built-in kernel). Options already m are no-ops.
func (f *Fragment) CheckBase(base Config) error {
	for _, l := range f.Lines {
		switch v := base.Get(l.Name); v {
		case "n", "m":
		default:
			return fragmentErr("%s:%d: config-fragment: %s is %s in the stock config; only n->m changes are allowed (%s->m refused)", f.File, l.Line, l.Name, v, v)
		}
	}
	return nil
}

// CheckResult compares the olddefconfig result without the fragment (before)
// and with it (after). Every fragment option must have become m; any other
// change must be a newly visible option that is m, n or a non-tristate
// value (those are returned as notes). Any change to an option that already
// had a value, and any new =y, is refused: it would change vmlinux.
func (f *Fragment) CheckResult(before, after Config) (notes []string, err error) {
	named := map[string]FragmentLine{}
	for _, l := range f.Lines {
		named[l.Name] = l
		if v := after.Get(l.Name); v != "m" {
			return nil, fragmentErr("%s:%d: config-fragment: %s came out as %s after olddefconfig, not m (not a tristate, or its dependencies are not enabled as y/m in the stock config)", f.File, l.Line, l.Name, v)
		}
	}
	var bad []string
	for _, ch := range DiffConfig(before, after) {
		if _, ok := named[ch.Name]; ok {
			continue
		}
		newOpt := ch.Old == "" || ch.Old == "n"
		switch {
		case newOpt && (ch.New == "m" || ch.New == "n"):
			notes = append(notes, ch.String())
		case ch.Old == "" && ch.New != "y":
			notes = append(notes, ch.String())
		default:
			bad = append(bad, ch.String())
		}
	}
	if len(bad) > 0 {
		return notes, fragmentErr("%s would change the built-in kernel, which then no longer matches the stock one (an option it selects or enables is built in); refused changes:\n  %s", f.linesText(), strings.Join(bad, "\n  "))
	}
	return notes, nil
}
