package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/intree"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
)

// ShardFile is the record of a modules stage output:
// WORK/<kernel>/shards/<i>-of-<n>/shard.json.
const ShardFile = "shard.json"

// shardRecord is the content of shard.json.
type shardRecord struct {
	Shard int `json:"shard"`
	Of    int `json:"of"`
	// Hash is the manifest hash of the build's inputs; KernelKey the
	// kernel cache entry the modules were built against.
	Hash      string        `json:"hash"`
	KernelKey string        `json:"kernel_key"`
	Release   string        `json:"release"`
	Modules   []shardModule `json:"modules"`
}

type shardModule struct {
	manifest.Module
	Tail  []string `json:"tail,omitempty"`
	Bytes int64    `json:"bytes"`
}

// ParseShard parses "i/n" (1 <= i <= n).
func ParseShard(s string) (i, n int, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "/")
	if ok {
		i, err = strconv.Atoi(a)
		if err == nil {
			n, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || n < 1 || i < 1 || i > n {
		return 0, 0, fmt.Errorf("shard %q: want i/n with 1 <= i <= n, e.g. 2/3", s)
	}
	return i, n, nil
}

// ShardModules splits the module list into n shards and returns the
// indexes of shard i (1-based). Modules connected by depends: stay in one
// shard (a module and the modules it uses must be built together); the
// groups are dealt out in list order to the shard with the fewest modules.
func ShardModules(list *modlist.List, i, n int) []int {
	parent := make([]int, len(list.Modules))
	idx := map[string]int{}
	for j := range list.Modules {
		parent[j] = j
		idx[list.Modules[j].Name] = j
	}
	var find func(int) int
	find = func(x int) int {
		for parent[x] != x {
			parent[x] = parent[parent[x]]
			x = parent[x]
		}
		return x
	}
	for j, m := range list.Modules {
		for _, d := range m.Depends {
			if k, ok := idx[d]; ok {
				a, b := find(j), find(k)
				if a < b {
					parent[b] = a
				} else {
					parent[a] = b
				}
			}
		}
	}
	groups := map[int][]int{}
	var roots []int
	for j := range list.Modules {
		rt := find(j)
		if _, ok := groups[rt]; !ok {
			roots = append(roots, rt)
		}
		groups[rt] = append(groups[rt], j)
	}
	sort.Ints(roots)
	load := make([]int, n)
	var out []int
	for _, rt := range roots {
		best := 0
		for s := 1; s < n; s++ {
			if load[s] < load[best] {
				best = s
			}
		}
		load[best] += len(groups[rt])
		if best == i-1 {
			out = append(out, groups[rt]...)
		}
	}
	sort.Ints(out)
	return out
}

func shardDir(k *kernelJob, i, n int) string {
	return filepath.Join(k.dir, "shards", fmt.Sprintf("%d-of-%d", i, n))
}

// buildModules builds shard i of n of the module list against k.kernel
// into WORK/<kernel>/shards/<i>-of-<n>/ (modules/, logs/, shard.json),
// atomically. An existing shard for the same inputs and kernel is kept,
// unless a module failed in it (it is built again). A cancelled build
// writes no shard.
func (r *runner) buildModules(ctx context.Context, k *kernelJob, i, n int) error {
	dir := shardDir(k, i, n)
	prev, err := readShard(dir)
	if err == nil && prev.Hash == k.hash && prev.KernelKey == k.kernel.Meta.Key && !prev.failed() {
		r.log.Printf("%s: modules shard %d/%d already built (%s)", k.name, i, n, dir)
		for _, m := range prev.Modules {
			k.modules = append(k.modules, r.report(k, m, filepath.Join(dir, "logs", m.Name+".log")))
		}
		return nil
	}
	steps := map[string]int64{}
	if err == nil {
		for _, m := range prev.Modules {
			if m.Steps > 0 && m.Status == manifest.StatusOK { // a failed build stopped early
				steps[m.Name] = m.Steps
			}
		}
	}
	sub := *r.list
	sub.Modules = nil
	for _, j := range ShardModules(r.list, i, n) {
		sub.Modules = append(sub.Modules, r.list.Modules[j])
	}
	out, err := atomicfile.CreateDir(dir, true)
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	defer out.Abort()
	rec := shardRecord{Shard: i, Of: n, Hash: k.hash, KernelKey: k.kernel.Meta.Key, Release: k.kernel.Meta.Release, Modules: []shardModule{}}
	if err := r.buildShard(ctx, k, &sub, k.inTreeUnits(i), steps, out.Tmp, &rec); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(out.Tmp, ShardFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	if err := out.Commit(); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	var failed []string
	for _, m := range rec.Modules {
		rep := r.report(k, m, filepath.Join(dir, "logs", m.Name+".log"))
		k.modules = append(k.modules, rep)
		if r.o.Hooks.Module != nil {
			r.o.Hooks.Module(rep)
		}
		if m.Status == manifest.StatusFailed {
			failed = append(failed, m.Name)
		}
	}
	if len(failed) > 0 && !r.o.KeepGoing {
		return fmt.Errorf("pipeline: %s: %d module(s) failed: %s (logs in %s; keep-going publishes without them)",
			k.name, len(failed), strings.Join(failed, ", "), filepath.Join(dir, "logs"))
	}
	return nil
}

// failed reports whether a module of the shard failed to build. Such a
// shard is used by the package stage (keep-going leaves the module out)
// but never reused by a later modules stage, which builds it again.
func (rec *shardRecord) failed() bool {
	for _, m := range rec.Modules {
		if m.Status == manifest.StatusFailed {
			return true
		}
	}
	return false
}

func readShard(dir string) (*shardRecord, error) {
	b, err := os.ReadFile(filepath.Join(dir, ShardFile))
	if err != nil {
		return nil, err
	}
	var rec shardRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ShardFile), err)
	}
	return &rec, nil
}

