package kbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// StockOptions select a stock-mode kernel entry: Microsoft's kernel image
// and stock modules, with the source at the tag and the config prepared
// for building modules (modules_prepare only).
type StockOptions struct {
	KernelOptions
	// Kernel is Microsoft's kernel image (C:\Program Files\WSL\tools\kernel).
	Kernel string
	// Modules is the stock modules image (modules.vhd or artifacts.vhd, in
	// the flat or nested layout) or a module directory.
	Modules string
	// MSI is where both came from, for the record (nil: local files).
	MSI *manifest.MSI
}

// ErrStock is wrapped by the errors about stock files that do not fit the
// source: another release, a kernel without modversions, a config that
// forces signatures.
var ErrStock = errors.New("stock kernel does not fit")

// PrepareStock returns the stock-mode kernel entry for o, from the cache
// when it exists, otherwise making it: the source configured as for a
// full build (olddefconfig, the config's changes recorded), the release
// checked against Microsoft's kernel image and its modules, `make
// modules_prepare`, Module.symvers rebuilt from the kernel image's export
// tables and the stock modules, the kernel-devel tree and UAPI headers,
// Microsoft's kernel image copied bit for bit and the stock modules copied
// byte for byte. The prepared object tree is kept in the entry
// (PreparedDir) for the CRC proof of the modules built against it.
func PrepareStock(ctx context.Context, o StockOptions) (*Kernel, error) {
	if o.Kernel == "" || o.Modules == "" {
		return nil, errors.New("kernel: stock mode needs Microsoft's kernel image and its modules image")
	}
	sc, err := readStockConfig(o.Kernel, o)
	if err != nil {
		return nil, err
	}
	defer sc.cleanup()
	if used, err := sc.useAsDefault(&o); err != nil {
		return nil, err
	} else if used {
		o.Progress.Printf("kernel: stock mode: preparing with the config Microsoft's kernel embeds (CONFIG_IKCONFIG)")
	}
	stock, extra, err := stockIdentity(o)
	if err != nil {
		return nil, err
	}
	in, err := resolveInputs(ctx, &o.KernelOptions, extra)
	if err != nil {
		return nil, err
	}
	return cachedEntry(ctx, o.KernelOptions, in, func(entry string) (*Kernel, error) {
		return prepareStock(ctx, o, in, stock, sc, entry)
	})
}

// stockIdentity hashes the stock files: their sha256 is part of the
// entry's key.
func stockIdentity(o StockOptions) (*manifest.Stock, string, error) {
	st := &manifest.Stock{ModulesFile: filepath.Base(o.Modules), MSI: o.MSI}
	var err error
	if st.KernelSHA256, err = digest.File(o.Kernel); err != nil {
		return nil, "", fmt.Errorf("kernel: stock kernel: %w", err)
	}
	if fi, err := os.Stat(o.Modules); err != nil {
		return nil, "", fmt.Errorf("kernel: stock modules: %w", err)
	} else if fi.IsDir() {
		st.ModulesSHA256, err = digest.Tree(context.Background(), o.Modules)
	} else {
		st.ModulesSHA256, err = digest.File(o.Modules)
	}
	if err != nil {
		return nil, "", fmt.Errorf("kernel: stock modules: %w", err)
	}
	if o.MSI == nil {
		st.KernelPath, st.ModulesPath = o.Kernel, o.Modules
	}
	return st, fmt.Sprintf("mode stock\nstock-kernel %s\nstock-modules %s\n", st.KernelSHA256, st.ModulesSHA256), nil
}

