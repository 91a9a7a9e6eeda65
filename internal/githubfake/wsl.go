package githubfake

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// SetFile stores a file of repository "owner/name" (created if needed) at
// ref, a tag or branch name ("" is DefaultBranch), for the contents API.
// A tag's files are also found through the tag's commit.
func (s *Server) SetFile(repoName, ref, path string, content []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repoLocked(repoName)
	s.setFileLocked(repoName, ref, path, content)
}

// AddAsset adds an uploaded asset holding data to release releaseID of
// "owner/name", as a finished upload would, and returns its snapshot. Its
// digest is the sha256 of data; downloads go through the bytes host.
func (s *Server) AddAsset(repoName string, releaseID int64, name string, data []byte) (Asset, error) {
	f, err := os.CreateTemp(s.dir, "asset-*")
	if err != nil {
		return Asset{}, fmt.Errorf("githubfake: %w", err)
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return Asset{}, fmt.Errorf("githubfake: %w", werr)
	}
	sum := sha256.Sum256(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	rel, err := s.releaseByIDLocked(repoName, releaseID)
	if err != nil {
		os.Remove(f.Name())
		return Asset{}, err
	}
	a := &asset{Asset: Asset{ID: s.id(), Name: name, State: "uploaded", ContentType: "application/octet-stream",
		Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}, path: f.Name(), releaseID: releaseID, created: rel.Created}
	rel.assets = append(rel.assets, a)
	return a.Asset, nil
}

// SetAssetDigest changes the sha256 the API reports for asset id (as if
// the stored bytes no longer matched it); "" makes the digest empty.
func (s *Server) SetAssetDigest(repoName string, id int64, sha256Hex string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.assetByIDLocked(repoName, id)
	if err != nil {
		return err
	}
	a.SHA256 = sha256Hex
	return nil
}

// SetReleaseTime sets the created_at and published_at times of a
// release (and of its assets).
func (s *Server) SetReleaseTime(repoName string, id int64, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel, err := s.releaseByIDLocked(repoName, id)
	if err != nil {
		return err
	}
	rel.Created = t
	if !rel.Draft {
		rel.Published = t
	}
	for _, a := range rel.assets {
		a.created = t
	}
	return nil
}

// releaseByIDLocked returns release id of repository repoName, drafts
// included, or an error naming it.
func (s *Server) releaseByIDLocked(repoName string, id int64) (*release, error) {
	if rel := s.repos[strings.ToLower(repoName)].release(id, nil); rel != nil {
		return rel, nil
	}
	return nil, fmt.Errorf("githubfake: no release %d in %s", id, repoName)
}

// assetByIDLocked returns asset id of repository repoName, or an error
// naming it.
func (s *Server) assetByIDLocked(repoName string, id int64) (*asset, error) {
	if _, a := s.repos[strings.ToLower(repoName)].asset(id, nil); a != nil {
		return a, nil
	}
	return nil, fmt.Errorf("githubfake: no asset %d in %s", id, repoName)
}

// WSLRelease describes a release of microsoft/WSL for AddWSLReleases.
type WSLRelease struct {
	// Version is the tag, e.g. "2.6.1".
	Version    string
	Prerelease bool
	// KernelPackage is the Microsoft.WSL.Kernel version packages.config
	// names, e.g. "6.18.35.2-1"; "" writes a packages.config without it.
	KernelPackage string
	// PackagesConfig, when set, is packages.config verbatim.
	PackagesConfig []byte
	// NoSource means the tag has no packages.config (the releases before
	// WSL's source was published, 2.5.8).
	NoSource bool
	// Assets are the release's assets by name (nil: WSLAssets(Version)).
	Assets map[string][]byte
	// Published is the creation and publication time (zero: the
	// server's clock).
	Published time.Time
}

// WSLPackagesConfig returns a packages.config shaped like WSL's, naming
// Microsoft.WSL.Kernel at kernelPackage ("" leaves the kernel out).
func WSLPackagesConfig(kernelPackage string) []byte {
	var b strings.Builder
	b.WriteString("\ufeff<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<packages>\r\n")
	pkgs := [][2]string{
		{"Microsoft.Direct3D.Linux", "1.611.1-81528511"},
		{"Microsoft.DXCore.Linux.amd64fre", "10.0.26100.1-240331-1435.ge-release"},
		{"Microsoft.WSL.bsdtar", "0.0.2-2"},
		{"Microsoft.WSL.DeviceHost", "1.2.62-0"},
		{"Microsoft.WSL.Kernel", kernelPackage},
		{"Microsoft.WSL.LinuxSdk", "1.23.0"},
		{"Microsoft.WSLg", "1.0.79"},
		{"Wix", "5.0.2"},
	}
	for _, p := range pkgs {
		if p[1] == "" {
			continue
		}
		fmt.Fprintf(&b, "  <package id=%q version=%q targetFramework=\"native\" />\r\n", p[0], p[1])
	}
	b.WriteString("</packages>\r\n")
	return []byte(b.String())
}

// WSLAssets returns placeholder assets named as on a WSL release: the x64
// and arm64 MSIs and the msixbundle. Their bytes are small and not MSIs.
func WSLAssets(version string) map[string][]byte {
	out := map[string][]byte{}
	for _, n := range []string{"wsl." + version + ".0.x64.msi", "wsl." + version + ".0.arm64.msi",
		"Microsoft.WSL_" + version + ".0_x64_ARM64.msixbundle"} {
		out[n] = []byte("placeholder for " + n + "\n")
	}
	return out
}

// AddWSLReleases adds releases to repository "owner/name" in the given
// order (so the last is listed first), each with its tag, packages.config
// at the tag (unless NoSource) and its assets, and returns their
// snapshots.
func (s *Server) AddWSLReleases(repoName string, rels ...WSLRelease) ([]Release, error) {
	var out []Release
	for _, w := range rels {
		s.AddTags(repoName, Tag{Name: w.Version})
		if !w.NoSource {
			cfg := w.PackagesConfig
			if cfg == nil {
				cfg = WSLPackagesConfig(w.KernelPackage)
			}
			s.SetFile(repoName, w.Version, "packages.config", cfg)
		}
		rel := s.AddRelease(repoName, Release{Tag: w.Version, Name: w.Version, Target: "master", Prerelease: w.Prerelease,
			Body: "WSL " + w.Version})
		if !w.Published.IsZero() {
			if err := s.SetReleaseTime(repoName, rel.ID, w.Published); err != nil {
				return nil, err
			}
		}
		assets := w.Assets
		if assets == nil {
			assets = WSLAssets(w.Version)
		}
		for _, n := range slices.Sorted(maps.Keys(assets)) {
			if _, err := s.AddAsset(repoName, rel.ID, n, assets[n]); err != nil {
				return nil, err
			}
		}
		out = append(out, s.releaseSnapshot(repoName, rel.ID))
	}
	return out, nil
}

// releaseSnapshot returns the snapshot of release id (through the
// public Releases, so it follows server.go's notion of a snapshot).
func (s *Server) releaseSnapshot(repoName string, id int64) Release {
	for _, r := range s.Releases(repoName) {
		if r.ID == id {
			return r
		}
	}
	return Release{}
}

// wslKernels is WSL.md §9.1: the Microsoft.WSL.Kernel of each WSL tag
// from 2.5.8 on.
var wslKernels = []struct {
	versions []string
	kernel   string
}{
	{[]string{"2.5.8"}, "6.6.87.1-1"},
	{[]string{"2.5.9", "2.5.10", "2.6.0", "2.6.1", "2.6.2", "2.6.3"}, "6.6.87.2-1"},
	{[]string{"2.7.0", "2.7.1", "2.7.2", "2.7.3", "2.8.0", "2.8.1", "2.8.2", "2.8.3", "2.8.4"}, "6.6.114.1-1"},
	{[]string{"2.7.4", "2.7.5", "2.7.6", "2.7.7", "2.8.5", "2.8.6", "2.8.7", "2.8.8"}, "6.18.26.1-1"},
	{[]string{"2.8.9", "2.8.10", "2.8.11"}, "6.18.26.3-1"},
	{[]string{"2.7.8"}, "6.18.33.1-1"},
	{[]string{"2.7.9", "2.7.10", "2.7.11"}, "6.18.33.2-2"},
	{[]string{"2.8.12", "2.9.0"}, "6.18.35.1-1"},
	{[]string{"2.9.1", "2.9.3", "2.9.4"}, "6.18.35.2-1"},
}

// WSLKernelPackage returns the Microsoft.WSL.Kernel version WSLHistory
// gives WSL version v ("" if none).
func WSLKernelPackage(v string) string {
	for _, k := range wslKernels {
		for _, x := range k.versions {
			if x == v {
				return k.kernel
			}
		}
	}
	return ""
}

// WSLHistory returns a release history shaped like microsoft/WSL's,
// oldest first, one day apart from start: 126 old releases (0.47.1 …
// 2.4.13, no packages.config), 2.5.1 … 2.5.7 (pre-releases without
// packages.config), then 2.5.8 … 2.9.4 with the kernels of WSL.md §9.1, the 2.7
// and 2.8 lines interleaved. 2.6.0, 2.7.0 and every 2.9 release are
// pre-releases; 2.8.12 is the newest stable release.
func WSLHistory(start time.Time) []WSLRelease {
	var vs []string
	for m := 47; m <= 86; m++ {
		vs = append(vs, fmt.Sprintf("0.%d.1", m))
	}
	for _, line := range []struct {
		minor string
		n     int
	}{{"1.0", 4}, {"1.1", 8}, {"1.2", 6}, {"2.0", 16}, {"2.1", 6}, {"2.2", 5}, {"2.3", 27}, {"2.4", 14}} {
		for p := 0; p < line.n; p++ {
			vs = append(vs, fmt.Sprintf("%s.%d", line.minor, p))
		}
	}
	for p := 1; p <= 10; p++ {
		vs = append(vs, fmt.Sprintf("2.5.%d", p))
	}
	vs = append(vs, "2.6.0", "2.6.1", "2.6.2", "2.6.3")
	for p := 0; p <= 12; p++ {
		if p <= 11 {
			vs = append(vs, fmt.Sprintf("2.7.%d", p))
		}
		vs = append(vs, fmt.Sprintf("2.8.%d", p))
	}
	vs = append(vs, "2.9.0", "2.9.1", "2.9.3", "2.9.4")
	var out []WSLRelease
	for i, v := range vs {
		w := WSLRelease{Version: v, Published: start.Add(time.Duration(i) * 24 * time.Hour), KernelPackage: WSLKernelPackage(v)}
		w.NoSource = w.KernelPackage == ""
		w.Prerelease = v == "2.6.0" || v == "2.7.0" || strings.HasPrefix(v, "2.9.") ||
			strings.HasPrefix(v, "2.5.") && w.NoSource
		out = append(out, w)
	}
	return out
}
