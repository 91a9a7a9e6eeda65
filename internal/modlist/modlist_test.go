package modlist

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `kernel:
  arch: x86_64
  config-fragment: |
    CONFIG_USB_SERIAL_CH341=m
modules:
  - name: v4l2loopback
    git: https://github.com/umlaeute/v4l2loopback
    ref: v0.13.2
  - name: mydriver
    path: drivers/mydriver
  - name: apfs
    url: https://example.org/apfs-0.3.tar.gz
    sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF
    make: [ "KVER={{.KernelRelease}}", "ARCH={{ .Arch }}" ]
    depends: [ mydriver ]
    autoload: [ apfs ]
`

func TestParseGood(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, FileName)
	if err := os.WriteFile(p, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if l.Kernel.Arch != "x86_64" || l.Kernel.ConfigFragment != "CONFIG_USB_SERIAL_CH341=m\n" || l.Kernel.FragmentLine != 4 {
		t.Errorf("kernel = %+v", l.Kernel)
	}
	if len(l.Modules) != 3 {
		t.Fatalf("modules = %d", len(l.Modules))
	}
	if k := l.Modules[0].Kind(); k != KindGit {
		t.Errorf("kind = %s", k)
	}
	if got := l.SourceDir(&l.Modules[1]); got != filepath.Join(dir, "drivers/mydriver") {
		t.Errorf("SourceDir = %s", got)
	}
	if l.Modules[1].Line != 9 {
		t.Errorf("line = %d", l.Modules[1].Line)
	}
	a := &l.Modules[2]
	if a.SHA256 != strings.ToLower(a.SHA256) {
		t.Errorf("sha256 not normalised")
	}
	args, err := a.MakeArgs(TemplateVars{KernelRelease: "6.12.117-microsoft-standard-WSL2", Arch: "x86_64"})
	if err != nil || strings.Join(args, " ") != "KVER=6.12.117-microsoft-standard-WSL2 ARCH=x86_64" {
		t.Errorf("MakeArgs = %q, %v", args, err)
	}
	if al := a.Autoload; al.All || len(al.Names) != 1 || al.Names[0] != "apfs" || al.NamePos[0] != (Pos{16, 17}) {
		t.Errorf("autoload = %+v", al)
	}
	if l.Modules[0].Autoload.Enabled() {
		t.Errorf("autoload enabled without the field")
	}
}

func TestParseBad(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"malformed", "modules:\n  - name: [x\n", "x.yml:"},
		{"unknown field", "modules:\n  - name: a\n    path: a\n    colour: red\n", `x.yml:4:5: unknown field: "colour"`},
		{"unknown top field", "kernal:\n  arch: x86_64\n", `x.yml:1:1: unknown field: "kernal"`},
		{"arch", "kernel:\n  arch: mips\n", "x.yml:2:9: kernel.arch: unknown architecture"},
		{"no source", "modules:\n  - name: a\n", "x.yml:2:5: modules[0]: no source"},
		{"two sources", "modules:\n  - name: a\n    path: a\n    git: https://x\n    ref: v1\n", "modules[0]: more than one source"},
		{"git without ref", "modules:\n  - name: a\n    git: https://x\n", "x.yml:3:10: modules[0].ref: a git source needs ref"},
		{"sha256", "modules:\n  - name: a\n    url: https://x/a.tgz\n    sha256: abc\n", `x.yml:4:13: modules[0].sha256: want 64 hex digits, got "abc"`},
		{"url without sha", "modules:\n  - name: a\n    url: https://x/a.tgz\n", "modules[0].sha256: a url source needs sha256"},
		{"unsafe name", "modules:\n  - name: ../x\n    path: a\n", `x.yml:2:11: modules[0].name: "../x" is not a safe name`},
		{"duplicate name", "modules:\n  - name: a\n    path: a\n  - name: a\n    path: b\n", `x.yml:4:11: modules[1].name: duplicate module name "a"`},
		{"unknown depends", "modules:\n  - name: a\n    path: a\n    depends: [b]\n", `x.yml:4:15: modules[0].depends[0]: "b" is not a listed module`},
		{"bad template", "modules:\n  - name: a\n    path: a\n    make: [\"X={{.Nope}}\"]\n", "x.yml:4:12: modules[0].make[0]: {{.Nope}}: only {{.KernelRelease}}, {{.Arch}} and {{.KernelDir}} may be substituted"},
		{"template range", "modules:\n  - name: a\n    path: a\n    make:\n      - \"{{range 200000000}}{{end}}\"\n", "x.yml:5:9: modules[0].make[0]: {{range 200000000}}: only"},
		{"template printf", "modules:\n  - name: a\n    path: a\n    make: ['{{printf \"%0999999999d\" 1}}']\n", "x.yml:4:12: modules[0].make[0]: {{printf"},
		{"template pipeline", "modules:\n  - name: a\n    path: a\n    make: [\"{{.Arch | len}}\"]\n", "modules[0].make[0]: {{.Arch | len}}: only"},
		{"template unclosed", "modules:\n  - name: a\n    path: a\n    make: [\"K={{.Arch\"]\n", "modules[0].make[0]: unclosed {{"},
		{"template second arg", "modules:\n  - name: a\n    path: a\n    make: [ok, \"{{.X}}\"]\n", "x.yml:4:16: modules[0].make[1]: {{.X}}"},
		{"autoload string", "modules:\n  - name: a\n    path: a\n    autoload: yes-please\n", "x.yml:4:15: modules[0].autoload: want true, false or a list of module names, got yes-please"},
		{"autoload empty", "modules:\n  - name: a\n    path: a\n    autoload: []\n", "x.yml:4:15: modules[0].autoload: an empty list"},
		{"autoload ko", "modules:\n  - name: a\n    path: a\n    autoload: [a, b.ko]\n", `x.yml:4:19: modules[0].autoload[1]: "b.ko": a module name, without .ko`},
		{"autoload bad name", "modules:\n  - name: a\n    path: a\n    autoload: [\"a,b\"]\n", `x.yml:4:16: modules[0].autoload[0]: "a,b" is not a module name`},
		{"autoload twice", "modules:\n  - name: a\n    path: a\n    autoload:\n      - ddcci-backlight\n      - ddcci_backlight\n", `x.yml:6:9: modules[0].autoload[1]: "ddcci_backlight" is listed twice (also autoload[0])`},
		{"autoload map", "modules:\n  - name: a\n    path: a\n    autoload: {x: 1}\n", "x.yml:4:15: modules[0].autoload: want true, false or a list"},
		{"autoload number", "modules:\n  - name: a\n    path: a\n    autoload: [1]\n", "modules[0].autoload: want module names, got 1"},
		{"type", "modules: 3\n", "x.yml:1:10:"},
		{"tag", "modules:\n  - name: a\n    path: a\n    make: !000\n0\n", "x.yml:4:11: YAML tags such as !000 are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yml", []byte(tc.in))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestLoadLocalGit: a git: value that is a local path is made absolute
