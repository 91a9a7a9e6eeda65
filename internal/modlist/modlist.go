// Package modlist reads and validates wsl-modules.yml, the list of
// out-of-tree kernel modules to build and the kernel options to adjust:
//
//	kernel:
//	  arch: x86_64            # or arm64
//	  config-fragment: |      # optional; only n->m changes are allowed
//	    CONFIG_USB_SERIAL_CH341=m
//	modules:
//	  - name: v4l2loopback
//	    git: https://github.com/umlaeute/v4l2loopback
//	    ref: v0.13.2
//	  - name: mydriver
//	    path: drivers/mydriver          # relative to the list's directory
//	  - name: apfs
//	    url: https://example.org/apfs-0.3.tar.gz
//	    sha256: <hex>
//	    make: [ "KVER={{.KernelRelease}}" ]
//	    depends: [ mydriver ]           # optional; found automatically too
//
// Every error names the file, line, column and field, e.g.
// "wsl-modules.yml:7:5: modules[1].sha256: want 64 hex digits".
package modlist

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// FileName is the conventional name of the module list.
const FileName = "wsl-modules.yml"

// Architectures.
const (
	ArchX86_64 = "x86_64"
	ArchARM64  = "arm64"
)

// List is the content of wsl-modules.yml.
type List struct {
	Kernel  Kernel   `yaml:"kernel"`
	Modules []Module `yaml:"modules"`

	// File is the path the list was read from (empty for Parse without a
	// name); Dir is its directory, against which path sources resolve.
	File string `yaml:"-"`
	Dir  string `yaml:"-"`
}

// Kernel holds the kernel settings.
type Kernel struct {
	// Arch is x86_64 (default) or arm64.
	Arch string `yaml:"arch"`
	// ConfigFragment holds CONFIG_X=m lines to apply to the stock config.
	ConfigFragment string `yaml:"config-fragment"`
	// FragmentLine is the line of the first fragment line in the file
	// (0 if unknown), so fragment errors can name a file line.
	FragmentLine int `yaml:"-"`
}

// Module is one out-of-tree module to build. Exactly one of Git, URL and
// Path is set.
type Module struct {
	// Name names the module's build, its log and its install directory
	// extra/<Name>/.
	Name string `yaml:"name"`
	// Git is a repository URL; Ref (a tag, branch or commit) is required.
	// Load makes a local path (IsLocalGit) absolute, relative to the
	// list's directory.
	Git string `yaml:"git"`
	Ref string `yaml:"ref"`
	// URL is a tarball URL; SHA256 pins its content.
	URL    string `yaml:"url"`
	SHA256 string `yaml:"sha256"`
	// Path is a directory relative to the list's directory.
	Path string `yaml:"path"`
	// Make holds extra make arguments; each is a Go template with the
	// fields of TemplateVars.
	Make []string `yaml:"make"`
	// Depends names listed modules that must be built first. Optional:
	// dependencies are also detected from the sources' symbols.
	Depends []string `yaml:"depends"`

	// Line and Column locate the module's entry in the file.
	Line, Column int `yaml:"-"`
}

// Source kinds.
const (
	KindGit  = "git"
	KindURL  = "url"
	KindPath = "path"
)

// Kind returns the module's source kind: git, url or path.
func (m *Module) Kind() string {
	switch {
	case m.Git != "":
		return KindGit
	case m.URL != "":
		return KindURL
	}
	return KindPath
}

// TemplateVars are the values available to make: templates.
type TemplateVars struct {
	// KernelRelease is `make kernelrelease` (uname -r).
	KernelRelease string
	// Arch is x86_64 or arm64.
	Arch string
	// KernelDir is the kernel build tree modules are built against.
	KernelDir string
}

