package fetch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/kver"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// DefaultWSLRepo is the repository whose releases are the WSL installers.
const DefaultWSLRepo = "microsoft/WSL"

// MinWSLVersion is the first WSL release that loads a kernelModules VHD
// (WSL.md §3). Older releases are listed but never resolved or returned.
const MinWSLVersion = "2.5.1"

// WSLKernelPackageID is the NuGet package that carries WSL's kernel in
// packages.config.
const WSLKernelPackageID = "Microsoft.WSL.Kernel"

// wslPackagesConfig is the file at each WSL tag that pins the kernel.
const wslPackagesConfig = "packages.config"

// WSLAsset is a release asset of a WSL release.
type WSLAsset struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Digest is the asset's sha256 in hex, as GitHub reports it
	// ("sha256:<hex>"); "" when GitHub gives none.
	Digest string `json:"digest,omitempty"`
	ID     int64  `json:"id"`
	// URL is the API URL of the asset (downloaded with Accept:
	// application/octet-stream); BrowserURL the public download link.
	URL        string `json:"url"`
	BrowserURL string `json:"browser_url,omitempty"`
}

// WSLRelease is a release of microsoft/WSL and the kernel it ships.
type WSLRelease struct {
	// Version is the release's tag, e.g. "2.6.1"; Tag is the same tag.
	Version    string
	Prerelease bool
	Tag        string
	// KernelTag is the kernel repository tag of the shipped kernel, e.g.
	// linux-msft-wsl-6.18.35.2, and KernelPackage the Microsoft.WSL.Kernel
	// version packages.config names (6.18.35.2-1). Both are "" when the
	// kernel is unknown; KernelError then says why (no packages.config at
	// the tag, or one that names no kernel).
	KernelTag     string
	KernelPackage string
	KernelError   string
	Assets        []WSLAsset
	Published     time.Time
	// ID is the GitHub release id.
	ID int64
}

// WSLOptions configure WSLReleases.
type WSLOptions struct {
	// Repo is the WSL repository (default DefaultWSLRepo).
	Repo string
	// CacheFile keeps the mapping between runs (written atomically). With
	// it, a run that finds nothing new costs one conditional request. ""
	// keeps nothing: every call lists the releases and reads every
	// packages.config.
	CacheFile string
	// MinVersion is the oldest WSL version returned (default
	// MinWSLVersion).
	MinVersion string
	// Log receives warnings (releases whose kernel is unknown) and debug
	// lines (requests saved by the cache).
	Log *progress.Reporter
	// Offline answers from CacheFile alone, without any request (a later
	// stage of a run whose plan listed the releases); it is an error when
	// there is no usable cache.
	Offline bool
}

// WSLReleases lists the releases of the WSL repository (100 per page,
// drafts skipped) and reads, once per release, the Microsoft.WSL.Kernel
// version from packages.config at its tag through the contents API.
// It returns the releases from MinVersion on, newest version first.
//
// Requests: with a CacheFile from an earlier call, the first page is
// asked for with If-None-Match; a 304 answers from the cache (one
// request). Otherwise the pages are read until one whose oldest release
// is known from the cache (or, without a cache, until a page holding only
// releases older than MinVersion), and packages.config is read only for
// releases not resolved before: a new release costs one more request.
//
// A release whose tag has no packages.config, or whose packages.config
// names no kernel or an unparsable version, is kept with KernelTag "" and
// KernelError set, and reported once on Log as a warning: a scheduled run
// goes on with the other releases (the wsl tracks skip it and say so).
// Errors are returned for failed requests (after the client's retries),
// which are not cached.
func WSLReleases(ctx context.Context, c *githubapi.Client, o WSLOptions) ([]WSLRelease, error) {
	if o.Repo == "" {
		o.Repo = DefaultWSLRepo
	}
	if o.MinVersion == "" {
		o.MinVersion = MinWSLVersion
	}
	if _, ok := parseWSLVersion(o.MinVersion); !ok {
		return nil, fmt.Errorf("fetch: minimum WSL version %q: want numbers separated by dots", o.MinVersion)
	}
	owner, name, err := githubapi.SplitRepo(o.Repo)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	l := &wslLister{c: c, o: o, owner: owner, name: name}
	cache := loadWSLCache(o)
	if o.Offline {
		if cache == nil {
			return nil, fmt.Errorf("fetch: no WSL release cache %q to answer from without requests", o.CacheFile)
		}
		return l.result(cache.Releases), nil
	}
	rels, etag, err := l.list(ctx, cache)
	if err != nil {
		return nil, err
	}
	if err := l.resolve(ctx, rels); err != nil {
		return nil, err
	}
	if o.CacheFile != "" {
		if err := saveWSLCache(o, etag, rels); err != nil {
			return nil, err
		}
	}
	return l.result(rels), nil
}

