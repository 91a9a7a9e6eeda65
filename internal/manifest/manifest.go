// Package manifest defines build-manifest.json, the record of what a build
// used and produced. It is the on-disk contract between the build, image
// and release stages (see docs/ARCHITECTURE.md).
package manifest

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
)

// FileName is the manifest's name in a build output or dist directory.
const FileName = "build-manifest.json"

// SchemaVersion is the current manifest schema version.
const SchemaVersion = 1

// Module statuses.
const (
	StatusOK      = "ok"
	StatusFailed  = "failed"
	StatusSkipped = "skipped"
)

// Manifest is the content of build-manifest.json.
type Manifest struct {
	Schema  int      `json:"schema"`
	Tool    string   `json:"tool"`
	Kernel  Kernel   `json:"kernel"`
	Modules []Module `json:"modules"`
	// Layout is the image layout (flat or nested), once an image was made.
	Layout string `json:"layout,omitempty"`
	// Headers is what kernel headers the image carries (devel, uapi, none).
	Headers string `json:"headers,omitempty"`
	Image   *Image `json:"image,omitempty"`
	// Inputs, when set, pins everything that decides the build's outcome
	// before anything is built; Hash is computed from it.
	Inputs *Inputs `json:"inputs,omitempty"`
}

// Inputs are the build inputs known before building: enough to decide
// whether an existing release is up to date without fetching or building.
type Inputs struct {
	// Tag is the kernel tag; SourcePin identifies a source given without
	// a tag (tarball sha256 or directory digest).
	Tag       string `json:"tag,omitempty"`
	SourcePin string `json:"source_pin,omitempty"`
	// KernelRepo is the repository Tag is from, set only when it is not
	// microsoft/WSL2-Linux-Kernel (fetch.DefaultRepo), so the hashes of
	// builds from the default repository stay what they were before the
	// field existed. A fork may reuse Microsoft's tag names.
	KernelRepo string `json:"kernel_repo,omitempty"`
	Arch       string `json:"arch"`
	// ConfigSHA256 is the hash of a --config override ("" = the tag's own).
	ConfigSHA256   string        `json:"config_sha256,omitempty"`
	FragmentSHA256 string        `json:"fragment_sha256,omitempty"`
	Layout         string        `json:"layout"`
	Headers        string        `json:"headers"`
	Modules        []InputModule `json:"modules"`
	// Mode is ModeStock for builds over Microsoft's kernel, "" for a
	// kernel built here (so build-mode hashes stay what they were).
	Mode string `json:"mode,omitempty"`
	// Stock pins Microsoft's files in stock mode: "files:<kernel
	// sha256>:<modules sha256>", "msi:<sha256>" or
	// "msi-asset:<name>:<digest>".
	Stock string `json:"stock,omitempty"`
}

// InputModule is one listed module with its pinned source.
type InputModule struct {
	Name string `json:"name"`
	// Kind is git, url or path; Where is the URL or path; Pin is the
	// commit, sha256 or content digest.
	Kind  string `json:"kind"`
	Where string `json:"where"`
	Pin   string `json:"pin"`
	// Make is the extra make arguments, which change the build.
	Make []string `json:"make,omitempty"`
	// Autoload is the module's autoload: ("all" or the names, comma
	// separated), which changes wslconfig.txt.
	Autoload string `json:"autoload,omitempty"`
}

