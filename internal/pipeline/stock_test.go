package pipeline

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/boottest"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// stockOptions runs the pipeline in stock mode over the test kernel's
// stock files (made as Microsoft makes them), from Debian's source with
// the test config.
func stockOptions(t *testing.T, list, work string) Options {
	f := buildtest.Stock(t)
	return Options{ModulesFile: list, KernelSource: buildtest.SourceDir(t), ConfigFile: buildtest.ConfigFile(),
		KernelMode: ModeStock, StockKernel: f.Kernel, StockModules: f.Modules,
		CacheDir: buildtest.CacheDir(), WorkDir: work, Progress: progress.New(tlog{t}), Out: tlog{t}}
}

// dumpVersions returns what kmod says of a module's CRCs and vermagic.
func dumpVersions(t *testing.T, ko string) string {
	t.Helper()
	modprobe, modinfo := testenv.Tool(t, "modprobe"), testenv.Tool(t, "modinfo")
	v, err := exec.Command(modprobe, "--dump-modversions", ko).Output()
	if err != nil {
		t.Fatalf("modprobe --dump-modversions %s: %v", ko, err)
	}
	m, err := exec.Command(modinfo, "-F", "vermagic", ko).Output()
	if err != nil {
		t.Fatalf("modinfo %s: %v", ko, err)
	}
	return string(v) + "vermagic " + string(m)
}

// TestStockModeEndToEnd builds the test modules in stock mode: the release
// carries the stock kernel bit for bit, the image holds every stock module
// unchanged plus ours, the modules' CRCs and vermagic equal those of the
// same modules built in build mode, and the stock kernel boots with the
// image, loading a listed module, one that depends on another listed one,
// and a stock one.
func TestStockModeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules and boots qemu")
	}
	ctx := context.Background()
	list := testList(t, false)
	stock := buildtest.Stock(t)
	res, err := Run(ctx, stockOptions(t, list, filepath.Join(t.TempDir(), "work")))
	if err != nil {
		t.Fatal(err)
	}
	k := res.Last()
	m := k.Manifest
	if m.Kernel.Mode != manifest.ModeStock || m.Kernel.Stock == nil || !strings.Contains(m.Kernel.ModeReason, "given") {
		t.Fatalf("manifest kernel: %+v", m.Kernel)
	}
	if got, _ := digest.File(k.KernelImage); got != m.Kernel.Stock.KernelSHA256 {
		t.Errorf("released kernel sha256 %s, Microsoft's %s", got, m.Kernel.Stock.KernelSHA256)
	}
	if want, _ := digest.File(stock.Kernel); want != m.Kernel.Stock.KernelSHA256 {
		t.Errorf("recorded stock sha256 %s, the file's %s", m.Kernel.Stock.KernelSHA256, want)
	}
	// The staged tree: stock modules byte-identical.
	built := buildtest.TestKernel(t)
	staged := filepath.Join(k.BuildDir, "staging", "lib", "modules", m.Kernel.Release)
	n := 0
	filepath.WalkDir(built.ModulesDir(), func(p string, d os.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(p, ".ko") {
			return err
		}
		rel, _ := filepath.Rel(built.ModulesDir(), p)
		a, _ := digest.File(p)
		b, _ := digest.File(filepath.Join(staged, rel))
		if a != b {
			t.Errorf("stock module %s changed", rel)
		}
		n++
		return nil
	})
	if n == 0 {
		t.Fatal("no stock modules compared")
	}
	// The same modules built in build mode carry the same CRCs and vermagic.
	bres, err := Run(ctx, localOptions(t, list, filepath.Join(t.TempDir(), "work")))
	if err != nil {
		t.Fatal(err)
	}
	bstaged := filepath.Join(bres.Last().BuildDir, "staging", "lib", "modules", m.Kernel.Release)
	for _, f := range []string{"extra/provider/wslt_provider.ko", "extra/consumer/wslt_consumer.ko", "extra/v4l2loopback/v4l2loopback.ko"} {
		if a, b := dumpVersions(t, filepath.Join(staged, f)), dumpVersions(t, filepath.Join(bstaged, f)); a != b || len(a) < 40 {
			t.Errorf("%s: stock mode\n%s\nbuild mode\n%s", f, a, b)
		}
	}
	boot, err := boottest.Boot(ctx, boottest.Config{Kernel: k.KernelImage, Disk: k.VHDX, Format: "vhdx",
		Modules: []string{"wslt_consumer", "v4l2loopback", "vfat"}})
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	if boot.Release != m.Kernel.Release || len(boot.Failed) > 0 || strings.Join(boot.Loaded, " ") != "wslt_consumer v4l2loopback vfat" {
		t.Errorf("boot: uname -r %q, loaded %v, failed %v\n%s", boot.Release, boot.Loaded, boot.Failed, boot.Console)
	}
}