// wslLister lists and resolves the releases of one repository.
type wslLister struct {
	c           *githubapi.Client
	o           WSLOptions
	owner, name string
}

// cachedRelease is one listed release as the cache file keeps it.
type cachedRelease struct {
	ID         int64      `json:"id"`
	Tag        string     `json:"tag"`
	Prerelease bool       `json:"prerelease,omitempty"`
	Created    time.Time  `json:"created"`
	Published  time.Time  `json:"published"`
	Assets     []WSLAsset `json:"assets,omitempty"`
	// Resolved is true once packages.config was read (or found missing).
	Resolved      bool   `json:"resolved,omitempty"`
	KernelPackage string `json:"kernel_package,omitempty"`
	KernelTag     string `json:"kernel_tag,omitempty"`
	KernelError   string `json:"kernel_error,omitempty"`
}

// apiRelease is a listed release with the asset digests go-github v66
// does not decode.
type apiRelease struct {
	ID          int64      `json:"id"`
	TagName     string     `json:"tag_name"`
	Draft       bool       `json:"draft"`
	Prerelease  bool       `json:"prerelease"`
	CreatedAt   time.Time  `json:"created_at"`
	PublishedAt *time.Time `json:"published_at"`
	Assets      []struct {
		ID                 int64  `json:"id"`
		Name               string `json:"name"`
		Size               int64  `json:"size"`
		State              string `json:"state"`
		Digest             string `json:"digest"`
		URL                string `json:"url"`
		BrowserDownloadURL string `json:"browser_download_url"`
	} `json:"assets"`
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// toCached converts a listed release (assets not yet uploaded skipped).
func (a apiRelease) toCached() cachedRelease {
	r := cachedRelease{ID: a.ID, Tag: a.TagName, Prerelease: a.Prerelease, Created: a.CreatedAt}
	if a.PublishedAt != nil {
		r.Published = *a.PublishedAt
	}
	for _, x := range a.Assets {
		if x.State != "" && x.State != "uploaded" {
			continue
		}
		d := strings.ToLower(strings.TrimPrefix(x.Digest, "sha256:"))
		if !strings.HasPrefix(x.Digest, "sha256:") || !sha256Hex.MatchString(d) {
			d = ""
		}
		r.Assets = append(r.Assets, WSLAsset{Name: x.Name, Size: x.Size, Digest: d, ID: x.ID, URL: x.URL, BrowserURL: x.BrowserDownloadURL})
	}
	return r
}

// listPage reads one page of releases. With etag set, a 304 answer
// returns notModified.
func (l *wslLister) listPage(ctx context.Context, page int, etag string) (rels []apiRelease, newETag string, next int, notModified bool, err error) {
	req, err := l.c.NewRequest(http.MethodGet, fmt.Sprintf("repos/%s/%s/releases?per_page=100&page=%d", l.owner, l.name, page), nil)
	if err != nil {
		return nil, "", 0, false, fmt.Errorf("fetch: %w", err)
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := l.c.Do(ctx, req, &rels)
	if resp != nil && resp.StatusCode == http.StatusNotModified {
		return nil, etag, 0, true, nil
	}
	if err != nil {
		return nil, "", 0, false, fmt.Errorf("fetch: listing releases of %s (page %d): %w", l.o.Repo, page, err)
	}
	return rels, resp.Header.Get("ETag"), resp.NextPage, false, nil
}

// list returns the releases in listing order (newest created first) and
// the first page's ETag, using and refreshing the cache.
func (l *wslLister) list(ctx context.Context, cache *wslCache) ([]cachedRelease, string, error) {
	etag := ""
	known := map[int64]int{}
	if cache != nil {
		etag = cache.ETag
		for i, r := range cache.Releases {
			known[r.ID] = i
		}
	}
	var listed []cachedRelease
	firstETag := ""
	min, _ := parseWSLVersion(l.o.MinVersion)
	for page := 1; page > 0; {
		rels, tag, next, notModified, err := l.listPage(ctx, page, etag)
		if err != nil {
			return nil, "", err
		}
		if notModified {
			l.o.Log.Printf("debug: %s: releases not modified (conditional request); using %s", l.o.Repo, l.o.CacheFile)
			return cache.Releases, cache.ETag, nil
		}
		if page == 1 {
			firstETag, etag = tag, ""
		}
		n, old := 0, 0
		for _, a := range rels {
			if a.Draft {
				continue
			}
			n++
			listed = append(listed, a.toCached())
			if v, ok := parseWSLVersion(a.TagName); !ok || compareVersionParts(v, min) < 0 {
				old++
			}
		}
		// Stop at a page whose oldest release the cache knows (the cache
		// holds everything older), or, the first time, at a page with
		// nothing from MinVersion on (later pages are older still).
		_, oldestKnown := known[lastID(rels)]
		if len(rels) == 0 || oldestKnown || old == n {
			break
		}
		page = next
	}
	return mergeListed(listed, cache), firstETag, nil
}

func lastID(rels []apiRelease) int64 {
	if len(rels) == 0 {
		return 0
	}
	return rels[len(rels)-1].ID
}

// mergeListed keeps what the cache knows about each listed release (its
// kernel, unless its tag changed) and appends the cached releases older
// than the last one listed.
func mergeListed(listed []cachedRelease, cache *wslCache) []cachedRelease {
	if cache == nil {
		return listed
	}
	byID := map[int64]cachedRelease{}
	pos := map[int64]int{}
	for i, r := range cache.Releases {
		byID[r.ID], pos[r.ID] = r, i
	}
	seen := map[int64]bool{}
	for i, r := range listed {
		seen[r.ID] = true
		if old, ok := byID[r.ID]; ok && old.Resolved && old.Tag == r.Tag {
			listed[i].Resolved, listed[i].KernelPackage, listed[i].KernelTag, listed[i].KernelError =
				true, old.KernelPackage, old.KernelTag, old.KernelError
		}
	}
	if len(listed) > 0 {
		if i, ok := pos[listed[len(listed)-1].ID]; ok {
			for _, r := range cache.Releases[i+1:] {
				if !seen[r.ID] {
					listed = append(listed, r)
				}
			}
		}
	}
	return listed
}

// resolve reads packages.config for the releases from MinVersion on that
// the cache has not resolved.
func (l *wslLister) resolve(ctx context.Context, rels []cachedRelease) error {
	min, _ := parseWSLVersion(l.o.MinVersion)
	for i := range rels {
		r := &rels[i]
		v, ok := parseWSLVersion(r.Tag)
		if r.Resolved || !ok || compareVersionParts(v, min) < 0 {
			continue
		}
		pkg, problem, err := l.kernelPackage(ctx, r.Tag)
		if err != nil {
			return err
		}
		r.Resolved = true
		if problem == "" {
			r.KernelPackage = pkg
			if r.KernelTag, err = KernelTagOf(pkg); err != nil {
				problem = fmt.Sprintf("%s at tag %s: %v", wslPackagesConfig, r.Tag, err)
				r.KernelPackage = ""
			}
		}
		if problem != "" {
			r.KernelError = problem
			l.o.Log.Printf("warning: %s: WSL %s: %s; its kernel is unknown and it is skipped", l.o.Repo, r.Tag, problem)
		}
	}
	return nil
}

// kernelPackage reads packages.config at tag. A missing file or an
// unusable one is a problem (returned as text, cached); a failed request
// is an error.
func (l *wslLister) kernelPackage(ctx context.Context, tag string) (pkg, problem string, err error) {
	u := fmt.Sprintf("repos/%s/%s/contents/%s?ref=%s", l.owner, l.name, wslPackagesConfig, url.QueryEscape(tag))
	req, err := l.c.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return "", "", fmt.Errorf("fetch: %w", err)
	}
	req.Header.Set("Accept", "application/vnd.github.raw")
	var buf bytes.Buffer
	resp, err := l.c.Do(ctx, req, &buf)
	if githubapi.IsNotFound(err) {
		var ge *github.ErrorResponse
		msg := "Not Found"
		if errors.As(err, &ge) && ge.Message != "" {
			msg = ge.Message
		}
		return "", fmt.Sprintf("no %s at tag %s (GitHub: %s)", wslPackagesConfig, tag, msg), nil
	}
	if err != nil {
		return "", "", fmt.Errorf("fetch: WSL %s: reading %s at tag %s of %s: %w", tag, wslPackagesConfig, tag, l.o.Repo, err)
	}
	data := buf.Bytes()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if data, err = decodeContentsJSON(data); err != nil {
			return "", fmt.Sprintf("%s at tag %s: %v", wslPackagesConfig, tag, err), nil
		}
	}
	pkg, err = ParsePackagesConfig(data)
	if err != nil {
		return "", fmt.Sprintf("%s at tag %s: %v", wslPackagesConfig, tag, err), nil
	}
	return pkg, "", nil
}

