package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kver"

	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/intree"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// CacheKeyPrefix starts every kernel cache key the plan stage outputs
// (for actions/cache). The version changes when the cache layout does.
const CacheKeyPrefix = "wsl-modules-kernel-v1-"

// Plan is what the plan stage decides before anything is fetched or
// built.
type Plan struct {
	// Arch is the build architecture.
	Arch string
	// Build lists the kernels to build (tags, or "local"), oldest first;
	// UpToDate the selected ones a published release already has.
	Build, UpToDate []string
	// Summary explains the tag selection in one line.
	Summary string
	// CacheKey and CacheRestorePrefix are the actions/cache key for the
	// kernel cache dir (empty when nothing is to be built).
	CacheKey, CacheRestorePrefix string

	jobs []*kernelJob
}

// kernelJob is the state of one kernel through the stages.
type kernelJob struct {
	// name is the work dir name; tag the kernel tag ("" for a local
	// source until derived); local the local source path.
	name, tag, local string
	dir              string
	inputs           *manifest.Inputs
	hash             string
	upToDate         bool
	upToDateURL      string
	// mode is ModeStock or ModeBuild, modeReason why; stock locates the
	// stock files; wsl are the WSL releases that ship the kernel.
	mode, modeReason string
	stock            *stockFiles
	// stockWhy starts the reason of stock mode ("kernel mode auto: WSL
	// 2.6.1 ships ..."); intree is the config fragment's plan in stock
	// mode (planFragment, or kernel.json).
	stockWhy string
	intree   *intree.Plan
	msi      *manifest.MSI
	wsl      []fetch.WSLRelease

	kernel       *kbuild.Kernel
	source       manifest.Source
	cacheWritten bool
	modules      []ModuleReport
	manifest     *manifest.Manifest
	publish      *release.Result
	release      string
}

func (k *kernelJob) result() *KernelResult {
	kr := &KernelResult{Name: k.name, Tag: k.tag, UpToDate: k.upToDate, Hash: k.hash, Dir: k.dir,
		BuildDir: filepath.Join(k.dir, "build"), DistDir: filepath.Join(k.dir, "dist"),
		Manifest: k.manifest, Publish: k.publish, KernelCacheWritten: k.cacheWritten, Modules: k.modules,
		Release: k.release, Mode: k.mode, ModeReason: k.modeReason}
	if k.inputs != nil {
		kr.Arch = k.inputs.Arch
	}
	if k.kernel != nil && k.cacheWritten {
		kr.KernelSteps = k.kernel.Meta.BuildSteps
	}
	if k.manifest != nil {
		kr.Tag = k.manifest.Kernel.Tag
		kr.KernelImage = filepath.Join(kr.DistDir, release.ImageFile(k.manifest))
		kr.VHDX = filepath.Join(kr.DistDir, release.VHDXFile)
	}
	return kr
}

// plan selects the kernels and computes their inputs and the up-to-date
// state.
func (r *runner) plan(ctx context.Context) (*Plan, error) {
	p := &Plan{Arch: r.arch}
	jobs, err := r.selectJobs(ctx, p)
	if err != nil {
		return nil, err
	}
	for _, k := range jobs {
		if err := r.decideMode(ctx, k); err != nil {
			return nil, err
		}
		r.log.Printf("%s: %s", k.name, k.modeReason)
	}
	pins, err := r.modulePins(ctx)
	if err != nil {
		return nil, err
	}
	r.modPins = pins
	for _, k := range jobs {
		k.dir = filepath.Join(r.o.WorkDir, k.name)
		in, err := r.inputs(ctx, k, pins)
		if err != nil {
			return nil, err
		}
		k.inputs, k.hash = in, (&manifest.Manifest{Inputs: in}).Hash()
	}
	if r.o.Publish && r.o.Stage != StageModules && r.o.Stage != StageKernel && len(jobs) > 0 && jobs[0].tag != "" {
		if err := r.checkPublished(ctx, jobs); err != nil {
			return nil, err
		}
	}
	p.jobs = jobs
	var build []*kernelJob
	for _, k := range jobs {
		if k.upToDate {
			p.UpToDate = append(p.UpToDate, k.name)
		} else {
			p.Build = append(p.Build, k.name)
			build = append(build, k)
		}
	}
	r.setCacheKey(p, build)
	return p, nil
}

