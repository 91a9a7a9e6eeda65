package pack

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
)

// buildModules selects the successfully built modules of m named in names
// (all of them when names is empty), sorted by name.
func buildModules(m *manifest.Manifest, names []string) ([]manifest.Module, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []manifest.Module
	found := map[string]bool{}
	for _, mod := range m.Modules {
		if len(want) > 0 && !want[mod.Name] {
			continue
		}
		found[mod.Name] = true
		if mod.Status != manifest.StatusOK {
			return nil, fmt.Errorf("pack: module %s has status %s in %s; only built modules can be packed", mod.Name, mod.Status, manifest.FileName)
		}
		if len(mod.Files) == 0 {
			return nil, fmt.Errorf("pack: module %s has no files in %s", mod.Name, manifest.FileName)
		}
		out = append(out, mod)
	}
	for _, n := range names {
		if !found[n] {
			return nil, fmt.Errorf("pack: module %s is not in %s", n, manifest.FileName)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pack: %s lists no modules", manifest.FileName)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// packRel maps an installed module path (relative to lib/modules/<release>,
// e.g. extra/<name>/sub/x.ko) to its path inside a pack, relative to the
// pack's directory: the install directory (extra/<name>/ or updates/<name>/)
// is dropped.
func packRel(name, file string) (string, error) {
	f := filepath.ToSlash(filepath.Clean(file))
	if filepath.IsAbs(file) || f == ".." || strings.HasPrefix(f, "../") {
		return "", fmt.Errorf("pack: module %s: file %q is outside the module tree", name, file)
	}
	parts := strings.Split(f, "/")
	switch {
	case len(parts) >= 3 && parts[1] == name:
		return strings.Join(parts[2:], "/"), nil
	case len(parts) >= 2:
		return strings.Join(parts[1:], "/"), nil
	}
	return f, nil
}

// buildModuleDir returns staging/lib/modules/<release> of a build output
// directory.
func buildModuleDir(buildOutDir string, m *manifest.Manifest) (string, error) {
	if m.Kernel.Release == "" {
		return "", fmt.Errorf("pack: %s: no kernel release", manifest.FileName)
	}
	dir := filepath.Join(buildOutDir, "staging", "lib", "modules", m.Kernel.Release)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("pack: %s: no staging tree for release %s", buildOutDir, m.Kernel.Release)
	}
	return dir, nil
}

// FromBuild makes one pack per out-of-tree module of a build output
// directory (see docs/ARCHITECTURE.md: staging/lib/modules/<release>/
// extra/<name>/… and build-manifest.json, given as m): outDir/<name>.tar.zst
// named after the module, versioned with its manifest version (or source
// pin). names selects modules (empty: every module of the manifest); a
// module that failed to build is an error. It returns the pack paths, in
// name order. Packs are reproducible; all are made before the first is
// renamed into place, so a failure writes none. Existing pack files of the
// same names are replaced.
func FromBuild(buildOutDir string, m *manifest.Manifest, names []string, outDir string) ([]string, error) {
	mods, err := buildModules(m, names)
	if err != nil {
		return nil, err
	}
	dir, err := buildModuleDir(buildOutDir, m)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	// Every pack is made first in a temporary directory, so a failure
	// leaves none of them behind.
	tmp, err := os.MkdirTemp(outDir, ".packs-*")
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer os.RemoveAll(tmp)
	var out []string
	for _, mod := range mods {
		if !ValidName(mod.Name) {
			return nil, fmt.Errorf("pack: module name %q cannot be a pack name", mod.Name)
		}
		o := CreateOptions{Name: mod.Name, Version: moduleVersion(mod), KernelRelease: m.Kernel.Release,
			Arch: m.Kernel.Arch, Modules: map[string]string{}, Force: true}
		for _, f := range mod.Files {
			rel, err := packRel(mod.Name, f)
			if err != nil {
				return nil, err
			}
			o.Modules[rel] = filepath.Join(dir, filepath.FromSlash(f))
		}
		if _, err := Create(filepath.Join(tmp, mod.Name+Ext), o); err != nil {
			return nil, err
		}
		out = append(out, filepath.Join(outDir, mod.Name+Ext))
	}
	for _, p := range out {
		if err := os.Rename(filepath.Join(tmp, filepath.Base(p)), p); err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
	}
	return out, nil
}

// FromBuildCombined makes a single pack named packName holding the selected
// out-of-tree modules of a build output directory (all when names is
// empty), each under <packName>/<module>/. The pack's version is the
// kernel tag, or the release. It returns the pack's path,
// outDir/<packName>.tar.zst.
func FromBuildCombined(buildOutDir string, m *manifest.Manifest, names []string, packName, outDir string) (string, error) {
	mods, err := buildModules(m, names)
	if err != nil {
		return "", err
	}
	dir, err := buildModuleDir(buildOutDir, m)
	if err != nil {
		return "", err
	}
	version := m.Kernel.Tag
	if version == "" {
		version = m.Kernel.Release
	}
	o := CreateOptions{Name: packName, Version: version, KernelRelease: m.Kernel.Release,
		Arch: m.Kernel.Arch, Modules: map[string]string{}, Force: true}
	for _, mod := range mods {
		for _, f := range mod.Files {
			rel, err := packRel(mod.Name, f)
			if err != nil {
				return "", err
			}
			o.Modules[mod.Name+"/"+rel] = filepath.Join(dir, filepath.FromSlash(f))
		}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("pack: %w", err)
	}
	p := filepath.Join(outDir, packName+Ext)
	if _, err := Create(p, o); err != nil {
		return "", err
	}
	return p, nil
}

func moduleVersion(m manifest.Module) string {
	if m.Version != "" {
		return m.Version
	}
	return m.Source.Pin()
}