// MakeArgs expands the module's make: templates.
func (m *Module) MakeArgs(v TemplateVars) ([]string, error) {
	out := make([]string, 0, len(m.Make))
	for i, s := range m.Make {
		t, err := template.New("make").Option("missingkey=error").Parse(s)
		if err != nil {
			return nil, fmt.Errorf("modules %s: make[%d]: %w", m.Name, i, err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, v); err != nil {
			return nil, fmt.Errorf("modules %s: make[%d]: %w", m.Name, i, err)
		}
		out = append(out, b.String())
	}
	return out, nil
}

// SourceDir returns the absolute directory of a path module.
func (l *List) SourceDir(m *Module) string {
	if filepath.IsAbs(m.Path) {
		return m.Path
	}
	return filepath.Join(l.Dir, m.Path)
}

// Load reads and validates the list at path.
func Load(path string) (*List, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("modlist: %w", err)
	}
	l, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("modlist: %w", err)
	}
	l.Dir = abs
	// A local repository path means the same to git ls-remote (the plan)
	// and to git -C <tmp> fetch (the fetch) only when it is absolute.
	for i := range l.Modules {
		if m := &l.Modules[i]; IsLocalGit(m.Git) && !filepath.IsAbs(m.Git) {
			m.Git = filepath.Join(abs, m.Git)
		}
	}
	return l, nil
}

// IsLocalGit reports whether a git: value is a local path rather than a
// URL (scheme://…, or <transport>::<address>) or the scp-like form
// [user@]host:path, by git's own rule: a colon before any slash makes it
// scp-like.
func IsLocalGit(s string) bool {
	if s == "" || strings.Contains(s, "://") {
		return false
	}
	colon := strings.IndexByte(s, ':')
	return colon < 0 || strings.Contains(s[:colon], "/")
}

// Error is a problem at a position in the list.
type Error struct {
	File         string
	Line, Column int
	// Field is the path of the offending field, e.g. modules[1].sha256.
	Field string
	Msg   string
}

