package release

import (
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
)

// seenWSL is every WSL release of WSL.md §9.1 (no 2.9.2 tag).
var seenWSL = strings.Fields("2.5.8 2.5.9 2.5.10 2.6.0 2.6.1 2.6.2 2.6.3 2.7.0 2.7.1 2.7.2 2.7.3 2.7.4 2.7.5 2.7.6 2.7.7 2.7.8 2.7.9 2.7.10 2.7.11 " +
	"2.8.0 2.8.1 2.8.2 2.8.3 2.8.4 2.8.5 2.8.6 2.8.7 2.8.8 2.8.9 2.8.10 2.8.11 2.8.12 2.9.0 2.9.1 2.9.3 2.9.4")

func wslReleases(vs ...string) []manifest.WSLRelease {
	var out []manifest.WSLRelease
	for _, v := range vs {
		pre := strings.HasSuffix(v, "-pre")
		out = append(out, manifest.WSLRelease{Version: strings.TrimSuffix(v, "-pre"), Prerelease: pre})
	}
	return out
}

func TestWSLRanges(t *testing.T) {
	for _, c := range []struct {
		ship      []string
		seen      []string
		want      string
		wantNoSee string
	}{
		// 6.6.87.2: one range across the 2.5/2.6 lines among those seen.
		{[]string{"2.6.3", "2.5.9", "2.6.0", "2.5.10", "2.6.1", "2.6.2"}, seenWSL, "2.5.9 – 2.6.3", "2.5.9 – 2.5.10, 2.6.0 – 2.6.3"},
		// 6.18.26.1: the parallel 2.7.x and 2.8.x lines are not merged.
		{[]string{"2.7.4", "2.7.5", "2.7.6", "2.7.7", "2.8.5", "2.8.6", "2.8.7", "2.8.8"}, seenWSL, "2.7.4 – 2.7.7, 2.8.5 – 2.8.8", "2.7.4 – 2.7.7, 2.8.5 – 2.8.8"},
		// 6.6.114.1: 2.7.3 and 2.8.0 are not adjacent (2.7.4… lie between).
		{[]string{"2.7.0", "2.7.1", "2.7.2", "2.7.3", "2.8.0", "2.8.1", "2.8.2", "2.8.3", "2.8.4"}, seenWSL, "2.7.0 – 2.7.3, 2.8.0 – 2.8.4", "2.7.0 – 2.7.3, 2.8.0 – 2.8.4"},
		// 6.18.35.2: no 2.9.2 was seen, so 2.9.1 and 2.9.3 are adjacent.
		{[]string{"2.9.1", "2.9.3", "2.9.4"}, seenWSL, "2.9.1 – 2.9.4", "2.9.1, 2.9.3 – 2.9.4"},
		{[]string{"2.7.8"}, seenWSL, "2.7.8", "2.7.8"},
		// Pre-releases are marked and kept apart; duplicates collapse.
		{[]string{"2.9.0-pre", "2.8.12", "2.8.12", "2.9.1-pre"}, seenWSL, "2.8.12, 2.9.0 – 2.9.1 (pre-release)", "2.8.12, 2.9.0 – 2.9.1 (pre-release)"},
	} {
		if got := wslRanges(wslReleases(c.ship...), c.seen); got != c.want {
			t.Errorf("%v with seen: %q, want %q", c.ship, got, c.want)
		}
		if got := wslRanges(wslReleases(c.ship...), nil); got != c.wantNoSee {
			t.Errorf("%v without seen: %q, want %q", c.ship, got, c.wantNoSee)
		}
	}
}