// selectJobs makes the kernel jobs of the run: the local source, the
// given tag, or the tags the track selects; it sets p.Summary.
func (r *runner) selectJobs(ctx context.Context, p *Plan) ([]*kernelJob, error) {
	src := r.o.KernelSource
	switch {
	case src != "" && isLocal(src):
		abs, err := filepath.Abs(src)
		if err != nil {
			return nil, fmt.Errorf("pipeline: kernel source: %w", err)
		}
		if r.o.KernelTag != "" {
			if _, ok := kver.Parse(r.o.KernelTag); !ok {
				return nil, fmt.Errorf("pipeline: kernel tag %q: want linux-msft-wsl-<a>.<b>.<c>.<d>", r.o.KernelTag)
			}
		} else if r.o.Publish {
			return nil, fmt.Errorf("pipeline: publishing a build of the local kernel source %s needs its kernel tag (--tag)", src)
		}
		p.Summary = "local kernel source " + src
		return []*kernelJob{{name: LocalName, tag: r.o.KernelTag, local: abs}}, nil
	case src != "":
		tag := src
		if !strings.HasPrefix(tag, kver.TagPrefix) {
			tag = kver.TagPrefix + tag
		}
		if _, ok := kver.Parse(tag); !ok {
			return nil, fmt.Errorf("pipeline: kernel source %q: not a directory, a tarball or a kernel tag (linux-msft-wsl-<a>.<b>.<c>.<d>)", src)
		}
		p.Summary = "kernel tag " + tag
		return []*kernelJob{{name: tag, tag: tag}}, nil
	}
	return r.trackedJobs(ctx, p)
}

// trackedJobs selects the kernel tags of the track (with the WSL
// releases when the track or the kernel mode needs them).
func (r *runner) trackedJobs(ctx context.Context, p *Plan) ([]*kernelJob, error) {
	c, err := r.github()
	if err != nil {
		return nil, err
	}
	released := ""
	if r.o.Track == fetch.TrackAllNew {
		if r.o.TargetRepo == "" {
			return nil, fmt.Errorf("pipeline: track all-new needs the target repository (GITHUB_REPOSITORY or --target-repo)")
		}
		x, err := r.releasesOf(ctx)
		if err != nil {
			return nil, err
		}
		if released, _, err = x.NewestKernel(ctx, r.arch); err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
	}
	so := fetch.SelectOptions{Repo: r.o.KernelRepo, Track: r.o.Track, MaxTags: r.o.MaxTags, Released: released, Log: r.log}
	if r.needsWSL() {
		if so.WSL, err = r.wslReleases(ctx); err != nil {
			if fetch.IsWSLTrack(r.o.Track) || r.kernelMode() == ModeStock {
				return nil, err
			}
			// Auto mode without the WSL releases (a GitHub Enterprise
			// without microsoft/WSL, say) builds the kernel.
			r.log.Printf("warning: %v; without the WSL releases no stock kernel is known, so kernels are built", err)
		}
	}
	sel, err := fetch.Select(ctx, c, so)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	p.Summary = sel.Summary
	for _, w := range sel.Warnings {
		r.log.Printf("warning: %s", w)
	}
	var jobs []*kernelJob
	for _, s := range sel.Selected {
		jobs = append(jobs, &kernelJob{name: s.Tag.Name, tag: s.Tag.Name, wsl: s.WSL})
	}
	return jobs, nil
}

// setCacheKey sets the Actions cache key of the kernels to build: the
// arch, their tags and source pins, the config, the fragment and the
// module list.
func (r *runner) setCacheKey(p *Plan, build []*kernelJob) {
	if len(build) == 0 {
		return
	}
	h := sha256.New()
	fmt.Fprintf(h, "arch %s\n", r.arch)
	for _, k := range build {
		fmt.Fprintf(h, "kernel %s %s\n", k.name, k.inputs.SourcePin)
		if k.inputs.KernelRepo != "" {
			fmt.Fprintf(h, "repo %s\n", k.inputs.KernelRepo)
		}
	}
	fmt.Fprintf(h, "config %s\nfragment %s\n", build[0].inputs.ConfigSHA256, build[0].inputs.FragmentSHA256)
	if b, err := os.ReadFile(r.list.File); err == nil {
		fmt.Fprintf(h, "modules %x\n", sha256.Sum256(b))
	}
	last := build[len(build)-1].name
	p.CacheRestorePrefix = CacheKeyPrefix + r.arch + "-" + last + "-"
	p.CacheKey = p.CacheRestorePrefix + hex.EncodeToString(h.Sum(nil))[:16]
}

// isLocal reports whether a kernel source names something on disk.
func isLocal(src string) bool {
	_, err := os.Stat(src)
	return err == nil
}

