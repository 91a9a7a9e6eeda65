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
	// The stock kernel has CONFIG_MODULE_SIG without _FORCE: our modules
	// are unsigned (Microsoft's key is not ours), load, and taint it, as
	// the manifest and the notes say.
	if boot.Tainted&boottest.TaintUnsignedModule == 0 || m.Kernel.Signing != "unsigned" {
		t.Errorf("boot: tainted %#x, manifest signing %q", boot.Tainted, m.Kernel.Signing)
	}
}

// TestStockModeWrongConfig prepares the source with a config that is not
// the stock kernel's, though it gives the same uname -r and vermagic
// (CONFIG_DEBUG_SPINLOCK=y changes struct mutex and every structure that
// holds one). The modules build and link against the stock
// Module.symvers, so only the CRC proof can tell. Both modules fail, as
// the kernel's loader would refuse them: the one calling mutex_lock names
// mutex_lock with both CRCs; the one using only unchanged interfaces
// (kfree, printk) names module_layout, which every module imports and
// whose CRC covers struct module (with its mutexes). Kernel CRCs that do
// not depend on the option (kfree) are proven all the same.
func TestStockModeWrongConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("prepares a kernel tree")
	}
	ws := t.TempDir()
	cfg, err := os.ReadFile(buildtest.ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(ws, "config-wrong")
	cfg = []byte(strings.Replace(string(cfg), "# CONFIG_DEBUG_SPINLOCK is not set", "CONFIG_DEBUG_SPINLOCK=y", 1))
	testenv.WriteFile(t, wrong, string(cfg))
	testenv.WriteFile(t, filepath.Join(ws, "locker", "Kbuild"), "obj-m := locker.o\n")
	testenv.WriteFile(t, filepath.Join(ws, "locker", "locker.c"), `#include <linux/module.h>
#include <linux/mutex.h>
static DEFINE_MUTEX(lock);
static int __init locker_init(void) { mutex_lock(&lock); mutex_unlock(&lock); return 0; }
module_init(locker_init);
MODULE_LICENSE("GPL");
`)
	testenv.WriteFile(t, filepath.Join(ws, "plain", "Kbuild"), "obj-m := plain.o\n")
	testenv.WriteFile(t, filepath.Join(ws, "plain", "plain.c"), `#include <linux/module.h>
#include <linux/slab.h>
static void *p;
static int __init plain_init(void) { kfree(p); pr_info("plain\n"); return 0; }
module_init(plain_init);
MODULE_LICENSE("GPL");
`)
	list := filepath.Join(ws, "wsl-modules.yml")
	testenv.WriteFile(t, list, "modules:\n  - {name: locker, path: locker}\n  - {name: plain, path: plain}\n")
	o := stockOptions(t, list, filepath.Join(ws, "work"))
	o.ConfigFile = wrong
	var reports []ModuleReport
	o.Hooks.Module = func(r ModuleReport) { reports = append(reports, r) }
	_, err = Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "2 module(s) failed: locker, plain") {
		t.Errorf("Run: %v, want both failed", err)
	}
	got := map[string]ModuleReport{}
	for _, r := range reports {
		got[r.Module.Name] = r
	}
	lk := got["locker"]
	if lk.Status != manifest.StatusFailed || !strings.Contains(lk.Error, "mutex_lock") ||
		!strings.Contains(lk.Error, "stock CRC 0x") || !strings.Contains(lk.Error, "kernel: build") {
		t.Errorf("locker: %s %q", lk.Status, lk.Error)
	}
	if p := got["plain"]; p.Status != manifest.StatusFailed || !strings.Contains(p.Error, "module_layout: stock CRC 0x") ||
		strings.Contains(p.Error, "kfree") {
		t.Errorf("plain: %s %q", p.Status, p.Error)
	}
}
