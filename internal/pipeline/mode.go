package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/wslmsi"
)

// Kernel modes (Options.KernelMode, kernel.mode in the module list).
const (
	// ModeAuto uses stock mode whenever Microsoft's kernel for the tag is
	// available (given, or shipped by a WSL release), else build mode.
	ModeAuto = "auto"
	// ModeStock builds the modules for Microsoft's own kernel, which the
	// release carries unchanged.
	ModeStock = manifest.ModeStock
	// ModeBuild builds the kernel at the tag.
	ModeBuild = manifest.ModeBuild
)

// stockFiles says where a kernel job's stock kernel and modules come
// from: local files, a local WSL installer, or a WSL release's installer.
type stockFiles struct {
	kernel, modules string
	msi             string
	wsl             *fetch.WSLRelease
	// pin identifies them for the build's inputs.
	pin string
	// extracted is the installer's pair once stockPaths has it (the
	// fragment's planning and the kernel stage both ask).
	extracted *wslmsi.Stock
}

// wslFile is where the WSL release mapping (with its ETag) is kept
// between runs, in the work directory: action.yml restores and saves it
// around the plan step, and later stages and scale-out jobs read the
// plan's copy without any request.
const wslFile = "wsl-releases.json"

// kernelMode is the mode asked for: the option, else the module list's,
// else auto.
func (r *runner) kernelMode() string {
	if r.o.KernelMode != "" {
		return r.o.KernelMode
	}
	if r.list.Kernel.Mode != "" {
		return r.list.Kernel.Mode
	}
	return ModeAuto
}

// wslReleases returns the WSL release mapping, listing it on first use
// (one conditional request when nothing changed since the cached copy).
func (r *runner) wslReleases(ctx context.Context) ([]fetch.WSLRelease, error) {
	if r.wsl != nil || r.wslFailed != nil {
		return r.wsl, r.wslFailed
	}
	c, err := r.github()
	if err != nil {
		return nil, err
	}
	o := fetch.WSLOptions{Repo: r.o.WSLRepo, CacheFile: filepath.Join(r.o.WorkDir, wslFile), Log: r.log}
	// Stages after the plan decide as the plan did, from the mapping it
	// listed: no request (the build stage runs without the token).
	if r.o.Stage == StageKernel || r.o.Stage == StageModules || r.o.Stage == StagePackage {
		if _, err := os.Stat(o.CacheFile); err == nil {
			o.Offline = true
		}
	}
	rels, err := fetch.WSLReleases(ctx, c, o)
	if err != nil {
		r.wslFailed = fmt.Errorf("pipeline: %w", err)
		return nil, r.wslFailed
	}
	r.wsl = rels
	return rels, nil
}

// needsWSL reports whether a tag selection must know which WSL releases
// ship which kernel: for a wsl track, and for stock or auto mode without
// local stock files (also for the release notes' WSL versions).
func (r *runner) needsWSL() bool {
	if r.o.StockKernel != "" || r.o.WSLMSI != "" {
		return false
	}
	return r.kernelMode() != ModeBuild || fetch.IsWSLTrack(r.o.Track)
}

// decideMode chooses k's mode and, for stock mode, its stock files,
// recording the reason.
func (r *runner) decideMode(ctx context.Context, k *kernelJob) error {
	mode := r.kernelMode()
	switch mode {
	case ModeAuto, ModeStock, ModeBuild:
	default:
		return fmt.Errorf("pipeline: kernel mode %q: want auto, stock or build", mode)
	}
	if mode == ModeBuild {
		k.mode, k.modeReason = ModeBuild, "kernel mode build: the kernel is built from the tag's source"
		return nil
	}
	sf, why, err := r.stockCandidate(ctx, k)
	if err != nil {
		return err
	}
	if sf == nil {
		if mode == ModeStock {
			return fmt.Errorf("pipeline: %s: kernel mode stock: %s; use kernel: build (or auto)", k.name, why)
		}
		k.mode, k.modeReason = ModeBuild, "kernel mode auto: "+why+"; the kernel is built from the tag's source (not Microsoft's binary)"
		return nil
	}
	k.mode, k.stock, k.stockWhy = ModeStock, sf, fmt.Sprintf("kernel mode %s: %s", mode, why)
	if r.hasFragment() {
		// Whether the fragment's options can be built as modules of
		// Microsoft's kernel is decided from the source, in the kernel
		// stage (planFragment), which may still choose build mode (auto).
		k.modeReason = k.stockWhy + "; the config fragment is checked against the kernel source before the kernel stage: options whose code is module-only are built as in-tree modules for Microsoft's kernel"
		if mode == ModeAuto {
			k.modeReason += ", anything else builds the kernel"
		}
		return nil
	}
	k.modeReason = k.stockWhy + "; the modules are built for Microsoft's kernel, which the release carries unchanged"
	return nil
}

// hasFragment reports whether the module list has a config fragment.
func (r *runner) hasFragment() bool { return r.fragment != nil && len(r.fragment.Lines) > 0 }