// Kernel describes the kernel build.
type Kernel struct {
	// Tag is the kernel repository tag, e.g. linux-msft-wsl-6.6.87.2.
	Tag string `json:"tag,omitempty"`
	// Release is `make kernelrelease`, i.e. the future `uname -r`.
	Release string `json:"release"`
	// Arch is x86_64 or arm64.
	Arch   string `json:"arch"`
	Source Source `json:"source"`
	// ConfigSHA256 is the sha256 of the final .config.
	ConfigSHA256 string `json:"config_sha256"`
	// FragmentSHA256 is the sha256 of the config fragment, if any.
	FragmentSHA256 string `json:"fragment_sha256,omitempty"`
	// Compiler is the first line of `$CC --version`.
	Compiler string `json:"compiler"`
	// ImageFile is the kernel image's name: bzImage or Image.
	ImageFile string `json:"image_file"`
	// CacheKey identifies the kernel cache entry; CacheHit tells whether
	// this build reused it.
	CacheKey string `json:"cache_key,omitempty"`
	CacheHit bool   `json:"cache_hit"`
	// BuildTimestamp is KBUILD_BUILD_TIMESTAMP.
	BuildTimestamp string `json:"build_timestamp,omitempty"`
	// Mode is ModeStock when the kernel image is Microsoft's, unchanged,
	// and ModeBuild (or "", in older manifests) when it was built here.
	Mode string `json:"mode,omitempty"`
	// ModeReason says why the mode was chosen, for the log, the summary
	// and the notes.
	ModeReason string `json:"mode_reason,omitempty"`
	// Stock describes Microsoft's files in stock mode.
	Stock *Stock `json:"stock,omitempty"`
	// WSL lists the WSL releases, among those seen, that ship this kernel.
	WSL []WSLRelease `json:"wsl,omitempty"`
	// ConfigChanges lists what olddefconfig changed from the input config
	// (compiler-detected options, usually).
	ConfigChanges []string `json:"config_changes,omitempty"`
	// Signing says whether the config signs modules: "" (no MODULE_SIG),
	// "signed" (build mode: signed with the build's key), "unsigned"
	// (stock mode with MODULE_SIG but not MODULE_SIG_FORCE: modules load
	// and taint the kernel).
	Signing string `json:"signing,omitempty"`
}

// Kernel modes.
const (
	ModeBuild = "build"
	ModeStock = "stock"
)

// Stock describes Microsoft's kernel and modules image in stock mode.
type Stock struct {
	// KernelSHA256 is the sha256 of Microsoft's kernel image (and of the
	// released one, which is the same file).
	KernelSHA256 string `json:"kernel_sha256"`
	// ModulesFile is the stock image's name (modules.vhd or
	// artifacts.vhd) and ModulesSHA256 its sha256.
	ModulesFile   string `json:"modules_file"`
	ModulesSHA256 string `json:"modules_sha256"`
	// MSI is the WSL installer both came from (nil for local files).
	MSI *MSI `json:"msi,omitempty"`
	// KernelPath and ModulesPath are the local files given (no MSI).
	KernelPath  string `json:"kernel_path,omitempty"`
	ModulesPath string `json:"modules_path,omitempty"`
}

// MSI is a WSL installer.
type MSI struct {
	// Name is the asset name (wsl.2.6.1.0.x64.msi), WSLVersion the WSL
	// release it belongs to ("" for a local file).
	Name       string `json:"name"`
	WSLVersion string `json:"wsl_version,omitempty"`
	SHA256     string `json:"sha256"`
	URL        string `json:"url,omitempty"`
}

// WSLRelease is a release of microsoft/WSL.
type WSLRelease struct {
	Version    string `json:"version"`
	Prerelease bool   `json:"prerelease,omitempty"`
}

