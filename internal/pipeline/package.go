package pipeline

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
)

// assemble merges the kernel and every shard's modules into
// WORK/<kernel>/build/ (the layout of `build --out`), runs depmod on its
// staging tree and writes build-manifest.json, all in a temporary
// directory renamed into place at the end. An existing build/ for the same
// inputs and kernel is kept.
func (r *runner) assemble(ctx context.Context, k *kernelJob) error {
	dir := filepath.Join(k.dir, "build")
	if r.assembled(k) {
		m, _ := manifest.Read(filepath.Join(dir, manifest.FileName))
		r.log.Printf("%s: build output already assembled (%s)", k.name, dir)
		k.manifest = m
		if len(k.modules) == 0 {
			for _, mm := range m.Modules {
				k.modules = append(k.modules, r.report(k, shardModule{Module: mm}, filepath.Join(dir, mm.Log)))
			}
		}
		return nil
	}
	out, err := atomicfile.CreateDir(dir, true)
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	defer out.Abort()
	var m *manifest.Manifest
	err = r.stage(k, "assemble", func() error {
		var err error
		m, err = r.assembleInto(ctx, k, out.Tmp)
		return err
	})
	if err != nil {
		return err
	}
	if err := m.Write(filepath.Join(out.Tmp, manifest.FileName)); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	if err := out.Commit(); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	k.manifest = m
	return nil
}

// assembled reports whether WORK/<kernel>/build holds the output for k's
// inputs and kernel.
func (r *runner) assembled(k *kernelJob) bool {
	m, err := manifest.Read(filepath.Join(k.dir, "build", manifest.FileName))
	return err == nil && m.Hash() == k.hash && m.Kernel.CacheKey == k.kernel.Meta.Key && r.keepGoingFits(m)
}

// keepGoingFits reports whether an earlier output's manifest suits this
// run's keep-going setting: output that left failed modules out (status
// skipped) was only allowed by keep-going, and a run without it must fail
// on those modules instead of reusing it.
func (r *runner) keepGoingFits(m *manifest.Manifest) bool {
	if r.o.KeepGoing {
		return true
	}
	for _, mm := range m.Modules {
		if mm.Status == manifest.StatusSkipped {
			return false
		}
	}
	return true
}

// sameModuleStatus reports whether two manifests list the same modules
// with the same status: a dist/ made from an earlier build/ in which a
// module was left out (keep-going) does not match a build/ in which it
// was built since.
func sameModuleStatus(a, b *manifest.Manifest) bool {
	if len(a.Modules) != len(b.Modules) {
		return false
	}
	for i := range a.Modules {
		if a.Modules[i].Name != b.Modules[i].Name || a.Modules[i].Status != b.Modules[i].Status {
			return false
		}
	}
	return true
}