// decodeContentsJSON returns the file of a contents API JSON answer
// (base64 content), for servers that ignore the raw media type.
func decodeContentsJSON(b []byte) ([]byte, error) {
	var f struct {
		Type     string `json:"type"`
		Encoding string `json:"encoding"`
		Content  string `json:"content"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("contents answer: %w", err)
	}
	if f.Type != "file" || f.Encoding != "base64" {
		return nil, fmt.Errorf("contents answer of type %q with encoding %q, want a base64 file", f.Type, f.Encoding)
	}
	out, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\n", "", "\r", "").Replace(f.Content))
	if err != nil {
		return nil, fmt.Errorf("contents answer: base64 content: %w", err)
	}
	return out, nil
}

// ParsePackagesConfig returns the version of the Microsoft.WSL.Kernel
// package in a NuGet packages.config (e.g. "6.18.35.2-1").
func ParsePackagesConfig(data []byte) (string, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var doc struct {
		XMLName  xml.Name `xml:"packages"`
		Packages []struct {
			ID      string `xml:"id,attr"`
			Version string `xml:"version,attr"`
		} `xml:"package"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("not a NuGet packages.config: %w", err)
	}
	version := ""
	for _, p := range doc.Packages {
		if !strings.EqualFold(p.ID, WSLKernelPackageID) {
			continue
		}
		if version != "" && version != p.Version {
			return "", fmt.Errorf("%s listed twice (%s and %s)", WSLKernelPackageID, version, p.Version)
		}
		version = p.Version
	}
	if version == "" {
		return "", fmt.Errorf("names no %s package", WSLKernelPackageID)
	}
	return version, nil
}