// against the list's directory (the plan's git ls-remote and the fetch's
// git -C <tmp> fetch run in different directories); URLs and the scp-like
// form are kept as written.
func TestLoadLocalGit(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "conf")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"../repos/a":                      filepath.Join(dir, "repos", "a"),
		"repos/b.git":                     filepath.Join(sub, "repos", "b.git"),
		"./c":                             filepath.Join(sub, "c"),
		"d":                               filepath.Join(sub, "d"),
		"./dir:with/colon":                filepath.Join(sub, "dir:with", "colon"),
		"/abs/repo":                       "/abs/repo",
		"https://github.com/o/r":          "https://github.com/o/r",
		"file:///srv/git/r.git":           "file:///srv/git/r.git",
		"ssh://git@example.org/r.git":     "ssh://git@example.org/r.git",
		"git@github.com:o/r.git":          "git@github.com:o/r.git",
		"example.org:r.git":               "example.org:r.git",
		"ext::ssh -p 22 example.org r":    "ext::ssh -p 22 example.org r",
		"user@host.example:/srv/git/repo": "user@host.example:/srv/git/repo",
	}
	var yml strings.Builder
	yml.WriteString("modules:\n")
	var order []string
	for g := range want {
		order = append(order, g)
	}
	for i, g := range order {
		fmt.Fprintf(&yml, "  - {name: m%d, git: %q, ref: main}\n", i, g)
	}
	p := filepath.Join(sub, FileName)
	if err := os.WriteFile(p, []byte(yml.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Loaded through a relative path, from the parent directory.
	t.Chdir(dir)
	l, err := Load(filepath.Join("conf", FileName))
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range order {
		if got := l.Modules[i].Git; got != want[g] {
			t.Errorf("git %q loaded as %q, want %q", g, got, want[g])
		}
	}
}

// TestExamplesLoad loads the lists the README and the example workflows
// point users at: they must stay valid, and the documented example must
// autoload its module.
func TestExamplesLoad(t *testing.T) {
	for _, p := range []string{"../../examples/wsl-modules.yml", "../../testdata/wsl-modules-local.yml"} {
		l, err := Load(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if len(l.Modules) == 0 {
			t.Errorf("%s: no modules", p)
		}
	}
	l, err := Load("../../examples/wsl-modules.yml")
	if err == nil && (l.Kernel.ConfigFragment != "" || !l.Modules[0].Autoload.Enabled()) {
		t.Errorf("examples/wsl-modules.yml: fragment %q, autoload %+v", l.Kernel.ConfigFragment, l.Modules[0].Autoload)
	}
}
