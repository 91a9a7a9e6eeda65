package release

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kver"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
)

// StockKernelPath is where the WSL MSI installs Microsoft's kernel, which
// WSL updates replace (WSL.md §2.3, §9.2).
const StockKernelPath = `C:\Program Files\WSL\tools\kernel`

// DefaultBootModules are the modules WSL modprobes at boot while
// loadDefaultKernelModules is true (the default), before
// loadKernelModules.
const DefaultBootModules = "tun,ip_tables,br_netfilter"

// winFolder is the suggested folder, relative to %UserProfile%.
func winFolder(tag string) string { return `wsl\` + tag }

func esc(p string) string { return strings.ReplaceAll(p, `\`, `\\`) }

func isStock(m *manifest.Manifest) bool { return m.Kernel.Mode == manifest.ModeStock }

// autoload returns the modules' Autoload names (modprobe names), in
// module order, without duplicates, for loadKernelModules=. Modules left
// out of the image are not listed.
func autoload(m *manifest.Manifest) []string {
	var out []string
	for _, x := range m.Modules {
		if x.Status != manifest.StatusOK {
			continue
		}
		for _, n := range x.Autoload {
			if n = strings.TrimSpace(n); n != "" && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// wslConfigLines are the [wsl2] lines, paths in .wslconfig's escaped
// form.
func wslConfigLines(m *manifest.Manifest, tag string) []string {
	dir := `C:\Users\<you>\` + winFolder(tag)
	lines := []string{"[wsl2]", "kernel=" + esc(dir+`\`+ImageFile(m)), "kernelModules=" + esc(dir+`\`+VHDXFile)}
	if a := autoload(m); len(a) > 0 {
		lines = append(lines, "loadKernelModules="+strings.Join(a, ","))
	}
	return lines
}

// WSLConfig returns the wslconfig.txt snippet. .wslconfig takes absolute
// paths and does not expand %UserProfile%, so the paths name the folder
// %UserProfile%\wsl\<tag> as C:\\Users\\<you>\\wsl\\<tag> with a
// placeholder for the user name, and say so. In stock mode it explains
// that kernel= must name this pinned copy of Microsoft's kernel; with
// modules to load at boot it sets loadKernelModules=.
func WSLConfig(m *manifest.Manifest, tag string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# .wslconfig snippet for %s (uname -r: %s)\n", tag, m.Kernel.Release)
	fmt.Fprintf(&b, "# Put %s and %s in %%UserProfile%%\\%s (not a sparse,\n", ImageFile(m), VHDXFile, winFolder(tag))
	b.WriteString("# compressed or encrypted folder), replace <you> with your Windows user\n")
	b.WriteString("# name (.wslconfig does not expand %UserProfile%), merge these lines into\n")
	b.WriteString("# the [wsl2] section of %UserProfile%\\.wslconfig and run: wsl --shutdown\n")
	fmt.Fprintf(&b, "# Needs WSL %s or later. kernel= is required: WSL refuses kernelModules=\n", MinWSL)
	b.WriteString("# unless kernel= names a kernel too, and the modules only load on the\n")
	b.WriteString("# kernel they were built with.\n")
	if isStock(m) {
		fmt.Fprintf(&b, "# %s is Microsoft's kernel, unchanged. Point kernel= at this pinned copy,\n", ImageFile(m))
		fmt.Fprintf(&b, "# not at %s: a WSL update replaces that file\n", StockKernelPath)
		b.WriteString("# with a newer kernel, on which these modules no longer load.\n")
	}
	if a := autoload(m); len(a) > 0 {
		b.WriteString("# loadKernelModules= names modules WSL loads at boot (modprobe names). WSL\n")
		fmt.Fprintf(&b, "# loads %s first (loadDefaultKernelModules, true by default).\n", DefaultBootModules)
	}
	for _, l := range wslConfigLines(m, tag) {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// NotesOptions are what the release notes need besides the manifest.
type NotesOptions struct {
	// Tag is the release tag (it names the install folder).
	Tag string
	// Sums is the content of SHA256SUMS.
	Sums string
	// Repo is the target repository for the attestation command ("" =
	// the placeholder <owner>/<repo>).
	Repo string
	// WSLSeen is every WSL version seen (see PrepareOptions.WSLSeen).
	WSLSeen []string
	// ConfigAttached tells that kernel.config is an asset.
	ConfigAttached bool
}

// Notes returns the release notes (Markdown) for the manifest.
func Notes(m *manifest.Manifest, tag, sums string) string {
	return RenderNotes(m, NotesOptions{Tag: tag, Sums: sums})
}

type printer struct{ b *strings.Builder }

func (p printer) f(format string, a ...any) { fmt.Fprintf(p.b, format+"\n", a...) }

// RenderNotes returns the release notes (Markdown): what the release is
// and for which WSL versions, how the kernel was made (stock or build
// mode, config changes, module signing), the modules and what loads at
// boot, how to install and verify it, and the corresponding source of
// every GPL binary in it.
func RenderNotes(m *manifest.Manifest, o NotesOptions) string {
	var b strings.Builder
	p := printer{&b}.f
	layout := cmp.Or(m.Layout, "flat")
	p("WSL2 kernel **%s** (%s) with every stock module plus the modules below, as `%s` + `%s`.", m.Kernel.Tag, m.Kernel.Arch, ImageFile(m), VHDXFile)
	p("")
	p("- `uname -r`: `%s`", m.Kernel.Release)
	if len(m.Kernel.WSL) > 0 {
		p("- Microsoft ships this kernel for WSL %s (kernel %s), among the WSL releases seen: compare with `wsl --version` (its *Kernel version* line)",
			wslRanges(m.Kernel.WSL, o.WSLSeen), kernelVersion(m))
	}
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
	p("- Kernel source: %s `%s` (%s)", kernelRepo(m), m.Kernel.Tag, pinText(m.Kernel.Source))
	if m.Kernel.Compiler != "" && !isStock(m) {
		p("- Compiler: %s", m.Kernel.Compiler)
	}
	kernelSection(p, m)
	modulesSection(p, m)
	installSection(p, m, o.Tag)
	b.WriteString(develNotes(m))
	verifySection(p, m, o.Repo)
	p("")
	p("## Source code (GPL-2.0)")
	p("")
	p("The kernel and its modules are GPL-2.0 software. Their exact corresponding source (also in `%s`, attached):", SourcesFile)
	p("")
	for _, l := range sourceLines(m, o.ConfigAttached) {
		p("- %s", l)
	}
	p("")
	p("## Checksums (SHA256SUMS)")
	p("")
	p("```")
	b.WriteString(o.Sums)
	p("```")
	return b.String()
}

