package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/depmod"
	"github.com/wsl-modules/wsl-modules-action/internal/devel"
	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
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
	kern := k.kernel
	rel := kern.Meta.Release
	var m *manifest.Manifest
	err = r.stage(k, "assemble", func() error {
		var err error
		m, err = r.assembleInto(k, out.Tmp)
		return err
	})
	if err != nil {
		return err
	}
	err = r.stage(k, "depmod", func() error {
		rep, err := depmod.Run(ctx, depmod.Options{BaseDir: filepath.Join(out.Tmp, "staging"), Release: rel,
			Symvers: filepath.Join(out.Tmp, "Module.symvers"), ErrSyms: true, Strict: true, Progress: r.log})
		if rep != nil {
			for _, w := range rep.Warnings {
				r.log.Printf("depmod: %s", w)
			}
			r.log.Printf("depmod: %d modules indexed", rep.Modules)
		}
		if err != nil {
			return fmt.Errorf("pipeline: %s: depmod: %w", k.name, err)
		}
		return nil
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

// assembleInto fills the temporary build dir tmp and returns its manifest.
func (r *runner) assembleInto(k *kernelJob, tmp string) (*manifest.Manifest, error) {
	kern := k.kernel
	for from, to := range map[string]string{
		kern.Image(): kern.Meta.ImageFile, kern.Symvers(): "Module.symvers", kern.SystemMap(): "System.map",
		kern.Config(): "config", kern.LogFile(): filepath.Join("logs", "kernel.log"),
	} {
		if err := atomicfile.CopyFile(from, filepath.Join(tmp, to), 0); err != nil {
			return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
		}
	}
	trees := map[string]string{kern.ModulesRoot(): "staging"}
	switch r.o.Headers {
	case HeadersDevel:
		// The tree whose host programs run on the target (rebuilt with the
		// cross compiler for arm64 on x86_64).
		trees[kern.TargetDevelDir()] = "kernel-devel"
		if r.o.Layout == "nested" {
			// Nested images also carry the UAPI headers in linux-headers/.
			trees[kern.HeadersDir()] = "headers"
		}
	case HeadersUAPI:
		trees[kern.HeadersDir()] = "headers"
	}
	for from, to := range trees {
		if err := kbuild.CopyTree(from, filepath.Join(tmp, to)); err != nil {
			return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
		}
	}
	if r.o.Headers == HeadersDevel {
		// The tree ships in the image: refuse one that cannot build
		// modules inside WSL (wrong arch, missing files, build paths).
		rep, err := devel.Verify(filepath.Join(tmp, "kernel-devel"), devel.Options{Release: kern.Meta.Release,
			Arch: kern.Meta.Arch, Symvers: kern.Symvers(), BuildPaths: []string{kern.Dir, filepath.Dir(kern.Dir)}})
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: kernel-devel tree: %w", k.name, err)
		}
		r.log.Printf("%s: kernel-devel tree: %d files, %s, host programs need glibc %s", k.name, rep.Files,
			progress.Bytes(rep.Bytes), rep.GLIBC)
	}
	modDir := filepath.Join(tmp, "staging", "lib", "modules", kern.Meta.Release)

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
	byName := map[string]shardModule{}
	for _, sd := range shards {
		rec, err := readShard(sd)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
		}
		entries, err := os.ReadDir(filepath.Join(sd, "modules"))
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
		}
		for _, e := range entries {
			if err := mergeTree(filepath.Join(sd, "modules", e.Name()), filepath.Join(modDir, e.Name())); err != nil {
				return nil, fmt.Errorf("pipeline: %s: shard %s: %w", k.name, sd, err)
			}
		}
		logs, err := os.ReadDir(filepath.Join(sd, "logs"))
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
		}
		for _, l := range logs {
			if err := atomicfile.CopyFile(filepath.Join(sd, "logs", l.Name()), filepath.Join(tmp, "logs", l.Name()), 0); err != nil {
				return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
			}
		}
		for _, m := range rec.Modules {
			byName[m.Name] = m
		}
	}
	m := &manifest.Manifest{Schema: manifest.SchemaVersion, Tool: r.o.Tool, Kernel: manifest.Kernel{
		Tag: k.tag, Release: kern.Meta.Release, Arch: kern.Meta.Arch, Source: k.source, ConfigSHA256: kern.Meta.ConfigSHA256,
		FragmentSHA256: kern.Meta.FragmentSHA256, Compiler: kern.Meta.Compiler, ImageFile: kern.Meta.ImageFile,
		CacheKey: kern.Meta.Key, CacheHit: kern.CacheHit, BuildTimestamp: kern.Meta.BuildTimestamp},
		Modules: []manifest.Module{}, Layout: r.o.Layout, Headers: r.o.Headers, Inputs: k.inputs}
	var okFiles, failed, missing []string
	var failures strings.Builder
	for _, lm := range r.list.Modules {
		sm, ok := byName[lm.Name]
		if !ok {
			missing = append(missing, lm.Name)
			continue
		}
		mm := sm.Module
		if mm.Status == manifest.StatusFailed && r.o.KeepGoing {
			// Left out of this image on purpose: recorded as skipped,
			// with the failure, so the release can be published (a
			// manifest with a failed module never is).
			mm.Status, mm.Error = manifest.StatusSkipped, "build failed, left out (keep-going): "+mm.Error
		}
		m.Modules = append(m.Modules, mm)
		switch sm.Status {
		case manifest.StatusOK:
			okFiles = append(okFiles, sm.Files...)
		case manifest.StatusFailed:
			failed = append(failed, sm.Name)
			fmt.Fprintf(&failures, "  module %s FAILED: %s\n    log: %s\n", sm.Name, sm.Error, filepath.Join(k.dir, "build", sm.Log))
			for _, l := range sm.Tail {
				fmt.Fprintf(&failures, "    | %s\n", l)
			}
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("pipeline: %s: no shard built module(s) %s (run the modules stage for every shard first)", k.name, strings.Join(missing, ", "))
	}
	if len(failed) > 0 {
		if !r.o.KeepGoing {
			return nil, fmt.Errorf("pipeline: %s: %w:\n%s", k.name, modbuild.ErrModulesFailed, strings.TrimRight(failures.String(), "\n"))
		}
		bar := strings.Repeat("!", 72)
		r.log.Printf("%s\n!!! WARNING: keep-going: %d module(s) FAILED and are NOT in the image: %s\n%s%s", bar, len(failed),
			strings.Join(failed, ", "), failures.String(), bar)
	}
	if err := modbuild.AppendModulesOrder(modDir, okFiles); err != nil {
		return nil, fmt.Errorf("pipeline: %s: modules.order: %w", k.name, err)
	}
	return m, nil
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
	if len(r.list.Modules) == 0 {
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

// mergeTree copies from into to; directories merge, a file that exists in
// both is an error.
func mergeTree(from, to string) error {
	st, err := os.Lstat(from)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		if _, err := os.Lstat(to); err == nil {
			return fmt.Errorf("%s: two shards install the same file", to)
		}
		return kbuild.CopyTree(from, to)
	}
	if _, err := os.Lstat(to); errors.Is(err, os.ErrNotExist) {
		return kbuild.CopyTree(from, to)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := mergeTree(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
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
	opts := image.Options{Source: filepath.Join(bdir, "staging"), Release: m.Kernel.Release, Layout: image.Layout(r.o.Layout),
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
	if _, err := release.PrepareDist(release.PrepareOptions{Dir: out.Tmp, LogsDir: filepath.Join(bdir, "logs"), Prefix: r.o.ReleasePrefix}); err != nil {
		return fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	if err := out.Commit(); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	k.manifest = &m
	return nil
}

// samePrefix reports whether the dist dir's wslconfig.txt (and so its
// release notes, written with the same release tag) names this run's
// release prefix: both name the folder wsl\<release tag>.
func (r *runner) samePrefix(dir string, m *manifest.Manifest) bool {
	b, err := os.ReadFile(filepath.Join(dir, release.WSLConfFile))
	tag := release.TagName(m.Kernel.Tag, m.Kernel.Arch, r.o.ReleasePrefix)
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