// stockManifest is a stock-mode build: Microsoft's 6.6.87.2 from the WSL
// 2.6.1 MSI (the tag's config signs modules without enforcing), with a
// git module loaded at boot, a path module and a url module.
func stockManifest() *manifest.Manifest {
	m := testManifest(strings.Repeat("e", 64), 80<<20, "v0.13.2")
	m.Kernel.Mode = manifest.ModeStock
	m.Kernel.ModeReason = "WSL 2.6.1 ships kernel 6.6.87.2 and the module list needs no config fragment"
	m.Kernel.Stock = &manifest.Stock{KernelSHA256: strings.Repeat("1", 64), ModulesFile: "modules.vhd", ModulesSHA256: strings.Repeat("2", 64),
		MSI: &manifest.MSI{Name: "wsl.2.6.1.0.x64.msi", WSLVersion: "2.6.1", SHA256: strings.Repeat("3", 64),
			URL: "https://github.com/microsoft/WSL/releases/download/2.6.1/wsl.2.6.1.0.x64.msi"}}
	m.Kernel.WSL = wslReleases("2.5.9", "2.5.10", "2.6.0", "2.6.1", "2.6.2", "2.6.3")
	m.Kernel.Signing = "unsigned"
	m.Kernel.Compiler = ""
	m.Modules[0].Autoload = []string{"v4l2loopback"}
	m.Modules = append(m.Modules,
		manifest.Module{Name: "mydriver", Status: manifest.StatusOK, Autoload: []string{"mydriver", "v4l2loopback"},
			Source: manifest.Source{Kind: "path", Path: "drivers/mydriver", SHA256: strings.Repeat("4", 64)}, SourceArchive: ModuleSourcesFile},
		manifest.Module{Name: "apfs", Version: "0.3", Status: manifest.StatusOK,
			Source: manifest.Source{Kind: "url", URL: "https://example.org/apfs-0.3.tar.gz", SHA256: strings.Repeat("5", 64)}},
		manifest.Module{Name: "broken", Status: manifest.StatusSkipped, Error: "does not build", Autoload: []string{"broken"},
			Source: manifest.Source{Kind: "git", URL: "https://example.org/broken.git", Commit: strings.Repeat("6", 40)}})
	return m
}

// unshippedManifest is a build-mode build of a kernel no WSL release
// ships, whose config olddefconfig changed.
func unshippedManifest() *manifest.Manifest {
	m := testManifest(strings.Repeat("e", 64), 80<<20, "v0.13.2")
	const tag = "linux-msft-wsl-6.18.40.1"
	m.Kernel.Tag, m.Kernel.Source.Tag, m.Kernel.Release = tag, tag, "6.18.40.1-microsoft-standard-WSL2"
	m.Kernel.Source.URL = "https://github.com/microsoft/WSL2-Linux-Kernel/archive/refs/tags/" + tag + ".tar.gz"
	m.Kernel.Mode = manifest.ModeBuild
	m.Kernel.ModeReason = "no WSL release seen ships kernel 6.18.40.1"
	m.Kernel.FragmentSHA256 = strings.Repeat("f", 64)
	m.Kernel.ConfigChanges = []string{"toolchain: CONFIG_GCC_VERSION: 130200 -> 120200", "CONFIG_DEBUG_INFO_BTF: y -> (absent)"}
	return m
}

func wantAll(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
	if t.Failed() {
		t.Logf("%s:\n%s", what, text)
	}
}

func wantNone(t *testing.T, what, text string, nots ...string) {
	t.Helper()
	for _, n := range nots {
		if strings.Contains(text, n) {
			t.Errorf("%s has %q", what, n)
		}
	}
}

