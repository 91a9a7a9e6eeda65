package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
)

// Names of files in a dist directory.
const (
	VHDXFile    = "modules.vhdx"
	SumsFile    = "SHA256SUMS"
	WSLConfFile = "wslconfig.txt"
	LogsFile    = "build-logs.tar.gz"
	NotesFile   = "release-notes.md"
	// SourcesFile names the corresponding source of every GPL binary in
	// the release (Sources).
	SourcesFile = "SOURCES.md"
	// ModuleSourcesFile holds the source of the path: modules
	// (WriteSourceArchive), which exist nowhere else.
	ModuleSourcesFile = "module-sources.tar.gz"
	// ConfigFile is the kernel's final .config, when attached.
	ConfigFile = "kernel.config"
	// MinWSL is the first WSL version that understands kernelModules.
	MinWSL = "2.5.1"
	// VerifyLimit is the size below which uploaded assets are downloaded
	// back to check their sha256.
	VerifyLimit = 16 << 20
)

// Asset is one file to publish.
type Asset struct {
	Name   string
	Path   string
	Size   int64
	SHA256 string
}

// ImageFile returns the kernel image name of a manifest: its ImageFile,
// else bzImage for x86_64 and Image for arm64.
func ImageFile(m *manifest.Manifest) string {
	if m.Kernel.ImageFile != "" {
		return m.Kernel.ImageFile
	}
	if isARM64(m.Kernel.Arch) {
		return "Image"
	}
	return "bzImage"
}

// PrepareOptions configure PrepareDist.
type PrepareOptions struct {
	// Dir is the dist directory holding build-manifest.json, the kernel
	// image and modules.vhdx.
	Dir string
	// LogsDir, if set, is packed into build-logs.tar.gz (every file, in
	// path order, with fixed timestamps), with Secrets redacted.
	LogsDir string
	// Secrets are replaced with "***" in build-logs.tar.gz: module build
	// logs are third-party output, published as they are otherwise. Pass
	// the GitHub token and any other secret the run knows.
	Secrets []string
	// Prefix is the release tag prefix (for the notes' folder names).
	Prefix string
	// ModuleSources maps the name of each path: module (manifest source
	// kind "path") to its source directory. The trees are packed into
	// module-sources.tar.gz (WriteSourceArchive), each under <name>/, and
	// the manifest records that asset as the modules' source_archive.
	// Publish refuses a manifest whose included path: modules lack one.
	ModuleSources map[string]string
	// SourceDateEpoch is the build's SOURCE_DATE_EPOCH: the mtime of
	// every entry of module-sources.tar.gz.
	SourceDateEpoch int64
	// Config, if set, is the kernel's final .config, attached as
	// kernel.config; its sha256 must be the manifest's
	// kernel.config_sha256 when that is recorded.
	Config string
	// Repo is the target repository (owner/name) named in the notes'
	// attestation command ("" gives a placeholder).
	Repo string
	// WSLSeen lists every WSL version that was looked at when the
	// manifest's kernel.wsl was made. With it, the notes merge versions
	// that are adjacent among those seen into one range (2.5.9 – 2.6.3);
	// without it, only patch releases of one minor line that follow each
	// other (2.6.0 – 2.6.3).
	WSLSeen []string
}