// assembleInto fills the temporary build dir tmp (modbuild.Assemble: the
// kernel's files, the stock modules plus every shard's, depmod -e -E) and
// returns its manifest.
func (r *runner) assembleInto(ctx context.Context, k *kernelJob, tmp string) (*manifest.Manifest, error) {
	kern := k.kernel
	// Shards: every shard of one split must be present, built against
	// this kernel for these inputs.
	only := 0
	if r.o.Stage == StageAll {
		only = 1
	}
	shards, err := r.shards(k, only)
	if err != nil {
		return nil, err
	}
	added, byName, err := r.readShards(k, shards, tmp)
	if err != nil {
		return nil, err
	}
	m := &manifest.Manifest{Schema: manifest.SchemaVersion, Tool: r.o.Tool, Kernel: kern.ManifestKernel(),
		Modules: []manifest.Module{}, Layout: r.o.Layout, Headers: r.o.Headers, Inputs: k.inputs}
	m.Kernel.Tag, m.Kernel.Source = k.tag, k.source
	if m.Kernel.Mode == "" {
		m.Kernel.Mode = ModeBuild
	}
	m.Kernel.ModeReason, m.Kernel.WSL = k.modeReason, wslManifest(k.wsl)
	if st := m.Kernel.Stock; st != nil {
		c := *st
		c.MSI, c.KernelPath, c.ModulesPath = k.msi, "", ""
		if k.msi == nil && k.stock != nil {
			c.KernelPath, c.ModulesPath = k.stock.kernel, k.stock.modules
		}
		m.Kernel.Stock = &c
	}
	if err := r.moduleStatus(k, m, byName); err != nil {
		return nil, err
	}
	devel := r.o.Headers == HeadersDevel
	uapi := r.o.Headers == HeadersUAPI || devel && r.o.Layout == "nested"
	res, err := modbuild.Assemble(ctx, tmp, modbuild.AssembleOptions{Kernel: kern, Added: added, Devel: devel, UAPI: uapi, Progress: r.log})
	if res != nil && res.Depmod != nil {
		for _, w := range append(res.Depmod.LoadWarnings, res.Depmod.Warnings...) {
			r.log.Printf("depmod: %s", w)
		}
		r.log.Printf("depmod: %d modules indexed", res.Depmod.Modules)
	}
	if err != nil {
		return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	if res.Devel != nil {
		r.log.Printf("%s: kernel-devel tree: %d files, %s, host programs need glibc %s", k.name, res.Devel.Files,
			progress.Bytes(res.Devel.Bytes), res.Devel.GLIBC)
	}
	if err := r.autoload(m, res.Tree); err != nil {
		return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	return m, nil
}

// autoload records in m the modules WSL loads at boot (autoload: in the
// list, for WSL's loadKernelModules=), after checking that every name
// resolves in the staged tree, as modprobe would find it.
func (r *runner) autoload(m *manifest.Manifest, tree *modtree.Tree) error {
	built := map[string][]string{}
	for _, mm := range m.Modules {
		if mm.Status == manifest.StatusOK {
			built[mm.Name] = mm.Files
		}
	}
	names := map[string]bool{}
	for _, e := range tree.Modules {
		names[kmodule.ModName(e.Path)] = true
	}
	if err := r.list.CheckAutoload(built, func(n string) bool { return names[n] }); err != nil {
		return err
	}
	for i := range m.Modules {
		if files, ok := built[m.Modules[i].Name]; ok {
			m.Modules[i].Autoload = r.list.AutoloadNames(map[string][]string{m.Modules[i].Name: files})
		}
	}
	return nil
}

// readShards loads the modules of every shard (refusing links: shard
// artefacts are made by third-party build code), copies their logs into
// tmp/logs and returns the modules with the shards' records by name.
func (r *runner) readShards(k *kernelJob, shards []string, tmp string) ([]*modtree.Entry, map[string]shardModule, error) {
	var added []*modtree.Entry
	seen := map[string]string{}
	byName := map[string]shardModule{}
	for _, sd := range shards {
		rec, err := readShard(sd)
		if err != nil {
			return nil, nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
		}
		entries, err := loadShard(sd)
		if err != nil {
			return nil, nil, fmt.Errorf("pipeline: %s: shard %s: %w", k.name, sd, err)
		}
		for _, e := range entries {
			if prev, dup := seen[e.Path]; dup {
				return nil, nil, fmt.Errorf("pipeline: %s: %s: shards %s and %s install the same file", k.name, e.Path, prev, sd)
			}
			seen[e.Path] = sd
		}
		added = append(added, entries...)
		if err := atomicfile.CopyTree(context.Background(), filepath.Join(sd, "logs"), filepath.Join(tmp, "logs"),
			atomicfile.CopyOptions{Merge: true, Links: atomicfile.LinksRefuse}); err != nil {
			return nil, nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
		}
		for _, m := range rec.Modules {
			byName[m.Name] = m
		}
	}
	return added, byName, nil
}

// loadShard parses the modules of a shard's modules/ tree. Any symlink in
// it is an error.
func loadShard(sd string) ([]*modtree.Entry, error) {
	dir := filepath.Join(sd, "modules")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink != 0 {
			err = fmt.Errorf("%s is a symbolic link, which a shard may not hold", p)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	t, err := modtree.LoadDir(dir, "")
	if err != nil {
		return nil, err
	}
	return t.Modules, nil
}

// moduleStatus records every listed module in m from the shards' records:
// a failed module is an error, or, with keep-going, left out and recorded
// as skipped, with the failure (a manifest with a failed module is never
// published).
func (r *runner) moduleStatus(k *kernelJob, m *manifest.Manifest, byName map[string]shardModule) error {
	var failed, missing []string
	var failures strings.Builder
	for _, name := range r.moduleNames(k) {
		sm, ok := byName[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		mm := sm.Module
		if mm.Status == manifest.StatusFailed && r.o.KeepGoing {
			mm.Status, mm.Error = manifest.StatusSkipped, "build failed, left out (keep-going): "+mm.Error
		}
		m.Modules = append(m.Modules, mm)
		if sm.Status == manifest.StatusFailed {
			failed = append(failed, sm.Name)
			fmt.Fprintf(&failures, "  module %s FAILED: %s\n    log: %s\n", sm.Name, sm.Error, filepath.Join(k.dir, "build", sm.Log))
			for _, l := range sm.Tail {
				fmt.Fprintf(&failures, "    | %s\n", l)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("pipeline: %s: no shard built module(s) %s (run the modules stage for every shard first)", k.name, strings.Join(missing, ", "))
	}
	if len(failed) == 0 {
		return nil
	}
	if !r.o.KeepGoing {
		return fmt.Errorf("pipeline: %s: %w:\n%s", k.name, modbuild.ErrModulesFailed, strings.TrimRight(failures.String(), "\n"))
	}
	bar := strings.Repeat("!", 72)
	r.log.Printf("%s\n!!! WARNING: keep-going: %d module(s) FAILED and are NOT in the image: %s\n%s%s", bar, len(failed),
		strings.Join(failed, ", "), failures.String(), bar)
	return nil
}

// shards returns the shard directories of one complete split for k: all
// of 1..n of the same n, each recorded for k's inputs and kernel.
// With only > 0, only the split into that many shards is considered.
func (r *runner) shards(k *kernelJob, only int) ([]string, error) {
	matches, _ := filepath.Glob(filepath.Join(k.dir, "shards", "*-of-*"))
	byN := map[int]map[int]string{}
	for _, d := range matches {
		var i, n int
		if _, err := fmt.Sscanf(filepath.Base(d), "%d-of-%d", &i, &n); err != nil || only > 0 && n != only {
			continue
		}
		rec, err := readShard(d)
		if err != nil || rec.Hash != k.hash || rec.KernelKey != k.kernel.Meta.Key || rec.Shard != i || rec.Of != n {
			continue
		}
		if byN[n] == nil {
			byN[n] = map[int]string{}
		}
		byN[n][i] = d
	}
	var complete []int
	for n, got := range byN {
		if len(got) == n {
			complete = append(complete, n)
		}
	}
	switch {
	case len(complete) == 1:
		n := complete[0]
		out := make([]string, 0, n)
		for i := 1; i <= n; i++ {
			out = append(out, byN[n][i])
		}
		return out, nil
	case len(complete) > 1:
		return nil, fmt.Errorf("pipeline: %s: shards of several splits (%v) in %s; remove the stale ones", k.name, complete, filepath.Join(k.dir, "shards"))
	}
	if len(r.moduleNames(k)) == 0 {
		return nil, nil
	}
	var have []string
	for n, got := range byN {
		for i := range got {
			have = append(have, fmt.Sprintf("%d/%d", i, n))
		}
	}
	return nil, fmt.Errorf("pipeline: %s: the modules stage output is incomplete in %s (have shards %v for these inputs and kernel); run every shard of the modules stage first",
		k.name, filepath.Join(k.dir, "shards"), have)
}

// imageEpoch is the timestamp of every file in the image: the
// SOURCE_DATE_EPOCH option, else the kernel's build timestamp.
func (r *runner) imageEpoch(k *kernelJob) int64 {
	if r.o.SourceDateEpoch != 0 {
		return r.o.SourceDateEpoch
	}
	if t, err := time.Parse(kbuild.TimestampLayout, k.kernel.Meta.BuildTimestamp); err == nil {
		return t.Unix()
	}
	return 0
}

// image writes WORK/<kernel>/dist/ (atomically): the kernel image,
// modules.vhdx, build-manifest.json with the image recorded, and the
// release files (SHA256SUMS, wslconfig.txt, release-notes.md,
// build-logs.tar.gz). An existing dist/ for the same inputs is kept.
func (r *runner) image(ctx context.Context, k *kernelJob) error {
	dir := filepath.Join(k.dir, "dist")
	if m, err := manifest.Read(filepath.Join(dir, manifest.FileName)); err == nil && m.Hash() == k.hash && m.Image != nil &&
		m.Kernel.CacheKey == k.manifest.Kernel.CacheKey && r.keepGoingFits(m) && sameModuleStatus(m, k.manifest) {
		if _, err := os.Stat(filepath.Join(dir, release.SumsFile)); err == nil && r.samePrefix(dir, m) {
			r.log.Printf("%s: dist already written (%s)", k.name, dir)
			k.manifest = m
			return nil
		}
	}
	bdir := filepath.Join(k.dir, "build")
	out, err := atomicfile.CreateDir(dir, true)
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	defer out.Abort()
	m := *k.manifest
	opts := image.Options{ModuleDir: filepath.Join(bdir, "staging", "lib", "modules", m.Kernel.Release), Release: m.Kernel.Release, Layout: image.Layout(r.o.Layout),
		Slack: image.DefaultSlack, SourceDateEpoch: r.imageEpoch(k)}
	switch r.o.Headers {
	case HeadersDevel:
		opts.Devel = filepath.Join(bdir, "kernel-devel")
		if r.o.Layout == "nested" {
			opts.Headers = filepath.Join(bdir, "headers")
		}
	case HeadersUAPI:
		opts.Headers = filepath.Join(bdir, "headers")
	}
	img, err := image.Build(ctx, opts, filepath.Join(out.Tmp, release.VHDXFile), r.log)
	if err != nil {
		return fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	m.Image = &manifest.Image{File: release.VHDXFile, Size: img.Size, SHA256: img.SHA256, RawSHA256: img.RawSHA256,
		Files: img.Files, HeadersBytes: img.DevelBytes + img.HeadersBytes}
	r.log.Printf("%s: %s: %s (%d files, %s of content, %s disk)", k.name, release.VHDXFile, progress.Bytes(img.Size), img.Files,
		progress.Bytes(img.ContentBytes), progress.Bytes(img.DiskSize))
	if err := atomicfile.CopyFile(filepath.Join(bdir, m.Kernel.ImageFile), filepath.Join(out.Tmp, m.Kernel.ImageFile), 0); err != nil {
		return fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	if err := m.Write(filepath.Join(out.Tmp, manifest.FileName)); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	if _, err := release.PrepareDist(r.prepareOptions(k, out.Tmp, bdir)); err != nil {
		return fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	if err := out.Commit(); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	k.manifest = &m
	return nil
}

// prepareOptions are the release files' options for k's dist dir: logs
// redacted of the token, the path: modules' sources (they exist nowhere
// else), the final config, and every WSL version seen (for the notes'
// version ranges).
func (r *runner) prepareOptions(k *kernelJob, dist, bdir string) release.PrepareOptions {
	o := release.PrepareOptions{Dir: dist, LogsDir: filepath.Join(bdir, "logs"), Prefix: r.o.ReleasePrefix,
		SourceDateEpoch: r.imageEpoch(k), Config: filepath.Join(bdir, "config"), Repo: r.o.TargetRepo,
		ModuleSources: map[string]string{}}
	if tok := githubapi.ResolveToken(r.o.Token, r.o.Getenv); tok != "" {
		o.Secrets = append(o.Secrets, tok)
	}
	for i := range r.list.Modules {
		if m := &r.list.Modules[i]; m.Kind() == modlist.KindPath {
			o.ModuleSources[m.Name] = r.list.SourceDir(m)
		}
	}
	for _, w := range r.wsl {
		o.WSLSeen = append(o.WSLSeen, w.Version)
	}
	return o
}

// samePrefix reports whether the dist dir's wslconfig.txt (and so its
// release notes, written with the same release tag) names this run's
// release prefix: both name the folder wsl\<release tag>.
func (r *runner) samePrefix(dir string, m *manifest.Manifest) bool {
	b, err := os.ReadFile(filepath.Join(dir, release.WSLConfFile))
	tag := release.TagName(m.Kernel.Tag, m.Kernel.Arch, r.o.ReleasePrefix)
	if _, serr := os.Stat(filepath.Join(dir, release.SourcesFile)); serr != nil {
		return false // written before the sources were named
	}
	return err == nil && string(b) == release.WSLConfig(m, tag)
}

// release publishes the dist dir (or, without Publish, prints what would
// be published).
func (r *runner) release(ctx context.Context, k *kernelJob) error {
	o := release.Options{Repo: r.o.TargetRepo, Dir: filepath.Join(k.dir, "dist"), Prefix: r.o.ReleasePrefix,
		DryRun: !r.o.Publish, Out: r.out, Progress: r.log, Target: r.o.Target}
	var c = r.client
	if r.o.Publish {
		var err error
		if c, err = r.github(); err != nil {
			return err
		}
	}
	res, err := release.Publish(ctx, c, o)
	if err != nil {
		return fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	k.publish = res
	return nil
}
