package kbuild

import (
	"context"
	"os"
	"path/filepath"
	"sync"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
)

// stockTree memoises a kernel entry's stock module tree.
type stockTree struct {
	once sync.Once
	tree *modtree.Tree
	err  error
}

// Stock returns the entry's installed stock modules as a tree (parsed
// once per Kernel value), with the entry's Module.symvers.
func (k *Kernel) Stock(ctx context.Context) (*modtree.Tree, error) {
	k.stock.once.Do(func() {
		t, err := modtree.LoadDir(k.ModulesDir(), k.Meta.Release)
		if err == nil {
			t.Symvers, err = modtree.ReadSymvers(k.Symvers())
		}
		k.stock.tree, k.stock.err = t, err
	})
	return k.stock.tree, k.stock.err
}

// Files maps the entry's files that a build output carries to their names
// there: the kernel image, Module.symvers, System.map (when the entry has
// one), config and logs/kernel.log.
func (k *Kernel) Files() map[string]string {
	out := map[string]string{k.Image(): k.Meta.ImageFile, k.Symvers(): "Module.symvers", k.Config(): "config",
		k.LogFile(): filepath.Join("logs", "kernel.log")}
	if _, err := os.Stat(k.SystemMap()); err == nil {
		out[k.SystemMap()] = "System.map"
	}
	return out
}

// ManifestKernel is the manifest's description of the kernel of entry k;
// the caller adds the tag (and a richer source) when it knows them.
func (k *Kernel) ManifestKernel() manifest.Kernel {
	return manifest.Kernel{Release: k.Meta.Release, Arch: k.Meta.Arch, Source: k.Meta.Source, ConfigSHA256: k.Meta.ConfigSHA256,
		FragmentSHA256: k.Meta.FragmentSHA256, Compiler: k.Meta.Compiler, ImageFile: k.Meta.ImageFile,
		CacheKey: k.Meta.Key, CacheHit: k.CacheHit, BuildTimestamp: k.Meta.BuildTimestamp, Tag: k.Meta.Source.Tag,
		ConfigChanges: k.Meta.ConfigChanges, Mode: k.Meta.Mode, Stock: k.Meta.Stock, Signing: k.Meta.Signing}
}
