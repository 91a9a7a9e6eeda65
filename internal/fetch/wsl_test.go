package fetch

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

const wslRepo = "microsoft/WSL"

var wslStart = time.Date(2019, 6, 1, 12, 0, 0, 0, time.UTC)

// wslFake serves microsoft/WSL with githubfake.WSLHistory (169 releases,
// two pages) and returns the fake and a factory of clients, each a fresh
// process as far as the transport's in-memory ETag cache goes.
func wslFake(t *testing.T) (*githubfake.Server, func() (*githubapi.Client, *bytes.Buffer)) {
	t.Helper()
	fake := githubfake.NewT(t, githubfake.Options{Token: "tok-" + t.Name()})
	if _, err := fake.AddWSLReleases(wslRepo, githubfake.WSLHistory(wslStart)...); err != nil {
		t.Fatal(err)
	}
	return fake, func() (*githubapi.Client, *bytes.Buffer) {
		var log bytes.Buffer
		c, err := githubapi.New(githubapi.Options{Getenv: fake.Getenv(nil), Log: progress.New(&log),
			Sleep: func(context.Context, time.Duration) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		return c, &log
	}
}

// apiRequests counts the API requests per route since the last reset.
func apiRequests(fake *githubfake.Server) (byRoute map[string]int, total int, conditional304 int) {
	byRoute = map[string]int{}
	for _, r := range fake.Requests() {
		if r.Host != githubfake.HostAPI {
			continue
		}
		byRoute[r.Route]++
		total++
		if r.Status == http.StatusNotModified {
			conditional304++
		}
	}
	fake.ResetRequests()
	return byRoute, total, conditional304
}

func versions(rels []WSLRelease) []string {
	var out []string
	for _, r := range rels {
		out = append(out, r.Version)
	}
	return out
}

// The mapping over two pages, with kernels from packages.config; then the
// cache: nothing new costs one conditional request answered 304, a new
// release two requests, a promoted pre-release one.
func TestWSLReleasesAndCache(t *testing.T) {
	fake, client := wslFake(t)
	cacheFile := filepath.Join(t.TempDir(), "work", "wsl-releases.json")
	c, log := client()
	o := WSLOptions{CacheFile: cacheFile, Log: progress.New(log)}
	rels, err := WSLReleases(context.Background(), c, o)
	if err != nil {
		t.Fatal(err)
	}
	byRoute, total, _ := apiRequests(fake)
	// 43 releases from 2.5.1 on: one packages.config each; two list pages.
	if len(rels) != 43 || byRoute[githubfake.RouteReleases] != 2 || byRoute[githubfake.RouteContents] != 43 || total != 45 {
		t.Fatalf("%d releases, requests %v", len(rels), byRoute)
	}
	got := checkHistory(t, rels, log.String())

	// A new process, nothing new: one request, a 304.
	c2, log2 := client()
	o.Log = progress.New(log2)
	again, err := WSLReleases(context.Background(), c2, o)
	if err != nil {
		t.Fatal(err)
	}
	byRoute, total, n304 := apiRequests(fake)
	if total != 1 || n304 != 1 || byRoute[githubfake.RouteReleases] != 1 {
		t.Errorf("unchanged: %d requests (%d answered 304): %v", total, n304, byRoute)
	}
	if !reflect.DeepEqual(again, rels) {
		t.Error("the cached mapping differs from the listed one")
	}
	if !strings.Contains(log2.String(), "not modified") {
		t.Errorf("no debug line for the 304:\n%s", log2)
	}

	// A new release: the listing and its packages.config.
	if _, err := fake.AddWSLReleases(wslRepo, githubfake.WSLRelease{Version: "2.9.5", Prerelease: true,
		KernelPackage: "6.18.40.1-1", Published: wslStart.AddDate(2, 0, 0)}); err != nil {
		t.Fatal(err)
	}
	c3, _ := client()
	rels, err = WSLReleases(context.Background(), c3, o)
	if err != nil {
		t.Fatal(err)
	}
	byRoute, total, _ = apiRequests(fake)
	if total != 2 || byRoute[githubfake.RouteReleases] != 1 || byRoute[githubfake.RouteContents] != 1 {
		t.Errorf("one new release: requests %v", byRoute)
	}
	if len(rels) != 44 || rels[0].Version != "2.9.5" || rels[0].KernelTag != "linux-msft-wsl-6.18.40.1" {
		t.Errorf("after 2.9.5: %d releases, newest %+v", len(rels), rels[0])
	}

	// 2.9.4 promoted to stable: one request, no packages.config again.
	promote(t, c3, got["2.9.4"].ID)
	fake.ResetRequests()
	c4, _ := client()
	rels, err = WSLReleases(context.Background(), c4, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, total, _ = apiRequests(fake); total != 1 {
		t.Errorf("promotion: %d requests", total)
	}
	if rels[1].Version != "2.9.4" || rels[1].Prerelease {
		t.Errorf("2.9.4 after promotion: %+v", rels[1])
	}
	assertOnlyFile(t, filepath.Dir(cacheFile), "wsl-releases.json")
}

// checkHistory checks the mapping of githubfake.WSLHistory against
// WSL.md §9.1 (githubfake.WSLKernelPackage) and returns it by version.
func checkHistory(t *testing.T, rels []WSLRelease, log string) map[string]WSLRelease {
	t.Helper()
	if rels[0].Version != "2.9.4" || rels[len(rels)-1].Version != "2.5.1" {
		t.Errorf("order: %v", versions(rels))
	}
	for _, r := range rels {
		want := githubfake.WSLKernelPackage(r.Version)
		if r.KernelPackage != want || (want != "") != (r.KernelTag != "") {
			t.Errorf("WSL %s: kernel %q (%s), want %q", r.Version, r.KernelPackage, r.KernelTag, want)
		}
		if want == "" && !strings.Contains(r.KernelError, "no packages.config at tag "+r.Version) {
			t.Errorf("WSL %s: KernelError %q", r.Version, r.KernelError)
		}
	}
	got := map[string]WSLRelease{}
	for _, r := range rels {
		got[r.Version] = r
	}
	if r := got["2.9.4"]; r.KernelTag != "linux-msft-wsl-6.18.35.2" || r.KernelPackage != "6.18.35.2-1" || !r.Prerelease {
		t.Errorf("2.9.4: %+v", r)
	}
	if r := got["2.7.9"]; r.KernelTag != "linux-msft-wsl-6.18.33.2" || r.Prerelease || r.Published.IsZero() {
		t.Errorf("2.7.9: %+v", r)
	}
	if !strings.Contains(log, "warning: microsoft/WSL: WSL 2.5.3: no packages.config at tag 2.5.3") {
		t.Errorf("no warning for 2.5.3:\n%s", log)
	}
	msi, err := got["2.6.1"].MSIFor("x86_64")
	if err != nil || msi.Name != "wsl.2.6.1.0.x64.msi" || len(msi.Digest) != 64 || msi.Size == 0 || msi.ID == 0 || msi.URL == "" {
		t.Errorf("MSIFor x86_64: %+v %v", msi, err)
	}
	if a, err := got["2.6.1"].MSIFor("aarch64"); err != nil || a.Name != "wsl.2.6.1.0.arm64.msi" {
		t.Errorf("MSIFor aarch64: %+v %v", a, err)
	}
	return got
}

func promote(t *testing.T, c *githubapi.Client, id int64) {
	t.Helper()
	if _, _, err := c.Repositories.EditRelease(context.Background(), "microsoft", "WSL", id, &github.RepositoryRelease{Prerelease: github.Bool(false)}); err != nil {
		t.Fatal(err)
	}
}

// assertOnlyFile fails unless dir holds exactly the named entries.
func assertOnlyFile(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

// Without a cache every call lists again; a corrupt cache file is
// ignored with a warning and replaced.
func TestWSLReleasesNoOrBadCache(t *testing.T) {
	fake, client := wslFake(t)
	c, _ := client()
	if _, err := WSLReleases(context.Background(), c, WSLOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, total, _ := apiRequests(fake); total != 45 {
		t.Errorf("no cache: %d requests", total)
	}
	cacheFile := filepath.Join(t.TempDir(), "wsl.json")
	os.WriteFile(cacheFile, []byte("{not json"), 0o644)
	c, log := client()
	rels, err := WSLReleases(context.Background(), c, WSLOptions{CacheFile: cacheFile, Log: progress.New(log)})
	if err != nil || len(rels) != 43 {
		t.Fatalf("%d releases, %v", len(rels), err)
	}
	if !strings.Contains(log.String(), "warning: WSL release cache "+cacheFile) {
		t.Errorf("no warning for the corrupt cache:\n%s", log)
	}
	// A cache for another minimum version is not used.
	fake.ResetRequests()
	c, _ = client()
	if _, err := WSLReleases(context.Background(), c, WSLOptions{CacheFile: cacheFile, MinVersion: "2.7.0"}); err != nil {
		t.Fatal(err)
	}
	if _, _, n304 := apiRequests(fake); n304 != 0 {
		t.Error("a cache for another minimum version answered")
	}
}

// A packages.config that names no kernel, is not XML or has a bad
// version: the release is kept without a kernel, warned about once and
// cached; the wsl tracks skip it, wsl-<version> fails naming the file.
func TestWSLBadPackagesConfig(t *testing.T) {
	fake, client := wslFake(t)
	for _, w := range []githubfake.WSLRelease{
		{Version: "2.9.5", Prerelease: true, KernelPackage: ""},
		{Version: "2.9.6", Prerelease: true, PackagesConfig: []byte("<packages><package id=")},
		{Version: "2.9.7", Prerelease: true, KernelPackage: "banana-1"},
	} {
		w.Published = wslStart.AddDate(3, 0, 0)
		if _, err := fake.AddWSLReleases(wslRepo, w); err != nil {
			t.Fatal(err)
		}
	}
	cacheFile := filepath.Join(t.TempDir(), "wsl.json")
	c, log := client()
	rels, err := WSLReleases(context.Background(), c, WSLOptions{CacheFile: cacheFile, Log: progress.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	byVersion := map[string]WSLRelease{}
	for _, r := range rels {
		byVersion[r.Version] = r
	}
	for v, want := range map[string]string{
		"2.9.5": "packages.config at tag 2.9.5: names no Microsoft.WSL.Kernel package",
		"2.9.6": "packages.config at tag 2.9.6: not a NuGet packages.config",
		"2.9.7": `packages.config at tag 2.9.7: Microsoft.WSL.Kernel version "banana-1"`,
	} {
		r := byVersion[v]
		if r.KernelTag != "" || !strings.Contains(r.KernelError, want) {
			t.Errorf("WSL %s: kernel %q, error %q, want %q", v, r.KernelTag, r.KernelError, want)
		}
		if !strings.Contains(log.String(), "warning: microsoft/WSL: WSL "+v+": ") {
			t.Errorf("no warning for %s:\n%s", v, log)
		}
	}
	s, _, warnings, err := SelectWSL(rels, TrackWSLPrerelease)
	if err != nil || s.Tag.Name != "linux-msft-wsl-6.18.35.2" || len(warnings) != 3 || !strings.Contains(s.Reason, "skipped: WSL 2.9.7") {
		t.Errorf("wsl-prerelease: %s (%s), warnings %v, %v", s.Tag.Name, s.Reason, warnings, err)
	}
	_, _, _, err = SelectWSL(rels, "wsl-2.9.5")
	if err == nil || !strings.Contains(err.Error(), "WSL 2.9.5: packages.config at tag 2.9.5: names no Microsoft.WSL.Kernel") {
		t.Errorf("wsl-2.9.5: %v", err)
	}
	// The problems are cached: the next run reads no packages.config.
	fake.ResetRequests()
	c, log = client()
	if _, err := WSLReleases(context.Background(), c, WSLOptions{CacheFile: cacheFile, Log: progress.New(log)}); err != nil {
		t.Fatal(err)
	}
	if byRoute, _, _ := apiRequests(fake); byRoute[githubfake.RouteContents] != 0 {
		t.Errorf("problems re-read: %v", byRoute)
	}
	if strings.Contains(log.String(), "warning:") {
		t.Errorf("warned again:\n%s", log)
	}
}

// A failed request (after the client's retries) is an error naming the
// release and file, and nothing is cached.
func TestWSLReleasesRequestFails(t *testing.T) {
	fake, client := wslFake(t)
	fake.Fail(githubfake.RouteContents, 100, http.StatusBadGateway)
	cacheFile := filepath.Join(t.TempDir(), "wsl.json")
	c, _ := client()
	_, err := WSLReleases(context.Background(), c, WSLOptions{CacheFile: cacheFile})
	if err == nil || !strings.Contains(err.Error(), "WSL 2.9.4: reading packages.config at tag 2.9.4 of microsoft/WSL") {
		t.Fatalf("error %v", err)
	}
	if _, serr := os.Stat(cacheFile); serr == nil {
		t.Error("a cache was written after a failed request")
	}
	assertOnlyFile(t, filepath.Dir(cacheFile))
	fake.ClearFaults()
	fake.Fail(githubfake.RouteReleases, 100, http.StatusBadGateway)
	if _, err := WSLReleases(context.Background(), c, WSLOptions{}); err == nil || !strings.Contains(err.Error(), "listing releases of microsoft/WSL (page 1)") {
		t.Errorf("listing error %v", err)
	}
}

// The JSON form of the contents API (base64) decodes to the raw bytes.
func TestDecodeContentsJSON(t *testing.T) {
	fake, _ := wslFake(t)
	resp, err := http.Get(fake.APIURL() + "/repos/microsoft/WSL/contents/packages.config?ref=2.6.1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got, err := decodeContentsJSON(b)
	if err != nil || !bytes.Equal(got, githubfake.WSLPackagesConfig("6.6.87.2-1")) {
		t.Fatalf("decoded %q, %v", got, err)
	}
	if _, err := decodeContentsJSON([]byte(`[{"type":"dir"}]`)); err == nil {
		t.Error("a directory listing decoded")
	}
}

func TestParsePackagesConfig(t *testing.T) {
	for in, want := range map[string]string{
		string(githubfake.WSLPackagesConfig("6.18.35.2-1")):                                                                     "6.18.35.2-1",
		`<packages><package id="microsoft.wsl.kernel" version="6.6.87.2-1"/></packages>`:                                        "6.6.87.2-1",
		`<packages><package id="Microsoft.WSL.KernelHeaders" version="1.0"/></packages>`:                                        "error: names no",
		`<packages><package id="Microsoft.WSL.Kernel" version="1"/><package id="Microsoft.WSL.Kernel" version="2"/></packages>`: "error: Microsoft.WSL.Kernel listed twice",
		`<project/>`: "error: not a NuGet",
		``:           "error: not a NuGet",
	} {
		got, err := ParsePackagesConfig([]byte(in))
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(got, want) {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"6.18.35.2-1": "linux-msft-wsl-6.18.35.2", "6.6.87.2": "linux-msft-wsl-6.6.87.2", "6.6": "", "x-1": ""} {
		got, err := KernelTagOf(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("KernelTagOf(%q) = %q, %v", in, got, err)
		}
	}
}

func TestWSLVersionsAndMSI(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"2.10.0", "2.9.4", 1}, {"2.6.1.0", "2.6.1", 0}, {"2.5.10", "2.5.9", 1}, {"x", "0.1", -1}} {
		if got := CompareWSLVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareWSLVersions(%s, %s) = %d", c.a, c.b, got)
		}
	}
	r := WSLRelease{Version: "2.6.1", Assets: []WSLAsset{{Name: "Microsoft.WSL_2.6.1.0_x64_ARM64.msixbundle"}, {Name: "wsl.2.6.1.0.x64.msi"}}}
	if _, err := r.MSIFor("arm64"); err == nil || !strings.Contains(err.Error(), "WSL 2.6.1 has no MSI for arm64 (want wsl.2.6.1.0.arm64.msi; assets: Microsoft.WSL_2.6.1.0_x64_ARM64.msixbundle, wsl.2.6.1.0.x64.msi)") {
		t.Errorf("missing arm64 MSI: %v", err)
	}
	if _, err := r.MSIFor("riscv64"); err == nil {
		t.Error("riscv64 accepted")
	}
	rels := []WSLRelease{{Version: "2.6.1", KernelTag: "linux-msft-wsl-6.6.87.2"}, {Version: "2.5.1"}, {Version: "2.6.0", KernelTag: "linux-msft-wsl-6.6.87.2"}}
	if got := versions(ShippedBy(rels, "6.6.87.2")); strings.Join(got, " ") != "2.6.1 2.6.0" {
		t.Errorf("ShippedBy: %v", got)
	}
	if got := ShippedBy(rels, ""); len(got) != 0 {
		t.Errorf("ShippedBy(\"\"): %v", versions(got))
	}
}

// Every wsl track through Select, over the fake: the mapping is listed
// once (then cached), no kernel tags are listed, and each choice says
// which releases ship the kernel and why.
func TestSelectWSLTracks(t *testing.T) {
	fake, client := wslFake(t)
	cacheFile := filepath.Join(t.TempDir(), "wsl.json")
	c, _ := client()
	for _, tc := range []struct {
		track, tag, shipped, reason string
	}{
		{"wsl", "linux-msft-wsl-6.18.35.1", "2.9.0 2.8.12",
			"wsl: the kernel of WSL 2.8.12, the newest stable WSL release (Microsoft.WSL.Kernel 6.18.35.1-1, published "},
		{"wsl-prerelease", "linux-msft-wsl-6.18.35.2", "2.9.4 2.9.3 2.9.1",
			"wsl-prerelease: the kernel of WSL 2.9.4 (pre-release), the newest WSL release, pre-releases included"},
		{"wsl-2.7.8", "linux-msft-wsl-6.18.33.1", "2.7.8", "wsl-2.7.8: the kernel of WSL 2.7.8, the release requested"},
		{"wsl-2.6.1.0", "linux-msft-wsl-6.6.87.2", "2.6.3 2.6.2 2.6.1 2.6.0 2.5.10 2.5.9", "shipped by WSL 2.6.3, 2.6.2, 2.6.1, 2.6.0 (pre-release), 2.5.10, 2.5.9"},
		{"wsl-2.10", "", "", "WSL 2.10 not found among the 43 WSL releases seen (2.5.1 … 2.9.4"},
		{"wsl-2.4.13", "", "", "releases before 2.5.1 are not considered"},
		{"wsl-2.5.3", "", "", "track wsl-2.5.3: WSL 2.5.3: no packages.config at tag 2.5.3 (GitHub: Not Found)"},
	} {
		sel, err := Select(context.Background(), c, SelectOptions{Track: tc.track, WSLOptions: WSLOptions{CacheFile: cacheFile}})
		if tc.tag == "" {
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("track %s: error %v, want %q", tc.track, err, tc.reason)
			}
			continue
		}
		if err != nil {
			t.Fatalf("track %s: %v", tc.track, err)
		}
		s := sel.Selected[0]
		if len(sel.Selected) != 1 || s.Tag.Name != tc.tag || strings.Join(versions(s.WSL), " ") != tc.shipped || !strings.Contains(s.Reason, tc.reason) {
			t.Errorf("track %s: %s shipped by %v\nreason %q\nwant %s by %s, %q", tc.track, s.Tag.Name, versions(s.WSL), s.Reason, tc.tag, tc.shipped, tc.reason)
		}
		if s.Tag.Version.Tag() != tc.tag || len(sel.Tags) != 0 || len(sel.WSL) != 43 || sel.Summary == "" {
			t.Errorf("track %s: version %v, %d tags, %d WSL releases, summary %q", tc.track, s.Tag.Version, len(sel.Tags), len(sel.WSL), sel.Summary)
		}
	}
	byRoute, _, n304 := apiRequests(fake)
	if byRoute[githubfake.RouteMatchingRefs]+byRoute[githubfake.RouteTags] != 0 {
		t.Errorf("a wsl track listed kernel tags: %v", byRoute)
	}
	// Seven selections: one full listing, then six conditional requests.
	if byRoute[githubfake.RouteReleases] != 2+6 || n304 != 6 || byRoute[githubfake.RouteContents] != 43 {
		t.Errorf("requests %v, %d answered 304", byRoute, n304)
	}
	// A given mapping is used as is: no request at all.
	rels := []WSLRelease{{Version: "2.9.9", KernelTag: "linux-msft-wsl-6.18.40.1", KernelPackage: "6.18.40.1-1"}}
	sel, err := Select(context.Background(), c, SelectOptions{Track: "wsl", WSL: rels})
	if err != nil || sel.Selected[0].Tag.Name != "linux-msft-wsl-6.18.40.1" {
		t.Fatalf("given mapping: %+v, %v", sel, err)
	}
	if _, total, _ := apiRequests(fake); total != 0 {
		t.Errorf("%d requests with a given mapping", total)
	}
	if _, err := Select(context.Background(), c, SelectOptions{Track: "wsl", WSL: []WSLRelease{{Version: "2.9.9", Prerelease: true}}}); err == nil ||
		!strings.Contains(err.Error(), "no stable WSL releases found") {
		t.Errorf("only pre-releases: %v", err)
	}
}