// KernelTagOf turns a Microsoft.WSL.Kernel version ("6.18.35.2-1", the
// -1 being the NuGet revision) into the kernel tag
// (linux-msft-wsl-6.18.35.2).
func KernelTagOf(pkgVersion string) (string, error) {
	v, _, _ := strings.Cut(strings.TrimSpace(pkgVersion), "-")
	tag := kver.TagPrefix + v
	if _, ok := kver.Parse(tag); !ok {
		return "", fmt.Errorf("%s version %q: want <a>.<b>.<c>.<d>[-<revision>]", WSLKernelPackageID, pkgVersion)
	}
	return tag, nil
}

// result turns the listed releases into WSLReleases from MinVersion on,
// newest version first.
func (l *wslLister) result(rels []cachedRelease) []WSLRelease {
	min, _ := parseWSLVersion(l.o.MinVersion)
	var out []WSLRelease
	skipped := 0
	for _, r := range rels {
		v, ok := parseWSLVersion(r.Tag)
		if !ok || compareVersionParts(v, min) < 0 {
			skipped++
			continue
		}
		out = append(out, WSLRelease{Version: r.Tag, Tag: r.Tag, Prerelease: r.Prerelease, KernelTag: r.KernelTag,
			KernelPackage: r.KernelPackage, KernelError: r.KernelError, Assets: r.Assets, Published: r.Published, ID: r.ID})
	}
	sortWSL(out)
	l.o.Log.Printf("debug: %s: %d releases from %s on (%d older or not versions ignored)", l.o.Repo, len(out), l.o.MinVersion, skipped)
	return out
}