// report makes the hook's view of a module build.
func (r *runner) report(k *kernelJob, m shardModule, logPath string) ModuleReport {
	rep := ModuleReport{Kernel: k.name, Module: m.Module, LogPath: logPath, Bytes: m.Bytes, Tail: m.Tail,
		BuildDir: modbuild.BuildDir(filepath.Join(k.dir, "modwork"), m.Name)}
	for j := range r.list.Modules {
		lm := &r.list.Modules[j]
		if lm.Name != m.Name {
			continue
		}
		if lm.Kind() == modlist.KindPath {
			rep.SourceDir = r.list.SourceDir(lm)
		} else {
			rep.SourceDir = filepath.Join(r.o.WorkDir, "modsrc", m.Name)
		}
	}
	return rep
}

// fetchModule is the modbuild.SourceFetcher: it fetches a git or url module
// (a git ref at the commit pinned by the plan) into WORK/modsrc/<name>/
// once, and copies it to dest for the build.
func (r *runner) fetchModule(ctx context.Context, m modlist.Module, dest string) (manifest.Source, error) {
	cache := filepath.Join(r.o.WorkDir, "modsrc", m.Name)
	pinPath := cache + ".json"
	var want string
	for _, p := range r.modPins {
		if p.Name == m.Name {
			want = p.Pin
		}
	}
	var src manifest.Source
	if b, err := os.ReadFile(pinPath); err == nil && json.Unmarshal(b, &src) == nil && src.Pin() == want && want != "" {
		if _, err := os.Stat(cache); err == nil {
			return src, atomicfile.CopyTree(ctx, cache, dest, atomicfile.CopyOptions{})
		}
	}
	spec := fetch.ModuleSpec{Name: m.Name, Git: m.Git, Ref: m.Ref, URL: m.URL, SHA256: m.SHA256}
	if m.Kind() == modlist.KindGit && want != "" {
		spec.Ref = want
	}
	if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
		return manifest.Source{}, err
	}
	var err error
	if strings.HasPrefix(spec.URL, "file:") {
		os.RemoveAll(cache)
		src, err = modbuild.LocalFetcher(ctx, m, cache)
	} else {
		f := &fetch.Fetcher{Progress: r.log, Force: true}
		if spec.URL != "" {
			if f.Client, err = r.github(); err != nil {
				return manifest.Source{}, err
			}
		}
		src, err = f.Module(ctx, spec, cache)
	}
	if err != nil {
		return manifest.Source{}, err
	}
	if m.Kind() == modlist.KindGit {
		src.Ref = m.Ref
	}
	b, _ := json.MarshalIndent(src, "", "  ")
	if err := atomicfile.WriteFile(pinPath, append(b, '\n'), 0o644); err != nil {
		return manifest.Source{}, err
	}
	return src, atomicfile.CopyTree(ctx, cache, dest, atomicfile.CopyOptions{})
}

// buildShard builds the modules of sub and the in-tree units into the
// shard's directory tmp (modules/ and logs/) and records them in rec;
// steps are the modules' kbuild steps in the shard's previous build.
func (r *runner) buildShard(ctx context.Context, k *kernelJob, sub *modlist.List, units []intree.Unit, steps map[string]int64, tmp string, rec *shardRecord) error {
	modDir := filepath.Join(tmp, "modules")
	logDir := filepath.Join(tmp, "logs")
	for _, d := range []string{modDir, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
	}
	if len(sub.Modules) == 0 && len(units) == 0 {
		return nil
	}
	work := filepath.Join(k.dir, "modwork")
	os.RemoveAll(work)
	defer os.RemoveAll(work)
	src := ""
	if k.mode == ModeStock {
		// The CRC proof reads the kernel source.
		var err error
		if src, err = r.sourceDir(ctx, k); err != nil {
			return err
		}
	}
	res, err := modbuild.BuildModules(ctx, modbuild.ModulesOptions{Kernel: k.kernel, List: sub, Fetch: r.fetchModule,
		WorkDir: work, ModulesDir: modDir, LogDir: logDir, Jobs: r.o.Jobs, KernelSource: src, InTree: units, PreviousSteps: steps, Progress: r.log})
	if err != nil {
		return fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	// A cancelled build reports its modules as failed: never record
	// that as this shard's output.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pipeline: %s: modules: %w", k.name, err)
	}
	for _, m := range res {
		sm := shardModule{Module: m.Module, Tail: m.Tail}
		sm.Log = "logs/" + m.Name + ".log"
		for _, f := range m.Files {
			if st, err := os.Stat(filepath.Join(modDir, filepath.FromSlash(f))); err == nil {
				sm.Bytes += st.Size()
			}
		}
		if sm.Status == manifest.StatusFailed {
			sm.Files = nil
		}
		rec.Modules = append(rec.Modules, sm)
	}
	return nil
}
