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
//	    autoload: true                  # WSL loads its modules at boot
//	  - name: mydriver
//	    path: ../drivers/mydriver       # from the list's directory, inside the repository
//	  - name: apfs
//	    url: https://example.org/apfs-0.3.tar.gz
//	    sha256: <hex>
//	    make: [ "KVER={{.KernelRelease}}" ]
//	    depends: [ mydriver ]           # optional; found automatically too
//	    autoload: [ apfs ]              # or name the modules to load
//
// Every error names the file, line, column and field, e.g.
// "wsl-modules.yml:7:5: modules[1].sha256: want 64 hex digits".
//
// Parse checks the content; Load (LoadWith) also resolves path: sources
// against the file system (see LoadOptions). A list is bounded (Max*
// constants) so that no file can make parsing slow or large.
package modlist

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

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
	// name); Dir is its directory, against which path sources resolve;
	// Root is the repository they must stay in (Load only).
	File string `yaml:"-"`
	Dir  string `yaml:"-"`
	Root string `yaml:"-"`
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
	// Mode is how the kernel is obtained: auto (default: Microsoft's own
	// kernel whenever a WSL release ships it, else built), stock or build.
	Mode string `yaml:"mode"`
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
	// Path is a directory: relative to the list's directory (.. allowed
	// within the repository) or, in CLI use, absolute. See LoadOptions.
	Path string `yaml:"path"`
	// Make holds extra make arguments; each may substitute the fields of
	// TemplateVars, as {{.KernelRelease}}, {{.Arch}} and {{.KernelDir}}.
	Make []string `yaml:"make"`
	// Depends names listed modules that must be built first. Optional:
	// dependencies are also detected from the sources' symbols.
	Depends []string `yaml:"depends"`
	// Autoload puts the entry's modules on WSL's loadKernelModules= list.
	Autoload Autoload `yaml:"autoload"`

	// Line and Column locate the module's entry in the file; PathPos its
	// path: value.
	Line, Column int `yaml:"-"`
	PathPos      Pos `yaml:"-"`

	file    string // the list's name, for errors after parsing
	index   int    // the entry's index in modules
	makePos []Pos
}

