package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
)

// wslCLIFake serves microsoft/WSL (githubfake.WSLHistory) and two kernel
// tags.
func wslCLIFake(t *testing.T) (*githubfake.Server, func(string) string) {
	t.Helper()
	fake := githubfake.NewT(t, githubfake.Options{Token: ghToken})
	if _, err := fake.AddWSLReleases("microsoft/WSL", githubfake.WSLHistory(time.Date(2019, 6, 1, 0, 0, 0, 0, time.UTC))...); err != nil {
		t.Fatal(err)
	}
	fake.AddTags("microsoft/WSL2-Linux-Kernel", githubfake.Tag{Name: "linux-msft-wsl-6.6.87.2"}, githubfake.Tag{Name: "linux-msft-wsl-6.6.114.1"})
	return fake, fake.Getenv(nil)
}

// tableRow returns the fields of the table line for WSL version v.
func tableRow(out, v string) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == v {
			return f
		}
	}
	return nil
}

func TestTagsWSLTable(t *testing.T) {
	fake, getenv := wslCLIFake(t)
	cache := filepath.Join(t.TempDir(), "wsl-releases.json")
	code, out, errs := runGitHubCLI(getenv, "tags", "--wsl", "--wsl-cache", cache)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if !strings.HasPrefix(out, "microsoft/WSL: 43 releases from 2.5.1 on (newest 2.9.4, newest stable 2.8.12)\nWSL ") {
		t.Errorf("header:\n%s", out)
	}
	for v, want := range map[string]string{
		"2.9.4":  "2.9.4 pre-release linux-msft-wsl-6.18.35.2 wsl.2.9.4.0.x64.msi wsl.2.9.4.0.arm64.msi",
		"2.8.12": "2.8.12 stable linux-msft-wsl-6.18.35.1 wsl.2.8.12.0.x64.msi wsl.2.8.12.0.arm64.msi",
		"2.7.9":  "2.7.9 stable linux-msft-wsl-6.18.33.2 wsl.2.7.9.0.x64.msi wsl.2.7.9.0.arm64.msi",
		"2.5.3":  "2.5.3 pre-release - wsl.2.5.3.0.x64.msi wsl.2.5.3.0.arm64.msi kernel unknown: no packages.config at tag 2.5.3 (GitHub: Not Found)",
	} {
		if got := strings.Join(tableRow(out, v), " "); got != want {
			t.Errorf("row %s:\n got %q\nwant %q", v, got, want)
		}
	}
	if tableRow(out, "2.4.13") != nil || strings.Count(out, "\n") != 2+43 {
		t.Errorf("want 43 rows:\n%s", out)
	}
	for _, r := range fake.Requests() {
		if r.Route == githubfake.RouteMatchingRefs || r.Route == githubfake.RouteTags {
			t.Errorf("tags --wsl listed kernel tags: %s", r.Path)
		}
	}
	// Again with the cache: one conditional request, answered 304.
	fake.ResetRequests()
	code, out2, _ := runGitHubCLI(getenv, "tags", "--wsl", "--wsl-cache", cache)
	reqs := fake.Requests()
	if code != 0 || out2 != out || len(reqs) != 1 || reqs[0].Status != 304 {
		t.Errorf("cached run: exit %d, %d requests %+v, same output %v", code, len(reqs), reqs, out2 == out)
	}
	if strings.Contains(out+errs, ghToken) {
		t.Error("the token appears in the output")
	}
}

func TestTagsWSLTracks(t *testing.T) {
	_, getenv := wslCLIFake(t)
	check := func(wantCode int, want string, args ...string) string {
		t.Helper()
		code, out, errs := runGitHubCLI(getenv, args...)
		squash := func(s string) string { return strings.Join(strings.Fields(s), " ") }
		if code != wantCode || !strings.Contains(squash(out+errs), squash(want)) {
			t.Errorf("%v: exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", args, code, wantCode, want, out, errs)
		}
		return out
	}
	out := check(0, "build linux-msft-wsl-6.18.35.1 wsl: the kernel of WSL 2.8.12, the newest stable WSL release", "tags", "--track", "wsl")
	if !strings.Contains(out, "track wsl: WSL 2.8.12 ships linux-msft-wsl-6.18.35.1\n") || strings.Contains(out, "tags, ") {
		t.Errorf("track wsl:\n%s", out)
	}
	check(0, "shipped by WSL 2.9.4 (pre-release), 2.9.3 (pre-release), 2.9.1 (pre-release)", "tags", "--track", "wsl-prerelease")
	check(0, "build linux-msft-wsl-6.6.87.2 wsl-2.6.1: the kernel of WSL 2.6.1", "tags", "--track", "wsl-2.6.1")
	check(1, "WSL 2.5.3: no packages.config at tag 2.5.3", "tags", "--track", "wsl-2.5.3")
	check(1, "WSL 2.4.13 not found", "tags", "--track", "wsl-2.4.13")
	check(2, "wsl-prerelease or a WSL version such as wsl-2.6.1", "tags", "--track", "wsl-next")
	// --wsl with a kernel-tag track: the table, then the selection with the
	// releases that ship the chosen tag.
	out = check(0, "build linux-msft-wsl-6.6.114.1 series 6.6: its newest tag; shipped by WSL 2.8.4, 2.8.3, 2.8.2, 2.8.1, 2.8.0, 2.7.3, 2.7.2, 2.7.1, 2.7.0 (pre-release)",
		"tags", "--wsl", "--track", "6.6")
	if !strings.Contains(out, "2.9.4 ") || !strings.Contains(out, "microsoft/WSL2-Linux-Kernel: 2 tags") {
		t.Errorf("--wsl --track 6.6:\n%s", out)
	}
}