// kernelVersion is the kernel tag's version (6.6.87.2), else the tag.
func kernelVersion(m *manifest.Manifest) string {
	if v, ok := kver.Parse(m.Kernel.Tag); ok {
		return v.String()
	}
	return m.Kernel.Tag
}

// kernelSection says how the kernel was made: Microsoft's binary (stock)
// or built here (build), why, what olddefconfig changed, and signing.
func kernelSection(p func(string, ...any), m *manifest.Manifest) {
	p("")
	p("## Kernel")
	p("")
	img := ImageFile(m)
	switch {
	case isStock(m):
		p("**Microsoft's kernel, unchanged** (stock mode): `%s` is the kernel Microsoft ships, byte for byte.", img)
		p("")
		for _, l := range stockLines(m) {
			p("- %s", l)
		}
	case m.Kernel.Mode == manifest.ModeBuild && len(m.Kernel.WSL) == 0:
		p("**Built by this release** (build mode) from the source below with Microsoft's configuration. It is **not Microsoft's binary**: no WSL release seen ships kernel %s.", kernelVersion(m))
	default:
		p("**Built by this release** (build mode) from the source below with Microsoft's configuration. It is not Microsoft's binary: Microsoft builds and ships its own kernel of this version.")
	}
	if m.Kernel.ModeReason != "" {
		p("")
		p("Why this mode: %s", m.Kernel.ModeReason)
	}
	if len(m.Kernel.ConfigChanges) > 0 {
		p("")
		p("### Options that differ from Microsoft's configuration")
		p("")
		p("`make olddefconfig` completed the configuration for this build's compiler (and, where noted, the configuration differs from the one Microsoft's kernel embeds); these options differ from Microsoft's:")
		p("")
		for _, c := range m.Kernel.ConfigChanges {
			p("- `%s`", strings.ReplaceAll(c, "`", "'"))
		}
	}
	switch m.Kernel.Signing {
	case "unsigned":
		p("")
		p("> **Warning: the added modules taint the kernel.** Microsoft's kernel is built with module signing (`CONFIG_MODULE_SIG`) but without `CONFIG_MODULE_SIG_FORCE`, and the added modules cannot be signed with Microsoft's key. They load, but the kernel is marked tainted (`dmesg` shows *module verification failed: signature and/or required key missing - tainting kernel*).")
	case "signed":
		p("")
		p("The kernel's modules, stock and added, are signed (`CONFIG_MODULE_SIG`) with a key made for this build.")
	}
}

// stockLines describe Microsoft's files in stock mode.
func stockLines(m *manifest.Manifest) []string {
	st := m.Kernel.Stock
	if st == nil {
		return []string{"(the manifest does not record Microsoft's files)"}
	}
	var out []string
	from := "from a local file"
	switch {
	case st.MSI != nil:
		from = fmt.Sprintf("from `%s` (sha256 `%s`", st.MSI.Name, st.MSI.SHA256)
		if st.MSI.WSLVersion != "" {
			from += ", WSL " + st.MSI.WSLVersion
		}
		if st.MSI.URL != "" {
			from += ", " + st.MSI.URL
		}
		from += ")"
	case st.KernelPath != "":
		from = fmt.Sprintf("from the local file `%s`", st.KernelPath)
	}
	out = append(out, fmt.Sprintf("`%s`: sha256 `%s`, Microsoft's kernel %s", ImageFile(m), st.KernelSHA256, from))
	mods := fmt.Sprintf("Stock modules: Microsoft's `%s` (sha256 `%s`)", cmp.Or(st.ModulesFile, "modules.vhd"), st.ModulesSHA256)
	if st.MSI != nil {
		mods += ", from the same installer"
	} else if st.ModulesPath != "" {
		mods += fmt.Sprintf(", from the local file `%s`", st.ModulesPath)
	}
	out = append(out, mods+"; `modules.vhdx` holds its modules unchanged, plus the added ones")
	return out
}

// modulesSection is the table of added modules and what loads at boot.
func modulesSection(p func(string, ...any), m *manifest.Manifest) {
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
	if a := autoload(m); len(a) > 0 {
		p("")
		p("Loaded at boot: `loadKernelModules=%s` (in the snippet below). WSL loads `%s` first (`loadDefaultKernelModules`, true by default), then these.",
			strings.Join(a, ","), DefaultBootModules)
	}
}