// Source pins where something was fetched from.
type Source struct {
	// Kind is one of: github-tarball, tarball, dir, git, url, path,
	// in-tree (Path is then the directory in the kernel source).
	Kind   string `json:"kind"`
	Repo   string `json:"repo,omitempty"`
	Tag    string `json:"tag,omitempty"`
	Ref    string `json:"ref,omitempty"`
	Commit string `json:"commit,omitempty"`
	URL    string `json:"url,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Pin returns the most precise identifier of the source: the first set of
// commit, sha256, ref, tag, path and URL.
func (s Source) Pin() string {
	for _, v := range []string{s.Commit, s.SHA256, s.Ref, s.Tag, s.Path, s.URL} {
		if v != "" {
			return v
		}
	}
	return ""
}

// Module describes one out-of-tree module build.
type Module struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Source  Source `json:"source"`
	// Config lists the kernel options an in-tree module (source kind
	// "in-tree": a directory of the kernel source, built in stock mode
	// for the list's config fragment) was built with, as .config lines.
	Config []string `json:"config,omitempty"`
	// SrcVersion is the srcversion of the (first) built .ko.
	SrcVersion string `json:"srcversion,omitempty"`
	// Files are the installed .ko paths relative to lib/modules/<release>.
	Files []string `json:"files,omitempty"`
	// Status is ok, failed or skipped.
	Status string `json:"status"`
	// Error is the failure summary when Status is failed or skipped.
	Error string `json:"error,omitempty"`
	// Log is the build log path relative to the build output directory.
	Log string `json:"log,omitempty"`
	// Seconds is the wall time of the module's build, and Steps the
	// kbuild steps (compile, link, ...) its make output showed.
	Seconds float64 `json:"seconds"`
	Steps   int64   `json:"steps,omitempty"`
	// DependsOn lists listed modules this one was built after.
	DependsOn []string `json:"depends_on,omitempty"`
	// Pack is the pack the module came from, for merged images.
	Pack string `json:"pack,omitempty"`
	// Autoload lists module names WSL loads at boot (loadKernelModules=).
	Autoload []string `json:"autoload,omitempty"`
	// SourceArchive is the release asset holding this module's source,
	// for path: modules (they exist nowhere else).
	SourceArchive string `json:"source_archive,omitempty"`
}

// Image describes the modules image.
type Image struct {
	File      string `json:"file"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	RawSHA256 string `json:"raw_sha256,omitempty"`
	Files     int    `json:"files,omitempty"`
	// HeadersBytes is the size the kernel headers tree adds.
	HeadersBytes int64 `json:"headers_bytes,omitempty"`
}

// Hash identifies the inputs of a build: from Inputs when set, otherwise
// from the kernel tag and release, arch, config and fragment hashes, and the
// module list with pinned sources. Two builds with the same Hash produce the
// same release. Module order does not matter (modules are sorted by name,
// then by their other fields).
func (m *Manifest) Hash() string {
	if m.Inputs != nil {
		in := *m.Inputs
		in.Modules = append([]InputModule(nil), in.Modules...)
		sort.Slice(in.Modules, func(i, j int) bool {
			a, b := in.Modules[i], in.Modules[j]
			return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Where, b.Where),
				cmp.Compare(a.Pin, b.Pin), slices.Compare(a.Make, b.Make), cmp.Compare(a.Autoload, b.Autoload)) < 0
		})
		b, _ := json.Marshal(in)
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:])
	}
	type mod struct {
		Name, Pin, Kind, Where string
	}
	in := struct {
		Tag, Release, Arch, Config, Fragment, Layout, Headers string
		Modules                                               []mod
	}{m.Kernel.Tag, m.Kernel.Release, m.Kernel.Arch, m.Kernel.ConfigSHA256, m.Kernel.FragmentSHA256, m.Layout, m.Headers, nil}
	for _, x := range m.Modules {
		where := x.Source.URL + x.Source.Repo + x.Source.Path
		in.Modules = append(in.Modules, mod{x.Name, x.Source.Pin(), x.Source.Kind, where})
	}
	sort.Slice(in.Modules, func(i, j int) bool {
		a, b := in.Modules[i], in.Modules[j]
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Pin, b.Pin), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Where, b.Where)) < 0
	})
	b, _ := json.Marshal(in)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Failed returns the modules whose status is failed.
func (m *Manifest) Failed() []Module {
	var out []Module
	for _, x := range m.Modules {
		if x.Status == StatusFailed {
			out = append(out, x)
		}
	}
	return out
}

// Read loads a manifest file and checks its schema version.
func Read(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return Decode(path, b)
}

// Decode parses manifest JSON; name is used in errors. Unknown fields,
// another schema version and data after the JSON object are errors.
func Decode(name string, b []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %s: %w", name, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("manifest: %s: unexpected data after the manifest (offset %d)", name, dec.InputOffset())
	}
	if m.Schema != SchemaVersion {
		return nil, fmt.Errorf("manifest: %s: schema %d, want %d", name, m.Schema, SchemaVersion)
	}
	return &m, nil
}

// Encode returns the canonical JSON form (indented, trailing newline).
func (m *Manifest) Encode() []byte {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		panic(err) // only plain data types: cannot fail
	}
	return append(b, '\n')
}

// Write stores the manifest atomically at path.
func (m *Manifest) Write(path string) error {
	return atomicfile.WriteFile(path, m.Encode(), 0o644)
}
