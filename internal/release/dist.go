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

	"github.com/klauspost/compress/gzip"

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
	// path order, with fixed timestamps).
	LogsDir string
	// Prefix is the release tag prefix (for the notes' folder names).
	Prefix string
}

// PrepareDist writes build-logs.tar.gz (when LogsDir is set),
// wslconfig.txt, SHA256SUMS and release-notes.md into the dist directory,
// from its build-manifest.json and files. The kernel image and
// modules.vhdx are checked before anything is written, and each file is
// written atomically. It returns the manifest.
func PrepareDist(o PrepareOptions) (*manifest.Manifest, error) {
	m, err := manifest.Read(filepath.Join(o.Dir, manifest.FileName))
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if m.Kernel.Tag == "" {
		return nil, fmt.Errorf("release: %s: kernel.tag is empty", filepath.Join(o.Dir, manifest.FileName))
	}
	// Check the inputs (kernel image, modules.vhdx against the manifest)
	// before writing anything, so a failure leaves the dir as it was.
	// (The files this writes are not checked: they are replaced.)
	rewritten := map[string]bool{WSLConfFile: true, SumsFile: true, LogsFile: o.LogsDir != ""}
	before, err := collectAssetsKnown(o.Dir, m, false, nil, rewritten)
	if err != nil {
		return nil, err
	}
	if o.LogsDir != "" {
		if err := writeLogs(o.LogsDir, filepath.Join(o.Dir, LogsFile)); err != nil {
			return nil, fmt.Errorf("release: %w", err)
		}
	}
	tag := TagName(m.Kernel.Tag, m.Kernel.Arch, o.Prefix)
	if err := atomicfile.WriteFile(filepath.Join(o.Dir, WSLConfFile), []byte(WSLConfig(m, tag)), 0o644); err != nil {
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
	if err := atomicfile.WriteFile(filepath.Join(o.Dir, NotesFile), []byte(Notes(m, tag, sums.String())), 0o644); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	return m, nil
}

// collectAssets lists the dist files to publish, in a fixed order: kernel
// image, modules.vhdx, SHA256SUMS, build-manifest.json, wslconfig.txt,
// build-logs.tar.gz, then packs (*.tar.zst) by name. The kernel image,
// modules.vhdx and the manifest are required; with complete, so are
// SHA256SUMS and wslconfig.txt. It checks modules.vhdx against the
// manifest's image sha256 when recorded.
func collectAssets(dir string, m *manifest.Manifest, complete bool) ([]Asset, error) {
	return collectAssetsKnown(dir, m, complete, nil, nil)
}

// collectAssetsKnown is collectAssets taking the assets in known as they
// are (listed, not hashed again) and leaving out the names in skip.
func collectAssetsKnown(dir string, m *manifest.Manifest, complete bool, known map[string]Asset, skip map[string]bool) ([]Asset, error) {
	names := []string{ImageFile(m), VHDXFile, SumsFile, manifest.FileName, WSLConfFile, LogsFile}
	required := map[string]bool{ImageFile(m): true, VHDXFile: true, manifest.FileName: true, SumsFile: complete, WSLConfFile: complete}
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
		p := filepath.Join(dir, n)
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && !required[n] {
			continue
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
		out = append(out, Asset{Name: n, Path: p, Size: st.Size(), SHA256: sum})
	}
	return out, nil
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

func writeLogs(logsDir, dst string) error {
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
	out, err := atomicfile.Create(dst, true)
	if err != nil {
		return err
	}
	defer out.Abort()
	zw := gzip.NewWriter(out)
	tw := tar.NewWriter(zw)
	epoch := time.Unix(0, 0)
	for _, p := range files {
		rel, _ := filepath.Rel(logsDir, p)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "logs/" + filepath.ToSlash(rel), Mode: 0o644, Size: st.Size(), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.CopyN(tw, f, st.Size())
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return out.Commit(0o644)
}

// winFolder is the suggested folder, relative to %UserProfile%.
func winFolder(tag string) string { return `wsl\` + tag }

func esc(p string) string { return strings.ReplaceAll(p, `\`, `\\`) }

// WSLConfig returns the wslconfig.txt snippet. .wslconfig takes absolute
// paths and does not expand %UserProfile%, so the paths name the folder
// %UserProfile%\wsl\<tag> as C:\\Users\\<you>\\wsl\\<tag> with a
// placeholder for the user name, and say so.
func WSLConfig(m *manifest.Manifest, tag string) string {
	dir := `C:\Users\<you>\` + winFolder(tag)
	var b strings.Builder
	fmt.Fprintf(&b, "# .wslconfig snippet for %s (uname -r: %s)\n", tag, m.Kernel.Release)
	fmt.Fprintf(&b, "# Put %s and %s in %%UserProfile%%\\%s (not a sparse,\n", ImageFile(m), VHDXFile, winFolder(tag))
	b.WriteString("# compressed or encrypted folder), replace <you> with your Windows user\n")
	b.WriteString("# name (.wslconfig does not expand %UserProfile%), merge these lines into\n")
	b.WriteString("# the [wsl2] section of %UserProfile%\\.wslconfig and run: wsl --shutdown\n")
	fmt.Fprintf(&b, "# Needs WSL %s or later. kernel= is required: WSL refuses kernelModules=\n", MinWSL)
	b.WriteString("# unless kernel= names a kernel too, and the modules only load on the\n")
	b.WriteString("# kernel they were built with.\n")
	b.WriteString("[wsl2]\n")
	fmt.Fprintf(&b, "kernel=%s\n", esc(dir+`\`+ImageFile(m)))
	fmt.Fprintf(&b, "kernelModules=%s\n", esc(dir+`\`+VHDXFile))
	return b.String()
}

// Notes returns the release notes (Markdown) for the manifest.
func Notes(m *manifest.Manifest, tag, sums string) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	layout := m.Layout
	if layout == "" {
		layout = "flat"
	}
	p("WSL2 kernel **%s** (%s) with every stock module plus the modules below, as `%s` + `%s`.", m.Kernel.Tag, m.Kernel.Arch, ImageFile(m), VHDXFile)
	p("")
	p("- `uname -r`: `%s`", m.Kernel.Release)
	p("- Minimum WSL version: **%s** (older versions reject `kernelModules` with *Invalid boolean value*)", MinWSL)
	switch layout {
	case "nested":
		p("- Image layout: **nested** (`<release>/modules`, …): only WSL builds with microsoft/WSL PR #41267 read it; released WSL up to 2.9.4 reads only the flat layout")
	default:
		p("- Image layout: **%s** (modules at the root of the image, mounted at `/lib/modules/%s`), read by every WSL since %s", layout, m.Kernel.Release, MinWSL)
	}
	if m.Headers != "" {
		p("- Kernel headers in the image: %s", m.Headers)
	}
	p("- Kernel source: %s `%s` (%s)", m.Kernel.Source.Repo, m.Kernel.Tag, pinText(m.Kernel.Source))
	if m.Kernel.Compiler != "" {
		p("- Compiler: %s", m.Kernel.Compiler)
	}
	p("")
	p("## Modules")
	p("")
	if len(m.Modules) == 0 {
		p("No added modules: the image holds the stock modules only.")
	} else {
		p("| Module | Version | Source | Pin | Status |")
		p("|---|---|---|---|---|")
		for _, x := range m.Modules {
			where := x.Source.URL
			if where == "" {
				where = x.Source.Repo + x.Source.Path
			}
			status := x.Status
			if x.Error != "" {
				status += ": " + x.Error
			}
			p("| %s | %s | %s %s | `%s` | %s |", cell(x.Name), cell(x.Version), cell(x.Source.Kind), cell(where), cell(short(x.Source.Pin())), cell(status))
		}
	}
	p("")
	p("## Install")
	p("")
	p("1. Download `%s` and `%s`.", ImageFile(m), VHDXFile)
	p("2. Keep both in a folder that is **not sparse, compressed or encrypted**, e.g. `%%UserProfile%%\\%s`. Windows refuses VHDX files that are (*Virtual hard disk files must be uncompressed and unencrypted and must not be sparse*); use tools that do not restore sparseness when copying.", winFolder(tag))
	p("3. Edit `%%UserProfile%%\\.wslconfig` and merge this `[wsl2]` snippet (also attached as `%s`), with `<you>` replaced by your Windows user name, since `.wslconfig` needs absolute paths and does not expand `%%UserProfile%%`:", WSLConfFile)
	p("")
	p("   ```ini")
	p("   [wsl2]")
	p("   kernel=%s", esc(`C:\Users\<you>\`+winFolder(tag)+`\`+ImageFile(m)))
	p("   kernelModules=%s", esc(`C:\Users\<you>\`+winFolder(tag)+`\`+VHDXFile))
	p("   ```")
	p("")
	p("   `kernel=` is required: WSL refuses `kernelModules=` without a custom `kernel=` (*Customised kernel modules were supplied without specifying a customised kernel*), and the modules must match the running kernel exactly, so use the kernel from this release.")
	p("4. Run `wsl --shutdown`, start WSL, and check `uname -r` prints `%s`.", m.Kernel.Release)
	p("")
	p("### `E_ACCESSDENIED` on WSL 2.7.1–2.7.4 and 2.8.0–2.8.5")
	p("")
	p("These versions fail with `Wsl/Service/CreateInstance/CreateVm/HCS/E_ACCESSDENIED` when the VHDX is in a folder the VM worker process cannot read, typically under the user profile. Update WSL (fixed in 2.7.5 and 2.8.6), move both files to a folder directly under `C:\\`, or grant read access:")
	p("")
	p("```")
	p(`icacls %%UserProfile%%\%s\%s /grant "*S-1-5-32-545:(RX)" "*S-1-15-2-1:(RX)" "*S-1-15-2-2:(RX)"`, winFolder(tag), VHDXFile)
	p("```")
	b.WriteString(develNotes(m))
	p("")
	p("## Checksums (SHA256SUMS)")
	p("")
	p("```")
	b.WriteString(sums)
	p("```")
	return b.String()
}

func pinText(s manifest.Source) string {
	switch {
	case s.Commit != "":
		return "commit " + short(s.Commit)
	case s.SHA256 != "":
		return "sha256 " + short(s.SHA256)
	}
	return s.Kind
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}