// modulePins pins every listed module's source before anything is fetched:
// a git ref to its commit (git ls-remote), a URL to its sha256, a path to
// the digest of its tree.
func (r *runner) modulePins(ctx context.Context) ([]manifest.InputModule, error) {
	out := make([]manifest.InputModule, 0, len(r.list.Modules))
	for i := range r.list.Modules {
		m := &r.list.Modules[i]
		im := manifest.InputModule{Name: m.Name, Kind: m.Kind(), Make: m.Make}
		switch {
		case m.Autoload.All:
			im.Autoload = "all"
		case len(m.Autoload.Names) > 0:
			im.Autoload = strings.Join(m.Autoload.Names, ",")
		}
		switch m.Kind() {
		case modlist.KindGit:
			commit, err := resolveGitRef(ctx, m.Git, m.Ref)
			if err != nil {
				return nil, fmt.Errorf("pipeline: %s:%d: modules[%d] (%s): %w", r.list.File, m.Line, i, m.Name, err)
			}
			im.Where, im.Pin = m.Git, commit
		case modlist.KindURL:
			im.Where, im.Pin = m.URL, strings.ToLower(m.SHA256)
		default:
			dir := r.list.SourceDir(m)
			d, err := digest.Tree(ctx, dir)
			if err != nil {
				return nil, fmt.Errorf("pipeline: %s:%d: modules[%d] (%s): path %s: %w", r.list.File, m.Line, i, m.Name, dir, err)
			}
			im.Where, im.Pin = m.Path, "tree:"+d
		}
		out = append(out, im)
	}
	return out, nil
}

var hexCommit = regexp.MustCompile(`^[0-9a-f]{40}$`)

// resolveGitRef returns the commit a git ref names, with git ls-remote
// (a commit id is returned as is). An annotated tag resolves to the
// commit it points to.
func resolveGitRef(ctx context.Context, repo, ref string) (string, error) {
	if hexCommit.MatchString(ref) {
		return ref, nil
	}
	cmd := exec.CommandContext(ctx, "git", "ls-remote", "--", repo, ref, ref+"^{}")
	cmd.Env = safeenv.GitEnviron()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git ls-remote %s %s: %v: %s", repo, ref, err, strings.TrimSpace(stderr.String()))
	}
	found := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		sha, name, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if ok {
			found[name] = sha
		}
	}
	for _, name := range []string{"refs/tags/" + ref + "^{}", "refs/tags/" + ref, "refs/heads/" + ref, ref + "^{}", ref} {
		if sha, ok := found[name]; ok {
			return sha, nil
		}
	}
	return "", fmt.Errorf("ref %q not found in %s", ref, repo)
}

// inputs computes the pre-build pins of one kernel.
func (r *runner) inputs(ctx context.Context, k *kernelJob, pins []manifest.InputModule) (*manifest.Inputs, error) {
	in := &manifest.Inputs{Tag: k.tag, Arch: r.arch, Layout: r.o.Layout, Headers: r.o.Headers, Modules: pins}
	if k.local == "" && !strings.EqualFold(r.o.KernelRepo, fetch.DefaultRepo) {
		// A fork may use Microsoft's tag names for other sources.
		in.KernelRepo = r.o.KernelRepo
	}
	if k.local != "" {
		st, err := os.Stat(k.local)
		if err != nil {
			return nil, fmt.Errorf("pipeline: kernel source: %w", err)
		}
		if st.IsDir() {
			d, err := digest.Tree(ctx, k.local)
			if err != nil {
				return nil, fmt.Errorf("pipeline: kernel source %s: %w", k.local, err)
			}
			in.SourcePin = "tree:" + d
		} else {
			d, err := digest.File(k.local)
			if err != nil {
				return nil, fmt.Errorf("pipeline: kernel source: %w", err)
			}
			in.SourcePin = "sha256:" + d
		}
	}
	if r.o.ConfigFile != "" {
		d, err := digest.File(r.o.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("pipeline: config: %w", err)
		}
		in.ConfigSHA256 = d
	}
	if r.fragment != nil {
		s := sha256.Sum256([]byte(r.fragment.Text()))
		in.FragmentSHA256 = hex.EncodeToString(s[:])
	}
	if k.mode == ModeStock {
		in.Mode, in.Stock = ModeStock, k.stock.pin
		if r.hasFragment() && r.kernelMode() == ModeAuto {
			// The kernel stage decides from the source (planFragment).
			in.Mode = ModeAuto
		}
	}
	return in, nil
}

// releasesOf returns the target repository's release index, listing it
// on first use.
func (r *runner) releasesOf(ctx context.Context) (*release.Index, error) {
	if r.releases != nil {
		return r.releases, nil
	}
	c, err := r.github()
	if err != nil {
		return nil, err
	}
	x, err := release.List(ctx, c, r.o.TargetRepo, r.o.ReleasePrefix)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	r.releases = x
	return x, nil
}

// checkPublished marks the kernels whose newest published release (any
// revision, for the arch) carries the same manifest hash as up to date.
func (r *runner) checkPublished(ctx context.Context, jobs []*kernelJob) error {
	if r.o.TargetRepo == "" {
		return fmt.Errorf("pipeline: publishing needs the target repository (GITHUB_REPOSITORY or --target-repo)")
	}
	x, err := r.releasesOf(ctx)
	if err != nil {
		return err
	}
	for _, k := range jobs {
		f, err := x.Family(ctx, k.tag, r.arch)
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		if n := f.Newest; n != nil && release.HashFromBody(n.GetBody()) == k.hash {
			k.upToDate, k.upToDateURL = true, n.GetHTMLURL()
		}
	}
	return nil
}