// Pos is a position in the list file (Line 0: unknown).
type Pos struct {
	Line, Column int
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

// SourceDir returns the absolute directory of a path module.
func (l *List) SourceDir(m *Module) string {
	if filepath.IsAbs(m.Path) {
		return filepath.Clean(m.Path)
	}
	return filepath.Join(l.Dir, m.Path)
}

// Load reads and validates the list at path, with the default
// LoadOptions (CLI use, the repository found with git).
func Load(path string) (*List, error) { return LoadWith(path, LoadOptions{}) }

// LoadWith reads and validates the list at path and resolves its path:
// sources as o says.
func LoadWith(path string, o LoadOptions) (*List, error) {
	data, err := readLimited(path)
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
	if err := l.resolvePaths(o); err != nil {
		return nil, err
	}
	// A local repository path means the same to git ls-remote (the plan)
	// and to git -C <tmp> fetch (the fetch) only when it is absolute.
	for i := range l.Modules {
		if m := &l.Modules[i]; IsLocalGit(m.Git) && !filepath.IsAbs(m.Git) {
			m.Git = filepath.Join(abs, m.Git)
		}
	}
	return l, nil
}

// readLimited reads a file of at most MaxFileSize bytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("%s: %d bytes; a module list may have at most %d", path, st.Size(), MaxFileSize)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
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

// Parse parses and validates list content; name is used in errors. It
// never panics and its time and memory are bounded by the Max* limits.
func Parse(name string, data []byte) (l *List, err error) {
	defer func() {
		// The YAML library is third-party code: whatever it does with a
		// hostile file must end as an error of this file.
		if r := recover(); r != nil {
			l, err = nil, &Error{File: name, Msg: fmt.Sprintf("cannot parse: %v", r)}
		}
	}()
	if err := checkSize(name, data); err != nil {
		return nil, err
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlError(name, err)
	}
	if err := checkAST(name, f); err != nil {
		return nil, err
	}
	l = &List{}
	if err := yaml.UnmarshalWithOptions(data, l, yaml.Strict()); err != nil {
		return nil, yamlError(name, err)
	}
	l.File = name
	v := &validator{name: name, f: f}
	v.kernel(l)
	seen := map[string]int{}
	for i := range l.Modules {
		v.module(l, i, seen)
	}
	for i := range l.Modules {
		v.depends(l, i, seen)
	}
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return l, nil
}

// validator collects the problems of one list, with their positions.
type validator struct {
	name string
	f    *ast.File
	errs []error
}

// pos returns the position of the node at a YAML path: for a mapping, of
// its first key; for a key: value pair, of the key.
func (v *validator) pos(p string) Pos {
	pp, err := yaml.PathString(p)
	if err != nil {
		return Pos{}
	}
	n, err := pp.FilterFile(v.f)
	if err != nil || n == nil || n.GetToken() == nil {
		return Pos{}
	}
	t := n.GetToken()
	if mn, ok := n.(*ast.MappingNode); ok && len(mn.Values) > 0 && mn.Values[0].Key != nil {
		t = mn.Values[0].Key.GetToken()
	} else if mv, ok := n.(*ast.MappingValueNode); ok && mv.Key != nil {
		t = mv.Key.GetToken()
	}
	if t == nil || t.Position == nil {
		return Pos{}
	}
	return Pos{t.Position.Line, t.Position.Column}
}

func (v *validator) bad(yamlPath, field, format string, a ...any) {
	v.badAt(v.pos(yamlPath), field, format, a...)
}

func (v *validator) badAt(p Pos, field, format string, a ...any) {
	v.errs = append(v.errs, &Error{File: v.name, Line: p.Line, Column: p.Column, Field: field, Msg: fmt.Sprintf(format, a...)})
}

func (v *validator) kernel(l *List) {
	switch l.Kernel.Arch {
	case "":
		l.Kernel.Arch = ArchX86_64
	case ArchX86_64, ArchARM64:
	default:
		v.bad("$.kernel.arch", "kernel.arch", "unknown architecture %q (want %s or %s)", l.Kernel.Arch, ArchX86_64, ArchARM64)
	}
	switch l.Kernel.Mode {
	case "", "auto", "stock", "build":
	default:
		v.bad("$.kernel.mode", "kernel.mode", "unknown mode %q (want auto, stock or build)", l.Kernel.Mode)
	}
	if l.Kernel.ConfigFragment != "" {
		line := v.pos("$.kernel.config-fragment").Line
		if line > 0 && isBlockScalar(v.f, "$.kernel.config-fragment") {
			line++ // a block scalar's content starts on the next line
		}
		l.Kernel.FragmentLine = line
	}
}

func (v *validator) module(l *List, i int, seen map[string]int) {
	m := &l.Modules[i]
	p := fmt.Sprintf("$.modules[%d]", i)
	fld := fmt.Sprintf("modules[%d]", i)
	at := v.pos(p)
	m.Line, m.Column, m.file, m.index = at.Line, at.Column, v.name, i
	switch {
	case m.Name == "":
		v.bad(p, fld+".name", "missing module name")
	case !nameRE.MatchString(m.Name) || m.Name == "." || m.Name == "..":
		v.bad(p+".name", fld+".name", "%q is not a safe name (letters, digits, '_', '-', '.', '+'; at most 64)", m.Name)
	default:
		if j, dup := seen[m.Name]; dup {
			v.bad(p+".name", fld+".name", "duplicate module name %q (also modules[%d])", m.Name, j)
		} else {
			seen[m.Name] = i
		}
	}
	v.source(m, p, fld)
	if m.Path != "" {
		m.PathPos = v.pos(p + ".path")
		if strings.ContainsRune(m.Path, 0) {
			v.badAt(m.PathPos, fld+".path", "%q contains a NUL byte", m.Path)
		}
	}
	v.make(m, p, fld)
	v.autoload(m, p, fld)
}

func (v *validator) source(m *Module, p, fld string) {
	kinds := 0
	for _, s := range []string{m.Git, m.URL, m.Path} {
		if s != "" {
			kinds++
		}
	}
	switch {
	case kinds == 0:
		v.bad(p, fld, "no source: set one of git, url or path")
	case kinds > 1:
		v.bad(p, fld, "more than one source: set only one of git, url or path")
	}
	if m.Git != "" && m.Ref == "" {
		v.bad(p+".git", fld+".ref", "a git source needs ref (a tag, branch or commit)")
	}
	if m.Ref != "" && m.Git == "" {
		v.bad(p+".ref", fld+".ref", "ref is only valid with git")
	}
	if m.URL != "" && m.SHA256 == "" {
		v.bad(p+".url", fld+".sha256", "a url source needs sha256")
	}
	if m.SHA256 != "" {
		if m.URL == "" {
			v.bad(p+".sha256", fld+".sha256", "sha256 is only valid with url")
		} else if !sha256RE.MatchString(strings.ToLower(m.SHA256)) {
			v.bad(p+".sha256", fld+".sha256", "want 64 hex digits, got %q", m.SHA256)
		}
		m.SHA256 = strings.ToLower(m.SHA256)
	}
}

func (v *validator) make(m *Module, p, fld string) {
	if len(m.Make) > MaxMakeArgs {
		v.bad(p+".make", fld+".make", "%d arguments; at most %d", len(m.Make), MaxMakeArgs)
		return
	}
	m.makePos = make([]Pos, len(m.Make))
	for j, s := range m.Make {
		m.makePos[j] = v.pos(fmt.Sprintf("%s.make[%d]", p, j))
		if err := checkTemplate(s); err != nil {
			v.badAt(m.makePos[j], fmt.Sprintf("%s.make[%d]", fld, j), "%v", err)
		}
	}
}

func (v *validator) depends(l *List, i int, seen map[string]int) {
	m := &l.Modules[i]
	for j, d := range m.Depends {
		p := fmt.Sprintf("$.modules[%d].depends[%d]", i, j)
		fld := fmt.Sprintf("modules[%d].depends[%d]", i, j)
		if _, ok := seen[d]; !ok {
			v.bad(p, fld, "%q is not a listed module", d)
		} else if d == m.Name {
			v.bad(p, fld, "module depends on itself")
		}
	}
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