// PrepareDist writes into the dist directory, from its
// build-manifest.json and files: build-logs.tar.gz (when LogsDir is set;
// Secrets redacted), module-sources.tar.gz (when ModuleSources is set; the
// manifest then records it), kernel.config (when Config is set),
// wslconfig.txt, SOURCES.md, SHA256SUMS and release-notes.md. The kernel
// image, modules.vhdx and the given sources are checked before anything
// is written, and each file is written atomically. It returns the
// manifest.
func PrepareDist(o PrepareOptions) (*manifest.Manifest, error) {
	m, _, err := readDistManifest(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := checkPrepare(o, m); err != nil {
		return nil, err
	}
	// Check the inputs (kernel image, modules.vhdx against the manifest)
	// before writing anything, so a failure leaves the dir as it was.
	// (The files this writes are not checked: they are replaced.)
	rewritten := map[string]bool{WSLConfFile: true, SumsFile: true, SourcesFile: true, LogsFile: o.LogsDir != "",
		ModuleSourcesFile: len(o.ModuleSources) > 0, manifest.FileName: len(o.ModuleSources) > 0, ConfigFile: o.Config != ""}
	before, err := collectAssetsKnown(o.Dir, m, false, nil, rewritten)
	if err != nil {
		return nil, err
	}
	if err := writeInputs(o, m); err != nil {
		return nil, err
	}
	tag := TagName(m.Kernel.Tag, m.Kernel.Arch, o.Prefix)
	if err := atomicfile.WriteFile(filepath.Join(o.Dir, WSLConfFile), []byte(WSLConfig(m, tag)), 0o644); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	_, cerr := os.Stat(filepath.Join(o.Dir, ConfigFile))
	if err := atomicfile.WriteFile(filepath.Join(o.Dir, SourcesFile), []byte(Sources(m, tag, cerr == nil)), 0o644); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	// The files written above get new sums; the others keep theirs.
	known := map[string]Asset{}
	for _, a := range before {
		known[a.Name] = a
	}
	assets, err := collectAssetsKnown(o.Dir, m, false, known, nil)
	if err != nil {
		return nil, err
	}
	var sums bytes.Buffer
	for _, a := range assets {
		if a.Name != SumsFile {
			fmt.Fprintf(&sums, "%s  %s\n", a.SHA256, a.Name)
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(o.Dir, SumsFile), sums.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	notes := RenderNotes(m, NotesOptions{Tag: tag, Sums: sums.String(), Repo: o.Repo, WSLSeen: o.WSLSeen, ConfigAttached: cerr == nil})
	if err := atomicfile.WriteFile(filepath.Join(o.Dir, NotesFile), []byte(notes), 0o644); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	return m, nil
}

// readDistManifest reads the build-manifest.json of the dist directory
// dir, at mpath, which must name the kernel's tag.
func readDistManifest(dir string) (m *manifest.Manifest, mpath string, err error) {
	mpath = filepath.Join(dir, manifest.FileName)
	m, err = manifest.Read(mpath)
	if err != nil {
		return nil, mpath, fmt.Errorf("release: %w", err)
	}
	if m.Kernel.Tag == "" {
		return nil, mpath, fmt.Errorf("release: %s: kernel.tag is empty", mpath)
	}
	return m, mpath, nil
}

// checkPrepare checks the sources PrepareDist was given: every
// ModuleSources name is a path: module of the manifest with a directory,
// and Config has the manifest's config sha256.
func checkPrepare(o PrepareOptions, m *manifest.Manifest) error {
	for name, dir := range o.ModuleSources {
		i := moduleIndex(m, name)
		if i < 0 {
			return fmt.Errorf("release: module source %q: no such module in %s", name, manifest.FileName)
		}
		if k := m.Modules[i].Source.Kind; k != "path" {
			return fmt.Errorf("release: module source %q: the module's source is %s, not path (only path: modules are attached)", name, k)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("release: module source %q: %s is not a directory (%v)", name, dir, err)
		}
	}
	if o.Config == "" {
		return nil
	}
	sum, err := digest.File(o.Config)
	if err != nil {
		return fmt.Errorf("release: kernel config: %w", err)
	}
	if want := m.Kernel.ConfigSHA256; want != "" && sum != want {
		return fmt.Errorf("release: kernel config %s: sha256 %s, but %s says kernel.config_sha256 %s", o.Config, sum, manifest.FileName, want)
	}
	return nil
}

func moduleIndex(m *manifest.Manifest, name string) int {
	for i, x := range m.Modules {
		if x.Name == name {
			return i
		}
	}
	return -1
}

// writeInputs writes the logs, the module source archive (recording it
// in the manifest, which is rewritten) and the config copy.
func writeInputs(o PrepareOptions, m *manifest.Manifest) error {
	if o.LogsDir != "" {
		if err := writeLogs(o.LogsDir, filepath.Join(o.Dir, LogsFile), o.Secrets); err != nil {
			return fmt.Errorf("release: %w", err)
		}
	}
	if len(o.ModuleSources) > 0 {
		if err := WriteSourceArchive(filepath.Join(o.Dir, ModuleSourcesFile), o.ModuleSources, o.SourceDateEpoch); err != nil {
			return err
		}
		for name := range o.ModuleSources {
			m.Modules[moduleIndex(m, name)].SourceArchive = ModuleSourcesFile
		}
		if err := m.Write(filepath.Join(o.Dir, manifest.FileName)); err != nil {
			return fmt.Errorf("release: %w", err)
		}
	}
	if o.Config != "" {
		if err := atomicfile.CopyFile(o.Config, filepath.Join(o.Dir, ConfigFile), 0o644); err != nil {
			return fmt.Errorf("release: kernel config: %w", err)
		}
	}
	return nil
}

// collectAssets lists the dist files to publish, in a fixed order: kernel
// image, modules.vhdx, SHA256SUMS, build-manifest.json, wslconfig.txt,
// SOURCES.md, kernel.config, module-sources.tar.gz, build-logs.tar.gz,
// then packs (*.tar.zst) by name. The kernel image, modules.vhdx, the
// manifest and any source archive the manifest names are required; with
// complete, so are SHA256SUMS, wslconfig.txt and SOURCES.md. It checks
// modules.vhdx against the manifest's image sha256 when recorded.
func collectAssets(dir string, m *manifest.Manifest, complete bool) ([]Asset, error) {
	return collectAssetsKnown(dir, m, complete, nil, nil)
}

// collectAssetsKnown is collectAssets taking the assets in known as they
// are (listed, not hashed again) and leaving out the names in skip.
func collectAssetsKnown(dir string, m *manifest.Manifest, complete bool, known map[string]Asset, skip map[string]bool) ([]Asset, error) {
	names := []string{ImageFile(m), VHDXFile, SumsFile, manifest.FileName, WSLConfFile, SourcesFile, ConfigFile, ModuleSourcesFile, LogsFile}
	required := map[string]bool{ImageFile(m): true, VHDXFile: true, manifest.FileName: true, SumsFile: complete, WSLConfFile: complete, SourcesFile: complete}
	for _, x := range m.Modules {
		if x.SourceArchive != "" {
			if !contains(names, x.SourceArchive) {
				names = append(names, x.SourceArchive)
			}
			required[x.SourceArchive] = true
		}
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "*.tar.zst"))
	sort.Strings(packs)
	for _, p := range packs {
		names = append(names, filepath.Base(p))
	}
	var out []Asset
	for _, n := range names {
		if skip[n] {
			continue
		}
		if a, ok := known[n]; ok {
			out = append(out, a)
			continue
		}
		a, err := distAsset(dir, n, m, required[n])
		if err != nil {
			return nil, err
		}
		if a != nil {
			out = append(out, *a)
		}
	}
	return out, nil
}

// distAsset describes the dist file n (nil if it is missing and not
// required).
func distAsset(dir, n string, m *manifest.Manifest, required bool) (*Asset, error) {
	if strings.ContainsAny(n, `/\`) || n == "." || n == ".." {
		return nil, fmt.Errorf("release: %s: asset name %q is not a plain file name", manifest.FileName, n)
	}
	p := filepath.Join(dir, n)
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("release: dist %s: %w", dir, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("release: %s: not a regular file", p)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("release: %s: empty file; refusing to publish an empty asset", p)
	}
	sum, err := digest.File(p)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if n == VHDXFile && m.Image != nil && m.Image.SHA256 != "" && m.Image.SHA256 != sum {
		return nil, fmt.Errorf("release: %s: sha256 %s, but %s says image.sha256 %s", p, sum, manifest.FileName, m.Image.SHA256)
	}
	return &Asset{Name: n, Path: p, Size: st.Size(), SHA256: sum}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkSums verifies SHA256SUMS in dir against the assets.
func checkSums(dir string, assets []Asset) error {
	p := filepath.Join(dir, SumsFile)
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	defer f.Close()
	listed := map[string]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			return fmt.Errorf("release: %s:%d: want \"<sha256>  <name>\"", p, line)
		}
		listed[name] = sum
	}
	for _, a := range assets {
		if a.Name == SumsFile {
			continue
		}
		if got, ok := listed[a.Name]; !ok || got != a.SHA256 {
			return fmt.Errorf("release: %s: %s is listed as %q but its sha256 is %s (re-run PrepareDist)", p, a.Name, got, a.SHA256)
		}
	}
	return nil
}

// writeLogs packs every regular file of logsDir, in path order, into dst
// as logs/<path>, with fixed timestamps and each secret replaced by
// "***" (redactCopy; an entry's size is that of its redacted content,
// counted in a first pass).
func writeLogs(logsDir, dst string, secrets []string) error {
	var files []string
	err := filepath.WalkDir(logsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("build logs: %w", err)
	}
	sort.Strings(files)
	err = writeTarGz(dst, func(tw *tar.Writer) error {
		for _, p := range files {
			rel, _ := filepath.Rel(logsDir, p)
			if err := writeLog(tw, "logs/"+filepath.ToSlash(rel), p, secrets); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("build logs: %w", err)
	}
	return nil
}

// writeLog adds one redacted log file to tw.
func writeLog(tw *tar.Writer, name, path string, secrets []string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := redactCopy(io.Discard, f, secrets)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	n, err := redactCopy(tw, f, secrets)
	if err == nil && n != size {
		err = fmt.Errorf("changed while being packed (%d bytes, then %d)", size, n)
	}
	return err
}