// sortWSL orders releases by version, newest first (then by publication).
func sortWSL(rels []WSLRelease) {
	sort.SliceStable(rels, func(i, j int) bool {
		if c := CompareWSLVersions(rels[i].Version, rels[j].Version); c != 0 {
			return c > 0
		}
		return rels[i].Published.After(rels[j].Published)
	})
}

// parseWSLVersion parses dot-separated numbers (2.6.1, 2.6.1.0).
func parseWSLVersion(s string) ([]int, bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 4 {
		return nil, false
	}
	out := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || p == "" || p[0] == '+' {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

// compareVersionParts compares numerically; missing parts count as 0, so
// 2.6.1 equals 2.6.1.0.
func compareVersionParts(a, b []int) int {
	for i := 0; i < max(len(a), len(b)); i++ {
		x, y := 0, 0
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// CompareWSLVersions compares two WSL versions numerically (2.10.0 is
// newer than 2.9.4; 2.6.1.0 equals 2.6.1). Strings that are not versions
// sort before all versions.
func CompareWSLVersions(a, b string) int {
	x, okA := parseWSLVersion(a)
	y, okB := parseWSLVersion(b)
	switch {
	case !okA && !okB:
		return strings.Compare(a, b)
	case !okA:
		return -1
	case !okB:
		return 1
	}
	return compareVersionParts(x, y)
}

// msiArch maps an architecture (x86_64, amd64, x64, arm64, aarch64) to
// the word WSL's MSI names use.
func msiArch(arch string) (string, error) {
	switch strings.ToLower(arch) {
	case "x86_64", "amd64", "x64":
		return "x64", nil
	case "arm64", "aarch64":
		return "arm64", nil
	}
	return "", fmt.Errorf("architecture %q: want x86_64 or arm64", arch)
}

var msiNameRE = regexp.MustCompile(`(?i)^wsl\.[0-9]+(\.[0-9]+)*\.(x64|arm64)\.msi$`)

// MSIFor returns the release's installer for arch (x86_64 or arm64):
// the asset named wsl.<version>.0.x64.msi or wsl.<version>.0.arm64.msi.
func (r WSLRelease) MSIFor(arch string) (WSLAsset, error) {
	want, err := msiArch(arch)
	if err != nil {
		return WSLAsset{}, fmt.Errorf("fetch: WSL %s: %w", r.Version, err)
	}
	var names []string
	for _, a := range r.Assets {
		names = append(names, a.Name)
		if m := msiNameRE.FindStringSubmatch(a.Name); m != nil && strings.EqualFold(m[2], want) {
			return a, nil
		}
	}
	list := "none"
	if len(names) > 0 {
		list = strings.Join(names, ", ")
	}
	return WSLAsset{}, fmt.Errorf("fetch: WSL %s has no MSI for %s (want wsl.%s.0.%s.msi; assets: %s)", r.Version, arch, r.Version, want, list)
}

// ShippedBy returns the releases (in the given order) that ship the
// kernel tag (linux-msft-wsl-6.6.87.2 or 6.6.87.2).
func ShippedBy(releases []WSLRelease, kernelTag string) []WSLRelease {
	if !strings.HasPrefix(kernelTag, kver.TagPrefix) {
		kernelTag = kver.TagPrefix + kernelTag
	}
	var out []WSLRelease
	for _, r := range releases {
		if r.KernelTag != "" && r.KernelTag == kernelTag {
			out = append(out, r)
		}
	}
	return out
}
