package modlist

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitRepo makes a git work tree with .github/ and drivers/foo/, and a
// directory outside it; it returns the repository and the outside dir.
func gitRepo(t *testing.T) (repo, outside string) {
	t.Helper()
	base := t.TempDir()
	repo, outside = filepath.Join(base, "repo"), filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(repo, ".github"), filepath.Join(repo, "drivers", "foo"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("git", "init", "-q", repo).CombinedOutput(); err != nil {
		t.Skipf("git init: %v: %s", err, out)
	}
	return repo, outside
}

func writeList(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, FileName)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadPaths: with the list at .github/wsl-modules.yml, path: may go up
// with .. within the repository (the git top level, or the workspace in
// action mode); absolute paths are taken as written in CLI use and must
// be inside the workspace in action mode; a symbolic link leading out is
// refused; every refusal names file:line:col and the field.
func TestLoadPaths(t *testing.T) {
	repo, outside := gitRepo(t)
	gh := filepath.Join(repo, ".github")
	if err := os.Symlink(outside, filepath.Join(repo, "escape")); err != nil {
		t.Fatal(err)
	}
	p := writeList(t, gh, "modules:\n  - name: foo\n    path: ../drivers/foo\n")
	l, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.SourceDir(&l.Modules[0]); got != filepath.Join(repo, "drivers", "foo") || l.Root != repo {
		t.Errorf("SourceDir %s, root %s", got, l.Root)
	}

	for _, tc := range []struct {
		name, path string
		o          LoadOptions
		want       string // "" = accepted
	}{
		{"up within repo", "../drivers/foo", LoadOptions{}, ""},
		{"dot", ".", LoadOptions{}, ""},
		{"repo root", "..", LoadOptions{}, ""},
		{"up out of repo", "../../outside", LoadOptions{},
			`:3:11: modules[0].path: "../../outside" resolves to ` + outside + `, outside the repository (` + repo + `); a relative path is taken from the list's directory (` + gh + `) and may use .. only within the repository`},
		{"far up", "../../../../../../etc", LoadOptions{}, "outside the repository"},
		{"absolute CLI", outside, LoadOptions{}, ""},
		{"absolute usr/src CLI", "/usr/src/acpi-call-1.2.2", LoadOptions{}, ""},
		{"absolute action outside", outside, LoadOptions{Root: repo, ActionMode: true},
			`:3:11: modules[0].path: "` + outside + `" is outside the workspace (` + repo + `)`},
		{"absolute action inside", filepath.Join(repo, "drivers", "foo"), LoadOptions{Root: repo, ActionMode: true}, ""},
		{"relative action outside", "../../outside", LoadOptions{Root: repo, ActionMode: true}, "outside the workspace"},
		{"narrower root", "../drivers/foo", LoadOptions{Root: gh}, "outside the repository (" + gh + ")"},
		{"link out", "../escape", LoadOptions{}, `"../escape" leads through a symbolic link to ` + outside + `, outside the repository`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeList(t, gh, "modules:\n  - name: foo\n    path: "+tc.path+"\n")
			l, err := LoadWith(p, tc.o)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("accepted (dir %s), want %q", l.SourceDir(&l.Modules[0]), tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error:\n%v\nwant it to contain %q", err, tc.want)
			case tc.want != "" && !strings.HasPrefix(err.Error(), p+":"):
				t.Errorf("error %q does not start with the file name", err)
			}
		})
	}
}

// TestLoadPathsOutsideGit: outside any git work tree the list's directory
// is the repository.
func TestLoadPathsOutsideGit(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "conf")
	if err := os.MkdirAll(filepath.Join(sub, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := writeList(t, sub, "modules:\n  - {name: a, path: m}\n  - {name: b, path: ../m}\n")
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), `:3:21: modules[1].path: "../m" resolves to `+filepath.Join(dir, "m")+`, outside the repository (`+sub+`)`) {
		t.Errorf("error: %v", err)
	}
	if strings.Contains(err.Error(), "modules[0]") {
		t.Errorf("modules[0] refused: %v", err)
	}
}