func (e *Error) Error() string {
	loc := e.File
	if loc == "" {
		loc = FileName
	}
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d:%d", loc, e.Line, e.Column)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$`)
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Parse parses and validates list content; name is used in errors.
func Parse(name string, data []byte) (*List, error) {
	var l List
	if err := yaml.UnmarshalWithOptions(data, &l, yaml.Strict()); err != nil {
		return nil, yamlError(name, err)
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlError(name, err)
	}
	l.File = name
	pos := func(p string) (int, int) {
		pp, err := yaml.PathString(p)
		if err != nil {
			return 0, 0
		}
		n, err := pp.FilterFile(f)
		if err != nil || n == nil || n.GetToken() == nil {
			return 0, 0
		}
		t := n.GetToken()
		if mn, ok := n.(*ast.MappingNode); ok && len(mn.Values) > 0 && mn.Values[0].Key != nil {
			t = mn.Values[0].Key.GetToken()
		} else if mv, ok := n.(*ast.MappingValueNode); ok && mv.Key != nil {
			t = mv.Key.GetToken()
		}
		return t.Position.Line, t.Position.Column
	}
	var errs []error
	bad := func(yamlPath, field, format string, a ...any) {
		line, col := pos(yamlPath)
		errs = append(errs, &Error{File: name, Line: line, Column: col, Field: field, Msg: fmt.Sprintf(format, a...)})
	}

	switch l.Kernel.Arch {
	case "":
		l.Kernel.Arch = ArchX86_64
	case ArchX86_64, ArchARM64:
	default:
		bad("$.kernel.arch", "kernel.arch", "unknown architecture %q (want %s or %s)", l.Kernel.Arch, ArchX86_64, ArchARM64)
	}
	if l.Kernel.ConfigFragment != "" {
		line, _ := pos("$.kernel.config-fragment")
		if line > 0 && isBlockScalar(f, "$.kernel.config-fragment") {
			line++ // a block scalar's content starts on the next line
		}
		l.Kernel.FragmentLine = line
	}
	seen := map[string]int{}
	for i := range l.Modules {
		m := &l.Modules[i]
		p := fmt.Sprintf("$.modules[%d]", i)
		fld := fmt.Sprintf("modules[%d]", i)
		m.Line, m.Column = pos(p)
		if m.Name == "" {
			bad(p, fld+".name", "missing module name")
		} else if !nameRE.MatchString(m.Name) || m.Name == "." || m.Name == ".." {
			bad(p+".name", fld+".name", "%q is not a safe name (letters, digits, '_', '-', '.', '+'; at most 64)", m.Name)
		} else if j, dup := seen[m.Name]; dup {
			bad(p+".name", fld+".name", "duplicate module name %q (also modules[%d])", m.Name, j)
		} else {
			seen[m.Name] = i
		}
		kinds := 0
		for _, s := range []string{m.Git, m.URL, m.Path} {
			if s != "" {
				kinds++
			}
		}
		switch {
		case kinds == 0:
			bad(p, fld, "no source: set one of git, url or path")
		case kinds > 1:
			bad(p, fld, "more than one source: set only one of git, url or path")
		}
		if m.Git != "" && m.Ref == "" {
			bad(p+".git", fld+".ref", "a git source needs ref (a tag, branch or commit)")
		}
		if m.Ref != "" && m.Git == "" {
			bad(p+".ref", fld+".ref", "ref is only valid with git")
		}
		if m.URL != "" && m.SHA256 == "" {
			bad(p+".url", fld+".sha256", "a url source needs sha256")
		}
		if m.SHA256 != "" {
			if m.URL == "" {
				bad(p+".sha256", fld+".sha256", "sha256 is only valid with url")
			} else if !sha256RE.MatchString(strings.ToLower(m.SHA256)) {
				bad(p+".sha256", fld+".sha256", "want 64 hex digits, got %q", m.SHA256)
			}
			m.SHA256 = strings.ToLower(m.SHA256)
		}
		if m.Path != "" {
			clean := filepath.ToSlash(filepath.Clean(m.Path))
			if filepath.IsAbs(m.Path) || clean == ".." || strings.HasPrefix(clean, "../") {
				bad(p+".path", fld+".path", "%q must be a relative path inside the repository", m.Path)
			}
		}
		for j, s := range m.Make {
			if _, err := template.New("make").Parse(s); err != nil {
				bad(fmt.Sprintf("%s.make[%d]", p, j), fmt.Sprintf("%s.make[%d]", fld, j), "bad template: %v", err)
			} else if _, err := m.MakeArgs(TemplateVars{}); err != nil {
				bad(fmt.Sprintf("%s.make[%d]", p, j), fmt.Sprintf("%s.make[%d]", fld, j), "%v", errors.Unwrap(err))
			}
		}
	}
	for i := range l.Modules {
		m := &l.Modules[i]
		for j, d := range m.Depends {
			p := fmt.Sprintf("$.modules[%d].depends[%d]", i, j)
			fld := fmt.Sprintf("modules[%d].depends[%d]", i, j)
			if _, ok := seen[d]; !ok {
				bad(p, fld, "%q is not a listed module", d)
			} else if d == m.Name {
				bad(p, fld, "module depends on itself")
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &l, nil
}

func isBlockScalar(f *ast.File, p string) bool {
	pp, err := yaml.PathString(p)
	if err != nil {
		return false
	}
	n, err := pp.FilterFile(f)
	if err != nil {
		return false
	}
	_, ok := n.(*ast.LiteralNode)
	return ok
}

// yamlError converts a go-yaml error into an Error with its position.
func yamlError(name string, err error) error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{File: name, Msg: ye.GetMessage()}
		if t := ye.GetToken(); t != nil && t.Position != nil {
			e.Line, e.Column = t.Position.Line, t.Position.Column
		}
		var uf *yaml.UnknownFieldError
		if errors.As(err, &uf) {
			e.Msg = "unknown field: " + strings.TrimPrefix(uf.Message, "unknown field ")
		}
		return e
	}
	return &Error{File: name, Msg: err.Error()}
}