func prepareStock(ctx context.Context, o StockOptions, in *inputs, stock *manifest.Stock, sc *stockConfig, entry string) (*Kernel, error) {
	start := time.Now()
	work := workDir(entry, in.key)
	success := false
	defer func() {
		if success {
			os.RemoveAll(work)
		}
	}()
	out, logf, log, err := openEntry(o.KernelOptions, entry)
	if err != nil {
		return nil, err
	}
	defer out.Abort()
	defer logf.Close()
	// The stock files first: a wrong file, or a kernel and modules of two
	// releases, fails before the source is unpacked and configured.
	imgRelease, exports, tree, err := openStock(ctx, o, sc.img)
	if err != nil {
		return nil, err
	}
	defer tree.Close()
	if imgRelease != tree.Release {
		return nil, fmt.Errorf("kernel: %w: the stock kernel %s is release %q, but the stock modules %s are for release %q (from %s): they are not one kernel's pair",
			ErrStock, o.Kernel, imgRelease, o.Modules, tree.Release, tree.Source.ReleaseFrom)
	}
	b, ts, err := newKernelBuild(ctx, o.KernelOptions, in, work, log)
	if err != nil {
		return nil, err
	}
	meta := KernelMeta{Format: CacheFormat, Key: in.key, Arch: o.Arch, ImageFile: in.tc.ImageFile, Compiler: in.compiler,
		Source: in.src, BuildTimestamp: ts.UTC().Format(TimestampLayout), Mode: manifest.ModeStock, Stock: stock}
	_, final, err := b.configure(ctx, &meta)
	if err != nil {
		return nil, err
	}
	if err := checkStockRelease(o, imgRelease, meta.Release); err != nil {
		return nil, err
	}
	if err := noteConfigDifferences(o, sc, final, &meta); err != nil {
		return nil, err
	}
	if meta.Signing, err = stockSigning(final); err != nil {
		return nil, err
	}
	if meta.BuildSteps, err = b.prepareModules(ctx, exports, tree, out.Tmp); err != nil {
		return nil, err
	}
	if err := installStock(ctx, o, tree, out.Tmp, meta.ImageFile); err != nil {
		return nil, err
	}
	if err := os.Rename(b.obj, filepath.Join(out.Tmp, preparedDir)); err != nil {
		return nil, fmt.Errorf("kernel: keeping the prepared tree: %w", err)
	}
	k, err := finishEntry(ctx, out, logf, &meta, final, start)
	if err != nil {
		return nil, err
	}
	success = true
	o.Progress.Printf("kernel: stock mode: cached %s as %s (%s)", meta.Release, entry, progress.Bytes(meta.Bytes))
	return k, nil
}

// noteConfigDifferences warns about, and records in the entry's config
// changes, every option (toolchain-derived ones aside) in which the
// prepared config differs from the one Microsoft's kernel embeds. They
// are not refused here: the CRC proof decides whether they matter.
func noteConfigDifferences(o StockOptions, sc *stockConfig, final kconfig.Config, meta *KernelMeta) error {
	diffs, err := sc.differences(final)
	if err != nil {
		return err
	}
	for _, d := range diffs {
		o.Progress.Printf("kernel: warning: the config differs from the one Microsoft's kernel embeds: %s", d)
		meta.ConfigChanges = append(meta.ConfigChanges, "differs from the stock kernel's embedded config: "+d.String())
	}
	return nil
}

// preparedDir is where a stock entry keeps its prepared object tree.
const preparedDir = "prepared"

// PreparedDir is a stock entry's object tree after modules_prepare, with
// the rebuilt Module.symvers (see PrepareStock); "" for a built kernel.
func (k *Kernel) PreparedDir() string {
	if k.Meta.Mode != manifest.ModeStock {
		return ""
	}
	return filepath.Join(k.Dir, preparedDir)
}

// stockSigning refuses a config that forces module signatures (the
// modules would need Microsoft's key) and reports a signing config whose
// unsigned modules still load (they taint the kernel).
func stockSigning(cfg kconfig.Config) (string, error) {
	switch {
	case cfg.Get("CONFIG_MODULE_SIG_FORCE") == "y":
		return "", fmt.Errorf("kernel: %w: the config sets CONFIG_MODULE_SIG_FORCE: the stock kernel loads only modules signed with Microsoft's key, which stock mode cannot do; use kernel: build", ErrStock)
	case cfg.Get("CONFIG_MODULE_SIG") == "y":
		return SigningUnsigned, nil
	}
	return "", nil
}

