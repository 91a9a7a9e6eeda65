package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
)

const ghToken = "ghp_CLITOKEN_0123456789abcdefghijklmnopqrstuv"

func runGitHubCLI(getenv func(string) string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), &cliEnv{Stdout: &out, Stderr: &errb, Getenv: getenv}, args)
	return code, out.String(), errb.String()
}

func writeDist(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, size := range map[string]int{"bzImage": 1 << 20, "modules.vhdx": 2 << 20} {
		b := make([]byte, size)
		rand.Read(b)
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	m := &manifest.Manifest{Schema: manifest.SchemaVersion, Tool: "test",
		Kernel: manifest.Kernel{Tag: "linux-msft-wsl-6.6.87.2", Release: "6.6.87.2-microsoft-standard-WSL2", Arch: "x86_64", ImageFile: "bzImage",
			Source: manifest.Source{Kind: "github-tarball", Repo: "microsoft/WSL2-Linux-Kernel", Tag: "linux-msft-wsl-6.6.87.2"}},
		Layout: "flat"}
	if err := m.Write(filepath.Join(dir, manifest.FileName)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The token never appears in any output of tags, fetch or publish, on
// success or failure.
func TestGitHubCommandsHideToken(t *testing.T) {
	fake := githubfake.NewT(t, githubfake.Options{Token: ghToken})
	fake.AddTags("microsoft/WSL2-Linux-Kernel", githubfake.Tag{Name: "linux-msft-wsl-6.6.87.2"}, githubfake.Tag{Name: "linux-msft-wsl-6.6.114.1"}, githubfake.Tag{Name: "not-a-kernel"})
	fake.AddTags("me/mods")
	getenv := fake.Getenv(map[string]string{"GITHUB_REPOSITORY": "me/mods"})
	dist := writeDist(t)
	var all strings.Builder
	check := func(wantCode int, wantOut string, args ...string) {
		t.Helper()
		code, out, errs := runGitHubCLI(getenv, args...)
		all.WriteString(out + errs)
		if code != wantCode || !strings.Contains(out+errs, wantOut) {
			t.Errorf("%v: exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", args, code, wantCode, wantOut, out, errs)
		}
	}
	check(0, "build linux-msft-wsl-6.6.114.1", "tags", "--track", "all-new", "-v")
	check(0, "ignoring tag \"not-a-kernel\"", "tags", "--track", "6.6", "-v", "--all", "--paginated")
	check(1, "not found", "tags", "--track", "6.6.1.1")
	check(2, `track "newest"`, "tags", "--track", "newest")
	check(0, "would publish", "publish", "--dir", dist, "--dry-run")
	check(0, "published wsl-modules-6.6.87.2", "publish", "--dir", dist, "--token", ghToken)
	check(0, "up to date", "publish", "--dir", dist)
	check(0, "newest release in me/mods: wsl-modules-6.6.87.2", "tags", "--track", "all-new")
	check(1, "Not Found", "publish", "--repo", "me/missing", "--dir", dist)
	check(1, "Bad credentials", "publish", "--dir", dist, "--token", ghToken+"x")
	check(1, "not found", "fetch", "--tag", "linux-msft-wsl-6.6.1.1", "--out", filepath.Join(t.TempDir(), "src"))
	check(2, "--tag", "fetch", "--out", "x")
	if strings.Contains(all.String(), ghToken) {
		t.Error("the token appears in the output")
	}
	for _, r := range fake.Requests() {
		if strings.Contains(r.Path+r.Query, ghToken) {
			t.Errorf("token in a URL: %s", r.Path)
		}
	}
}
