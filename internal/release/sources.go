package release

import (
	"fmt"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
)

// Sources returns SOURCES.md: the exact corresponding source of every
// GPL-2.0 binary the release redistributes (the kernel, Microsoft's or
// built here, and every module in modules.vhdx), in a form a user can
// follow: the kernel tag, its commit and tarball URL, the configuration,
// and for each added module its repository and commit, its URL and
// sha256, or the attached archive that holds it. withConfig tells that
// kernel.config is attached.
func Sources(m *manifest.Manifest, tag string, withConfig bool) string {
	var b strings.Builder
	p := printer{&b}.f
	p("# Corresponding source of %s", tag)
	p("")
	p("This release redistributes software under the GNU General Public License, version 2: the Linux kernel (`%s`) and the kernel modules in `%s` (the kernel's own modules and the added ones). This file names the exact source code of each.", ImageFile(m), VHDXFile)
	p("")
	p("## Kernel and its modules")
	p("")
	lines := sourceLines(m, withConfig)
	nk := kernelSourceLines(m, withConfig)
	for _, l := range lines[:nk] {
		p("- %s", l)
	}
	p("")
	p("## Added modules")
	p("")
	if len(lines) == nk {
		p("None: the image holds the kernel's own modules only.")
	}
	for _, l := range lines[nk:] {
		p("- %s", l)
	}
	p("")
	p("The build's pins are also recorded in `%s` (`kernel.source`, `modules[].source`, `modules[].source_archive`, `inputs`).", "build-manifest.json")
	return b.String()
}

// kernelSourceLines is how many of sourceLines are about the kernel.
func kernelSourceLines(m *manifest.Manifest, withConfig bool) int {
	return len(kernelSources(m, withConfig))
}

// sourceLines are the corresponding-source items (Markdown, one per
// line): the kernel's, then one per added module in the image.
func sourceLines(m *manifest.Manifest, withConfig bool) []string {
	out := kernelSources(m, withConfig)
	for _, x := range m.Modules {
		if x.Status != manifest.StatusOK {
			continue
		}
		out = append(out, moduleSource(x))
	}
	return out
}

// kernelSources names the kernel's source tree, tarball, configuration
// and the source of the kernel's own modules.
func kernelSources(m *manifest.Manifest, withConfig bool) []string {
	k, src, repo := m.Kernel, m.Kernel.Source, kernelRepo(m)
	kt := k.Tag
	if src.Tag != "" {
		kt = src.Tag
	}
	binary := "built by this release"
	if isStock(m) {
		binary = "Microsoft's binary, built by Microsoft"
	}
	tree := fmt.Sprintf("Kernel (`%s`, %s): https://github.com/%s tag %s", ImageFile(m), binary, repo, backtick(kt))
	if src.Commit != "" {
		tree += fmt.Sprintf(", commit %s (https://github.com/%s/tree/%s)", backtick(src.Commit), repo, src.Commit)
	} else {
		tree += " (commit not recorded)"
	}
	tarball := "Kernel source tarball: "
	if src.URL != "" {
		tarball += src.URL
		if src.SHA256 != "" {
			tarball += ", sha256 " + backtick(src.SHA256)
		}
	} else {
		tarball += fmt.Sprintf("https://github.com/%s/archive/refs/tags/%s.tar.gz", repo, kt)
		if src.SHA256 != "" {
			tarball += fmt.Sprintf(" (the tarball this build unpacked, from GitHub's API, had sha256 %s)", backtick(src.SHA256))
		}
	}
	stockMods := "Kernel's own modules (`kernel/…` in `" + VHDXFile + "`): built by this release from the same source and configuration"
	if isStock(m) {
		stockMods = "Kernel's own modules (`kernel/…` in `" + VHDXFile + "`): Microsoft's, built by Microsoft from the same source and configuration"
	}
	return []string{tree, tarball, configSource(m, withConfig), stockMods}
}

// configSource names the kernel configuration and the config fragment.
func configSource(m *manifest.Manifest, withConfig bool) string {
	inTree := "arch/x86/configs/config-wsl"
	if isARM64(m.Kernel.Arch) {
		inTree = "arch/arm64/configs/config-wsl-arm64"
	}
	s := fmt.Sprintf("Configuration: Microsoft's `%s` at that tag", inTree)
	if m.Inputs != nil && m.Inputs.ConfigSHA256 != "" {
		s = fmt.Sprintf("Configuration: a configuration given to the build in place of the tag's (sha256 %s)", backtick(m.Inputs.ConfigSHA256))
	}
	if m.Kernel.FragmentSHA256 != "" {
		s += fmt.Sprintf(", with the config fragment of the module list (`kernel.config-fragment`, sha256 %s) appended", backtick(m.Kernel.FragmentSHA256))
	}
	if m.Kernel.ConfigSHA256 != "" {
		s += fmt.Sprintf("; the final `.config` has sha256 %s", backtick(m.Kernel.ConfigSHA256))
	}
	var where []string
	if withConfig {
		where = append(where, "attached as `"+ConfigFile+"`")
	}
	if m.Headers == "devel" {
		where = append(where, "in `"+VHDXFile+"` at `build/.config`")
	}
	if len(where) > 0 {
		s += " and is " + strings.Join(where, " and ")
	}
	return s
}

// moduleSource names one added module's source.
func moduleSource(x manifest.Module) string {
	name := backtick(x.Name)
	if x.Version != "" {
		name += " " + x.Version
	}
	s := x.Source
	switch {
	case x.SourceArchive != "":
		out := fmt.Sprintf("%s: attached as `%s`, directory `%s/`", name, x.SourceArchive, x.Name)
		if pin := s.Pin(); pin != "" && pin != s.Path {
			out += fmt.Sprintf(" (content digest %s)", backtick(pin))
		}
		return out
	case s.Kind == "git":
		out := fmt.Sprintf("%s: git %s", name, s.URL+s.Repo)
		if s.Commit != "" {
			out += ", commit " + backtick(s.Commit)
		}
		if s.Ref != "" && s.Ref != s.Commit {
			out += " (ref " + backtick(s.Ref) + ")"
		}
		return out
	case s.Kind == "url":
		return fmt.Sprintf("%s: %s, sha256 %s", name, s.URL, backtick(s.SHA256))
	case s.Kind == "path":
		return fmt.Sprintf("%s: path `%s` of the module list's repository (**not attached**: its source is not in this release)", name, s.Path)
	case s.Kind == "in-tree":
		out := fmt.Sprintf("%s: directory `%s/` of the kernel source above", name, s.Path)
		if len(x.Config) > 0 {
			out += ", built as modules with " + backtick(strings.Join(x.Config, " "))
		}
		return out
	case x.Pack != "":
		return fmt.Sprintf("%s: from the pack `%s` (its source is not recorded in this release)", name, x.Pack)
	}
	return fmt.Sprintf("%s: %s %s %s", name, s.Kind, s.URL+s.Repo+s.Path, backtick(s.Pin()))
}
