package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kver"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
)

// KernelFile is WORK/<kernel>/kernel.json: which kernel cache entry the
// kernel stage produced. It is small, so it travels with the work dir
// artefact between scale-out jobs, which find the entry in their restored
// cache without fetching the source again.
const KernelFile = "kernel.json"

// SourceFile is WORK/<kernel>/source.json: the manifest.Source of the
// fetched kernel source in WORK/<kernel>/source/.
const SourceFile = "source.json"

// kernelRecord is the content of kernel.json.
type kernelRecord struct {
	// Inputs identifies the kernel's inputs (source, arch, config,
	// fragment, timestamp); a record for other inputs is ignored.
	Inputs  string          `json:"inputs"`
	Key     string          `json:"key"`
	Release string          `json:"release"`
	Source  manifest.Source `json:"source"`
}

// kernelInputs hashes what selects the kernel build.
func (r *runner) kernelInputs(k *kernelJob) string {
	h := sha256.New()
	fmt.Fprintf(h, "tag %s\nsource %s\nlocal %s\narch %s\nconfig %s\nfragment %s\nepoch %d\n", k.tag, k.inputs.SourcePin, k.local,
		k.inputs.Arch, k.inputs.ConfigSHA256, k.inputs.FragmentSHA256, r.o.SourceDateEpoch)
	if k.inputs.KernelRepo != "" {
		// Only when not the default repository: records written before
		// stay valid.
		fmt.Fprintf(h, "repo %s\n", k.inputs.KernelRepo)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ensureKernel makes k.kernel available: from the cache entry recorded in
// kernel.json, else by fetching the source (tags) and building the kernel
// (or taking it from the cache by its key).
func (r *runner) ensureKernel(ctx context.Context, k *kernelJob) error {
	ki := r.kernelInputs(k)
	recPath := filepath.Join(k.dir, KernelFile)
	if b, err := os.ReadFile(recPath); err == nil {
		var rec kernelRecord
		if json.Unmarshal(b, &rec) == nil && rec.Inputs == ki && rec.Key != "" {
			if kern, err := kbuild.OpenKernel(filepath.Join(r.o.CacheDir, "kernel", rec.Key)); err == nil {
				kern.CacheHit = true
				k.kernel, k.source, k.release = kern, rec.Source, kern.Meta.Release
				r.log.Printf("%s: kernel %s from cache entry %s (%s)", k.name, kern.Meta.Release, short(rec.Key), KernelFile)
				r.nameLocal(k)
				return nil
			}
			r.log.Printf("%s: kernel cache entry %s of %s is not in %s; building it", k.name, short(rec.Key), recPath, r.o.CacheDir)
		}
	}
	source := k.local
	var info *manifest.Source
	if k.local == "" {
		err := r.stage(k, "fetch", func() error {
			dir, src, err := r.fetchKernel(ctx, k)
			source, info, k.source = dir, &src, src
			return err
		})
		if err != nil {
			return err
		}
	}
	var kern *kbuild.Kernel
	err := r.stage(k, "kernel", func() error {
		var err error
		kern, err = kbuild.BuildKernel(ctx, kbuild.KernelOptions{Source: source, SourceInfo: info, ConfigFile: r.o.ConfigFile,
			Fragment: r.fragment, Arch: r.arch, CacheDir: r.o.CacheDir, Jobs: r.o.Jobs, Timestamp: r.epoch(), Progress: r.log})
		if err != nil {
			return fmt.Errorf("pipeline: %s: %w", k.name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	k.kernel, k.cacheWritten, k.release = kern, !kern.CacheHit, kern.Meta.Release
	if k.local != "" {
		k.source = kern.Meta.Source
	}
	r.nameLocal(k)
	b, _ := json.MarshalIndent(kernelRecord{Inputs: ki, Key: kern.Meta.Key, Release: kern.Meta.Release, Source: k.source}, "", "  ")
	if err := atomicfile.WriteFile(recPath, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	return nil
}

// nameLocal gives a local source without a kernel tag one derived from
// its release.
func (r *runner) nameLocal(k *kernelJob) {
	if k.tag == "" {
		k.tag = derivedTag(k.kernel.Meta.Release)
		r.log.Printf("%s: no kernel tag given for the local source; naming it %s (from the release %s)", k.name, k.tag, k.kernel.Meta.Release)
	}
}

// fetchKernel fetches the kernel tag's source into WORK/<tag>/source,
// unless a complete earlier fetch of the same tag is there.
func (r *runner) fetchKernel(ctx context.Context, k *kernelJob) (string, manifest.Source, error) {
	dir := filepath.Join(k.dir, "source")
	srcPath := filepath.Join(k.dir, SourceFile)
	if b, err := os.ReadFile(srcPath); err == nil {
		var s manifest.Source
		if json.Unmarshal(b, &s) == nil && s.Tag == k.tag && s.Repo == r.o.KernelRepo {
			if _, err := os.Stat(filepath.Join(dir, "Makefile")); err == nil {
				r.log.Printf("%s: kernel source already fetched (%s)", k.name, dir)
				return dir, s, nil
			}
		}
	}
	c, err := r.github()
	if err != nil {
		return "", manifest.Source{}, err
	}
	f := &fetch.Fetcher{Client: c, Progress: r.log, Force: true}
	src, err := f.Kernel(ctx, r.o.KernelRepo, k.tag, dir)
	if err != nil {
		return "", manifest.Source{}, fmt.Errorf("pipeline: %w", err)
	}
	b, _ := json.MarshalIndent(src, "", "  ")
	if err := atomicfile.WriteFile(srcPath, append(b, '\n'), 0o644); err != nil {
		return "", manifest.Source{}, fmt.Errorf("pipeline: %w", err)
	}
	return dir, src, nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// derivedTag names a kernel built from a local source by its release:
// 6.6.87.2-microsoft-standard-WSL2 becomes linux-msft-wsl-6.6.87.2, and a
// release with fewer numbers (6.12.57-...) is padded with zeros
// (linux-msft-wsl-6.12.57.0).
func derivedTag(release string) string {
	ver, _, _ := strings.Cut(release, "-")
	nums := make([]string, 0, 4)
	for _, p := range strings.Split(ver, ".") {
		if _, err := strconv.Atoi(p); err != nil || len(nums) == 4 {
			break
		}
		nums = append(nums, p)
	}
	for len(nums) < 4 {
		nums = append(nums, "0")
	}
	return kver.TagPrefix + strings.Join(nums, ".")
}
