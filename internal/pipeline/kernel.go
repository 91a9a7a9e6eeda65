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

	"github.com/wsl-modules/wsl-modules-action/internal/archive"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/kver"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/intree"
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
	// MSI is the WSL installer the stock files came from (stock mode).
	MSI *manifest.MSI `json:"msi,omitempty"`
	// Mode and ModeReason are the kernel stage's decision when it made
	// one (a config fragment in stock or auto mode, planFragment), and
	// InTree the fragment's plan in stock mode.
	Mode       string       `json:"mode,omitempty"`
	ModeReason string       `json:"mode_reason,omitempty"`
	InTree     *intree.Plan `json:"in_tree,omitempty"`
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
	if k.inputs.Mode != "" {
		fmt.Fprintf(h, "mode %s\nstock %s\n", k.inputs.Mode, k.inputs.Stock)
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
		if json.Unmarshal(b, &rec) == nil && rec.Inputs == ki && rec.Key != "" && k.restoreMode(&rec) {
			if kern, err := r.openEntry(ctx, rec.Key); err == nil {
				k.kernel, k.source, k.release, k.msi = kern, rec.Source, kern.Meta.Release, rec.MSI
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
	if err := r.planFragment(ctx, k); err != nil {
		return err
	}
	var kern *kbuild.Kernel
	err := r.stage(k, "kernel", func() error {
		var err error
		ko := kbuild.KernelOptions{Source: source, SourceInfo: info, ConfigFile: r.o.ConfigFile,
			Fragment: r.fragment, Arch: r.arch, CacheDir: r.o.CacheDir, Jobs: r.o.Jobs, Timestamp: r.epoch(), Progress: r.log}
		if k.mode == ModeStock {
			if kern, err = r.stockKernel(ctx, k, ko); err == nil {
				kern, err = r.recheckFragment(ctx, k, kern, ko)
			}
		} else {
			kern, err = kbuild.BuildKernel(ctx, ko)
		}
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
	rec := kernelRecord{Inputs: ki, Key: kern.Meta.Key, Release: kern.Meta.Release, Source: k.source, MSI: k.msi}
	if r.hasFragment() && k.stockWhy != "" {
		rec.Mode, rec.ModeReason, rec.InTree = k.mode, k.modeReason, k.intree
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := atomicfile.WriteFile(recPath, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	return nil
}

// prefetch fetches what k's kernel stage needs from GitHub, unless its
// kernel.json names a valid entry: the tag's source, and in stock mode the
// stock files (the WSL installer downloaded and extracted into the cache).
func (r *runner) prefetch(ctx context.Context, k *kernelJob) error {
	if b, err := os.ReadFile(filepath.Join(k.dir, KernelFile)); err == nil {
		var rec kernelRecord
		if json.Unmarshal(b, &rec) == nil && rec.Inputs == r.kernelInputs(k) {
			if _, err := r.openEntry(ctx, rec.Key); err == nil {
				return nil
			}
		}
	}
	if k.local == "" {
		if _, _, err := r.fetchKernel(ctx, k); err != nil {
			return err
		}
	}
	if k.mode == ModeStock {
		_, _, _, err := r.stockPaths(ctx, k)
		return err
	}
	return nil
}

// openEntry opens the kernel cache entry of key and verifies its content:
// the entry may have been restored from a cache that build code could
// write to.
func (r *runner) openEntry(ctx context.Context, key string) (*kbuild.Kernel, error) {
	kern, err := kbuild.OpenKernel(filepath.Join(r.o.CacheDir, "kernel", key))
	if err != nil {
		return nil, err
	}
	if err := kern.Verify(ctx); err != nil {
		r.log.Printf("WARNING: %v; making it again", err)
		return nil, err
	}
	kern.CacheHit = true
	return kern, nil
}

// stockKernel prepares k's kernel in stock mode: the source as a
// directory (the CRC proof of the modules reads it), Microsoft's files
// (extracted from the WSL installer when needed), then kbuild.PrepareStock.
func (r *runner) stockKernel(ctx context.Context, k *kernelJob, ko kbuild.KernelOptions) (*kbuild.Kernel, error) {
	src, err := r.sourceDir(ctx, k)
	if err != nil {
		return nil, err
	}
	ko.Source, ko.Fragment = src, nil
	if ko.SourceInfo == nil && k.local != "" && src != k.local {
		// A tarball unpacked here: its sha256 identifies the source.
		d, err := digest.File(k.local)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
		}
		ko.SourceInfo = &manifest.Source{Kind: "tarball", Path: filepath.Base(k.local), SHA256: d}
	}
	kernel, modules, msi, err := r.stockPaths(ctx, k)
	if err != nil {
		return nil, err
	}
	// Where the files came from is this run's record; the cache entry
	// (keyed by the files' content) may come from another installer
	// holding the same files.
	k.msi = msi
	return kbuild.PrepareStock(ctx, kbuild.StockOptions{KernelOptions: ko, Kernel: kernel, Modules: modules, MSI: msi})
}

// sourceDir returns k's kernel source as a directory: a local directory
// as given, a local tarball unpacked once into WORK/<kernel>/source, or
// the tag's fetched source.
func (r *runner) sourceDir(ctx context.Context, k *kernelJob) (string, error) {
	if k.local == "" {
		dir, src, err := r.fetchKernel(ctx, k)
		if err == nil && k.source.Kind == "" {
			k.source = src
		}
		return dir, err
	}
	if st, err := os.Stat(k.local); err == nil && st.IsDir() {
		return k.local, nil
	}
	dir := filepath.Join(k.dir, "source")
	if _, err := os.Stat(filepath.Join(dir, "Makefile")); err == nil {
		return dir, nil
	}
	done := r.log.Step("%s: unpacking %s", k.name, k.local)
	_, err := archive.ExtractFile(ctx, k.local, dir, archive.Options{StripComponents: 1, Force: true})
	done()
	if err != nil {
		return "", fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	return dir, nil
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