// stockCandidate finds Microsoft's files for k: the given files or MSI,
// else the installer of a WSL release that ships k's kernel. It returns
// nil and the reason when there is none.
func (r *runner) stockCandidate(ctx context.Context, k *kernelJob) (*stockFiles, string, error) {
	switch {
	case r.o.StockKernel != "" || r.o.StockModules != "":
		if r.o.StockKernel == "" || r.o.StockModules == "" {
			return nil, "", fmt.Errorf("pipeline: stock mode needs both the stock kernel and the stock modules image")
		}
		kd, err := digest.File(r.o.StockKernel)
		if err != nil {
			return nil, "", fmt.Errorf("pipeline: stock kernel: %w", err)
		}
		md, err := digest.File(r.o.StockModules)
		if err != nil {
			return nil, "", fmt.Errorf("pipeline: stock modules: %w", err)
		}
		return &stockFiles{kernel: r.o.StockKernel, modules: r.o.StockModules, pin: "files:" + kd + ":" + md}, "Microsoft's kernel and modules were given", nil
	case r.o.WSLMSI != "":
		d, err := digest.File(r.o.WSLMSI)
		if err != nil {
			return nil, "", fmt.Errorf("pipeline: WSL installer: %w", err)
		}
		return &stockFiles{msi: r.o.WSLMSI, pin: "msi:" + d}, "the WSL installer " + filepath.Base(r.o.WSLMSI) + " was given", nil
	case k.local != "" && r.o.WSLVersion == "" || k.tag == "":
		// A local source stays offline: no WSL lookup unless asked for.
		return nil, "no stock kernel was given", nil
	}
	rels, err := r.wslReleases(ctx)
	if err != nil {
		if r.kernelMode() == ModeStock {
			return nil, "", err
		}
		// Auto mode without the WSL releases (a GitHub Enterprise without
		// microsoft/WSL, say) builds the kernel.
		return nil, fmt.Sprintf("the WSL releases could not be listed (%v)", err), nil
	}
	ships := fetch.ShippedBy(rels, k.tag)
	k.wsl = ships
	rel := pickWSL(ships, r.o.WSLVersion)
	if rel == nil {
		if r.o.WSLVersion != "" {
			return nil, fmt.Sprintf("WSL %s does not ship %s", r.o.WSLVersion, k.tag), nil
		}
		return nil, "no WSL release ships " + k.tag, nil
	}
	a, err := rel.MSIFor(r.arch)
	if err != nil {
		return nil, "", fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	pin := "msi-asset:" + a.Name + ":" + a.Digest
	if a.Digest == "" {
		pin = fmt.Sprintf("msi-asset:%s:id%d:%d", a.Name, a.ID, a.Size)
	}
	return &stockFiles{wsl: rel, pin: pin}, fmt.Sprintf("WSL %s ships %s (%s)", rel.Version, k.tag, a.Name), nil
}

// pickWSL chooses the release whose installer to use: the one asked for,
// else the newest stable one, else the newest.
func pickWSL(ships []fetch.WSLRelease, version string) *fetch.WSLRelease {
	if version != "" {
		for i := range ships {
			if fetch.CompareWSLVersions(ships[i].Version, version) == 0 {
				return &ships[i]
			}
		}
		return nil
	}
	var best *fetch.WSLRelease
	for i := range ships {
		r := &ships[i]
		if best == nil || best.Prerelease && !r.Prerelease ||
			best.Prerelease == r.Prerelease && fetch.CompareWSLVersions(r.Version, best.Version) > 0 {
			best = r
		}
	}
	return best
}

// stockPaths makes k's stock files available as local paths: the given
// files, or the kernel and modules image extracted from the installer
// (cached by the installer's sha256).
func (r *runner) stockPaths(ctx context.Context, k *kernelJob) (kernel, modules string, msi *manifest.MSI, err error) {
	sf := k.stock
	st := sf.extracted
	switch {
	case sf.kernel != "":
		return sf.kernel, sf.modules, nil, nil
	case st != nil: // extracted by an earlier call
	case sf.msi != "":
		st, err = wslmsi.Open(ctx, sf.msi, r.o.CacheDir, r.log)
	default:
		c, cerr := r.github()
		if cerr != nil {
			return "", "", nil, cerr
		}
		st, err = wslmsi.Fetch(ctx, c, *sf.wsl, r.arch, filepath.Join(k.dir, "msi"), r.o.CacheDir, r.log)
	}
	if err != nil {
		return "", "", nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	if sf.extracted == nil {
		sf.extracted = st
		r.log.Printf("%s: stock files from %s (sha256 %s): kernel %s, %s %s", k.name, st.MSIName, short(st.MSISHA256),
			short(st.KernelSHA256), st.ModulesName, short(st.ModulesSHA256))
	}
	return st.Kernel, st.Modules, &manifest.MSI{Name: st.MSIName, WSLVersion: st.WSLVersion, SHA256: st.MSISHA256, URL: st.URL}, nil
}

// wslManifest lists the WSL releases that ship k's kernel for the
// manifest (and so the release notes).
func wslManifest(rels []fetch.WSLRelease) []manifest.WSLRelease {
	var out []manifest.WSLRelease
	for _, r := range rels {
		out = append(out, manifest.WSLRelease{Version: strings.TrimSpace(r.Version), Prerelease: r.Prerelease})
	}
	return out
}