// openStock reads Microsoft's kernel image (img, opened from o.Kernel:
// its exports, and its release from the version banner) and the stock
// modules.
func openStock(ctx context.Context, o StockOptions, img *kimage.File) (release string, exports []kimage.Export, tree *modtree.Tree, err error) {
	table, err := img.Exports()
	if err != nil {
		return "", nil, nil, fmt.Errorf("kernel: stock kernel %s: %w", o.Kernel, err)
	}
	tree, err = modtree.Open(ctx, o.Modules, modtree.OpenOptions{Progress: o.Progress})
	if err != nil {
		return "", nil, nil, fmt.Errorf("kernel: stock modules: %w", err)
	}
	return img.Release(), table.Symbols, tree, nil
}

// checkStockRelease requires the configured source's release to be the
// stock kernel's (and so its modules', checked before).
func checkStockRelease(o StockOptions, imgRelease, rel string) error {
	if imgRelease != rel {
		return fmt.Errorf("kernel: %w: the stock kernel %s is release %q, the source at this tag with this config gives %q",
			ErrStock, o.Kernel, imgRelease, rel)
	}
	return nil
}

// prepareModules runs modules_prepare, writes the rebuilt Module.symvers
// into the object tree and the entry, and makes kernel-devel and the UAPI
// headers from it. It returns the number of kbuild steps of the make.
func (b *kernelBuild) prepareModules(ctx context.Context, exports []kimage.Export, tree *modtree.Tree, dir string) (int64, error) {
	jobs := b.o.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	done := b.o.Progress.Step("kernel: stock mode: make -j%d modules_prepare", jobs)
	steps, err := b.countedMake(ctx, tree.Release, fmt.Sprintf("-j%d", jobs), "modules_prepare")
	done()
	if err != nil {
		return 0, fmt.Errorf("kernel: modules_prepare failed (log: %s): %w", filepath.Join(dir, "kernel.log"), err)
	}
	lines, err := modtree.BuildSymvers(exports, tree)
	if err != nil {
		return 0, fmt.Errorf("kernel: rebuilding Module.symvers: %w", err)
	}
	var buf bytes.Buffer
	if err := modtree.WriteSymvers(&buf, lines); err != nil {
		return 0, fmt.Errorf("kernel: %w", err)
	}
	fmt.Fprintf(b.log, "==> Module.symvers rebuilt from the stock kernel and modules: %d lines\n", len(lines))
	for _, p := range []string{filepath.Join(b.obj, "Module.symvers"), filepath.Join(dir, "Module.symvers")} {
		if err := atomicfile.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			return 0, fmt.Errorf("kernel: %w", err)
		}
	}
	if err := b.make(ctx, "headers_install", "INSTALL_HDR_PATH="+filepath.Join(dir, "headers")); err != nil {
		return 0, fmt.Errorf("kernel: %w", err)
	}
	if err := atomicfile.CopyFile(filepath.Join(b.obj, ".config"), filepath.Join(dir, "config"), 0); err != nil {
		return 0, fmt.Errorf("kernel: %w", err)
	}
	return steps, b.develTrees(ctx, dir)
}

// installStock copies Microsoft's kernel image bit for bit and the stock
// modules byte for byte into the entry.
func installStock(ctx context.Context, o StockOptions, tree *modtree.Tree, dir, imageFile string) error {
	if err := atomicfile.CopyFile(o.Kernel, filepath.Join(dir, imageFile), 0o644); err != nil {
		return fmt.Errorf("kernel: stock kernel: %w", err)
	}
	mdir := filepath.Join(dir, "modules", "lib", "modules", tree.Release)
	err := atomicfile.CopyFS(ctx, tree.Files, mdir, atomicfile.CopyOptions{
		Skip: func(p string, d fs.DirEntry) bool {
			top, _, _ := strings.Cut(p, "/")
			return top == "build" || top == "source" || top == "lost+found"
		}})
	if err != nil {
		return fmt.Errorf("kernel: stock modules: %w", err)
	}
	return nil
}