func TestNotesStockMode(t *testing.T) {
	m := stockManifest()
	o := NotesOptions{Tag: "wsl-modules-6.6.87.2", Sums: "abc  modules.vhdx\n", Repo: "me/wsl-modules", WSLSeen: seenWSL}
	notes := RenderNotes(m, o)
	wantAll(t, "stock notes", notes,
		"- Microsoft ships this kernel for WSL 2.5.9 – 2.6.3 (kernel 6.6.87.2), among the WSL releases seen: compare with `wsl --version`",
		"**Microsoft's kernel, unchanged** (stock mode): `bzImage` is the kernel Microsoft ships, byte for byte.",
		"- `bzImage`: sha256 `"+strings.Repeat("1", 64)+"`, Microsoft's kernel from `wsl.2.6.1.0.x64.msi` (sha256 `"+strings.Repeat("3", 64)+
			"`, WSL 2.6.1, https://github.com/microsoft/WSL/releases/download/2.6.1/wsl.2.6.1.0.x64.msi)",
		"- Stock modules: Microsoft's `modules.vhd` (sha256 `"+strings.Repeat("2", 64)+"`), from the same installer",
		"Why this mode: WSL 2.6.1 ships kernel 6.6.87.2 and the module list needs no config fragment",
		"> **Warning: the added modules taint the kernel.**",
		"*module verification failed: signature and/or required key missing - tainting kernel*",
		"Loaded at boot: `loadKernelModules=v4l2loopback,mydriver` (in the snippet below). WSL loads `tun,ip_tables,br_netfilter` first",
		"   loadKernelModules=v4l2loopback,mydriver\n",
		"point `kernel=` at this pinned copy, not at `C:\\Program Files\\WSL\\tools\\kernel`",
		"`gh attestation verify modules.vhdx -R me/wsl-modules`",
		"if this release was attested (its workflow ran `actions/attest-build-provenance`",
		"## Source code (GPL-2.0)",
		"- Kernel (`bzImage`, Microsoft's binary, built by Microsoft): https://github.com/microsoft/WSL2-Linux-Kernel tag `linux-msft-wsl-6.6.87.2`, commit `"+strings.Repeat("a", 40)+"`",
		"- Kernel's own modules (`kernel/…` in `modules.vhdx`): Microsoft's, built by Microsoft from the same source and configuration",
		"- Configuration: Microsoft's `arch/x86/configs/config-wsl` at that tag; the final `.config` has sha256 `"+strings.Repeat("c", 64)+"` and is in `modules.vhdx` at `build/.config`",
		"- `v4l2loopback` 0.13.2: git https://github.com/umlaeute/v4l2loopback, commit `",
		"- `mydriver`: attached as `module-sources.tar.gz`, directory `mydriver/` (content digest `"+strings.Repeat("4", 64)+"`)",
		"- `apfs` 0.3: https://example.org/apfs-0.3.tar.gz, sha256 `"+strings.Repeat("5", 64)+"`",
		"abc  modules.vhdx\n```\n")
	wantNone(t, "stock notes", notes, "not Microsoft's binary", "loadKernelModules=v4l2loopback,mydriver,broken", "Compiler:")
	// A module left out of the image has no source listed.
	_, gpl, _ := strings.Cut(notes, "## Source code (GPL-2.0)")
	wantNone(t, "stock notes' source section", gpl, "broken")
	// Without the seen list, only patch runs are merged.
	o.WSLSeen = nil
	wantAll(t, "stock notes without seen", RenderNotes(m, o), "for WSL 2.5.9 – 2.5.10, 2.6.0 – 2.6.3 (kernel 6.6.87.2)")

	conf := WSLConfig(m, "wsl-modules-6.6.87.2")
	wantAll(t, "stock wslconfig.txt", conf,
		"# bzImage is Microsoft's kernel, unchanged. Point kernel= at this pinned copy,\n# not at C:\\Program Files\\WSL\\tools\\kernel: a WSL update replaces that file\n",
		"# loads tun,ip_tables,br_netfilter first (loadDefaultKernelModules, true by default).\n",
		"[wsl2]\nkernel=C:\\\\Users\\\\<you>\\\\wsl\\\\wsl-modules-6.6.87.2\\\\bzImage\nkernelModules=C:\\\\Users\\\\<you>\\\\wsl\\\\wsl-modules-6.6.87.2\\\\modules.vhdx\nloadKernelModules=v4l2loopback,mydriver\n")
	if !strings.HasSuffix(conf, "loadKernelModules=v4l2loopback,mydriver\n") {
		t.Errorf("wslconfig.txt does not end with the [wsl2] lines:\n%s", conf)
	}
}

func TestNotesBuildModeUnshipped(t *testing.T) {
	m := unshippedManifest()
	notes := RenderNotes(m, NotesOptions{Tag: "wsl-modules-6.18.40.1", Sums: "abc  modules.vhdx\n", ConfigAttached: true})
	wantAll(t, "build notes", notes,
		"**Built by this release** (build mode) from the source below with Microsoft's configuration. It is **not Microsoft's binary**: no WSL release seen ships kernel 6.18.40.1.",
		"Why this mode: no WSL release seen ships kernel 6.18.40.1",
		"### Options that differ from Microsoft's configuration",
		"- `toolchain: CONFIG_GCC_VERSION: 130200 -> 120200`\n- `CONFIG_DEBUG_INFO_BTF: y -> (absent)`\n",
		"- Compiler: gcc (Debian 12.2.0-14) 12.2.0",
		"`gh attestation verify modules.vhdx -R <owner>/<repo>`",
		"- Kernel (`bzImage`, built by this release): https://github.com/microsoft/WSL2-Linux-Kernel tag `linux-msft-wsl-6.18.40.1`, commit `"+strings.Repeat("a", 40)+
			"` (https://github.com/microsoft/WSL2-Linux-Kernel/tree/"+strings.Repeat("a", 40)+")",
		"- Kernel source tarball: https://github.com/microsoft/WSL2-Linux-Kernel/archive/refs/tags/linux-msft-wsl-6.18.40.1.tar.gz, sha256 `"+strings.Repeat("b", 64)+"`",
		"- Configuration: Microsoft's `arch/x86/configs/config-wsl` at that tag, with the config fragment of the module list (`kernel.config-fragment`, sha256 `"+
			strings.Repeat("f", 64)+"`) appended; the final `.config` has sha256 `"+strings.Repeat("c", 64)+"` and is attached as `kernel.config` and in `modules.vhdx` at `build/.config`",
		"- Kernel's own modules (`kernel/…` in `modules.vhdx`): built by this release from the same source and configuration")
	wantNone(t, "build notes", notes, "Microsoft ships this kernel for WSL", "Warning: the added modules taint", "loadKernelModules", "pinned copy")
	wantNone(t, "build wslconfig.txt", WSLConfig(m, "wsl-modules-6.18.40.1"), "loadKernelModules", "pinned copy")
	// A build of a kernel Microsoft ships says so, without the warning.
	m.Kernel.WSL = wslReleases("2.9.5")
	wantAll(t, "shipped build notes", RenderNotes(m, NotesOptions{}), "It is not Microsoft's binary: Microsoft builds and ships its own kernel of this version.",
		"for WSL 2.9.5 (kernel 6.18.40.1)")
	// Module signing by the build.
	m.Kernel.Signing = "signed"
	wantAll(t, "signed notes", RenderNotes(m, NotesOptions{}), "are signed (`CONFIG_MODULE_SIG`) with a key made for this build")
}

func TestSourcesFile(t *testing.T) {
	m := stockManifest()
	m.Modules[0].Source.Ref = "v0.13.2"
	src := Sources(m, "wsl-modules-6.6.87.2", false)
	wantAll(t, "SOURCES.md", src,
		"# Corresponding source of wsl-modules-6.6.87.2\n",
		"the Linux kernel (`bzImage`) and the kernel modules in `modules.vhdx`",
		"## Kernel and its modules\n\n- Kernel (`bzImage`, Microsoft's binary, built by Microsoft): https://github.com/microsoft/WSL2-Linux-Kernel tag `linux-msft-wsl-6.6.87.2`, commit `"+strings.Repeat("a", 40)+"`",
		"- Kernel source tarball: https://github.com/microsoft/WSL2-Linux-Kernel/archive/refs/tags/linux-msft-wsl-6.6.87.2.tar.gz (the tarball this build unpacked, from GitHub's API, had sha256 `"+strings.Repeat("b", 64)+"`)",
		"## Added modules\n\n- `v4l2loopback` 0.13.2: git https://github.com/umlaeute/v4l2loopback, commit `",
		"` (ref `v0.13.2`)\n- `mydriver`: attached as `module-sources.tar.gz`, directory `mydriver/`",
		"- `apfs` 0.3: https://example.org/apfs-0.3.tar.gz, sha256 `",
		"recorded in `build-manifest.json`")
	wantNone(t, "SOURCES.md", src, "broken", "kernel.config`")
	m.Modules[1].SourceArchive = ""
	wantAll(t, "SOURCES.md, unattached path module", Sources(m, "t", false), "- `mydriver`: path `drivers/mydriver` of the module list's repository (**not attached**")
	m.Modules = nil
	wantAll(t, "SOURCES.md, no modules", Sources(m, "t", false), "## Added modules\n\nNone: the image holds the kernel's own modules only.\n")
}
