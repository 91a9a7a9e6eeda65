package pipeline

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/boottest"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/intree"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
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

// fragmentList writes a module list with a config fragment (and the test
// provider module) and returns its path.
func fragmentList(t *testing.T, mode string, frag ...string) string {
	t.Helper()
	ws := t.TempDir()
	if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules", "provider"), filepath.Join(ws, "modules", "provider"), atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	list := "kernel:\n"
	if mode != "" {
		list += "  mode: " + mode + "\n"
	}
	list += "  config-fragment: |\n"
	for _, f := range frag {
		list += "    " + f + "\n"
	}
	list += "modules:\n  - {name: provider, path: modules/provider}\n"
	p := filepath.Join(ws, "wsl-modules.yml")
	testenv.WriteFile(t, p, list)
	return p
}

// TestStockModeInTree runs stock mode with a config fragment whose
// options are module-only (a codepage of fs/nls; UDF, which also makes
// CRC_ITU_T of lib/ m): the release carries Microsoft's kernel, the
// image the stock modules plus the listed one plus the in-tree ones at
// kernel/<dir>/, with the stock vermagic, recorded in the manifest and
// SOURCES.md; kmod resolves them, a re-run reuses everything, and the
// stock kernel boots with the image and modprobes them (udf with its
// dependencies crc-itu-t, ours, and nls_base, Microsoft's).
func TestStockModeInTree(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules and boots qemu")
	}
	ctx := context.Background()
	list := fragmentList(t, "", "CONFIG_NLS_UTF8=m", "CONFIG_UDF_FS=m")
	work := filepath.Join(t.TempDir(), "work")
	o := stockOptions(t, list, work)
	o.KernelMode = ""
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	k := res.Last()
	m := k.Manifest
	if m.Kernel.Mode != manifest.ModeStock || !strings.Contains(m.Kernel.ModeReason, "kernel mode auto: Microsoft's kernel and modules were given") ||
		!strings.Contains(m.Kernel.ModeReason, "fs/nls/ (CONFIG_NLS_UTF8)") || m.Inputs.Mode != ModeAuto {
		t.Errorf("kernel %+v, inputs mode %q", m.Kernel, m.Inputs.Mode)
	}
	if got, _ := digest.File(k.KernelImage); got != m.Kernel.Stock.KernelSHA256 {
		t.Errorf("released kernel sha256 %s, Microsoft's %s", got, m.Kernel.Stock.KernelSHA256)
	}
	want := map[string]string{"provider": "extra/provider/wslt_provider.ko", "in-tree-fs-nls": "kernel/fs/nls/nls_utf8.ko",
		"in-tree-fs-udf": "kernel/fs/udf/udf.ko", "in-tree-lib": "kernel/lib/crc-itu-t.ko"}
	got := map[string]string{}
	for _, mm := range m.Modules {
		if mm.Status == manifest.StatusOK && len(mm.Files) == 1 {
			got[mm.Name] = mm.Files[0]
		}
		if strings.HasPrefix(mm.Name, "in-tree-") && (mm.Source.Kind != "in-tree" || !slices.Contains(mm.Config, "CONFIG_UDF_FS=m")) {
			t.Errorf("module %+v", mm)
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("modules %v, want %v", got, want)
	}
	staged := filepath.Join(k.BuildDir, "staging", "lib", "modules", m.Kernel.Release)
	vermagic := func(p string) string { return strings.SplitN(dumpVersions(t, p), "vermagic ", 2)[1] }
	if a, b := vermagic(filepath.Join(staged, "kernel/fs/nls/nls_utf8.ko")), vermagic(filepath.Join(staged, "kernel/fs/nls/nls_base.ko")); a != b {
		t.Errorf("vermagic %q, the stock modules' %q", a, b)
	}
	deps, err := exec.Command(testenv.Tool(t, "modprobe"), "-d", filepath.Join(k.BuildDir, "staging"), "-S", m.Kernel.Release,
		"--show-depends", "udf").CombinedOutput()
	if err != nil || !strings.Contains(string(deps), "kernel/lib/crc-itu-t.ko") || !strings.Contains(string(deps), "kernel/fs/nls/nls_base.ko") {
		t.Errorf("modprobe --show-depends udf: %v\n%s", err, deps)
	}
	sources, _ := os.ReadFile(filepath.Join(k.DistDir, "SOURCES.md"))
	if !strings.Contains(string(sources), "`in-tree-fs-nls`: directory `fs/nls/` of the kernel source above, built as modules with `CONFIG_NLS_UTF8=m") {
		t.Errorf("SOURCES.md:\n%s", sources)
	}
	// A re-run takes the decision and the plan from kernel.json.
	res2, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if m2 := res2.Last().Manifest; m2.Kernel.ModeReason != m.Kernel.ModeReason || len(m2.Modules) != len(m.Modules) || res2.Last().Modules[0].Seconds != k.Modules[0].Seconds {
		t.Errorf("re-run: %+v", m2.Kernel)
	}
	boot, err := boottest.Boot(ctx, boottest.Config{Kernel: k.KernelImage, Disk: k.VHDX, Format: "vhdx",
		Modules: []string{"nls_utf8", "udf", "wslt_provider"}})
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	if boot.Release != m.Kernel.Release || len(boot.Failed) > 0 || strings.Join(boot.Loaded, " ") != "nls_utf8 udf wslt_provider" ||
		!slices.Contains(boot.Lsmod, "crc_itu_t") {
		t.Errorf("boot: uname -r %q, loaded %v, failed %v, lsmod %v\n%s", boot.Release, boot.Loaded, boot.Failed, boot.Lsmod, boot.Console)
	}
}

// TestStockModeFragmentRefused: stock mode given explicitly with a
// fragment option that built-in code references fails before anything is
// prepared or built, naming the option, its fragment line, the file:line
// and kernel: build; the work dir holds no output and the kernel cache no
// new entry.
func TestStockModeFragmentRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("configures the kernel source")
	}
	list := fragmentList(t, "stock", "CONFIG_NLS_UTF8=m", "CONFIG_RFKILL=m")
	work := filepath.Join(t.TempDir(), "work")
	o := stockOptions(t, list, work)
	o.KernelMode = ""
	entries := func() int { e, _ := os.ReadDir(filepath.Join(o.CacheDir, "kernel")); return len(e) }
	before := entries()
	_, err := Run(context.Background(), o)
	for _, w := range []string{"pipeline: local: kernel mode stock: ", "wsl-modules.yml:5: config-fragment: CONFIG_RFKILL: include/linux/rfkill.h:67",
		"(use kernel: build)"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Run: %v, want it to contain %q", err, w)
		}
	}
	for _, p := range []string{"build", "dist", "shards", KernelFile, "modwork"} {
		if _, err := os.Stat(filepath.Join(work, LocalName, p)); err == nil {
			t.Errorf("%s left in the work dir", p)
		}
	}
	if after := entries(); after != before {
		t.Errorf("kernel cache: %d entries, %d before", after, before)
	}
}

// plannedJob runs the plan stage of stock options over list (kernel mode
// from the list) and returns the runner and the kernel's job, its work
// dir made.
func plannedJob(t *testing.T, list string) (*runner, *kernelJob) {
	t.Helper()
	o := stockOptions(t, list, filepath.Join(t.TempDir(), "work"))
	o.KernelMode = ""
	r, err := newRunner(o)
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	k := p.jobs[0]
	if err := os.MkdirAll(k.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return r, k
}

// TestAutoModeFragmentFallsBack: auto mode with stock files and a
// fragment that would change the kernel decides build mode in the kernel
// stage (before anything is built), with the refusal as the reason.
func TestAutoModeFragmentFallsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("configures the kernel source")
	}
	ctx := context.Background()
	r, k := plannedJob(t, fragmentList(t, "", "CONFIG_VLAN_8021Q=m"))
	if k.mode != ModeStock || k.inputs.Mode != ModeAuto || !strings.Contains(k.modeReason, "checked against the kernel source") {
		t.Fatalf("plan: mode %s (inputs %q): %s", k.mode, k.inputs.Mode, k.modeReason)
	}
	if err := r.planFragment(ctx, k); err != nil {
		t.Fatal(err)
	}
	if k.mode != ModeBuild || k.stock != nil || k.intree != nil ||
		!strings.HasPrefix(k.modeReason, "kernel mode auto: Microsoft's kernel and modules were given, but ") ||
		!strings.Contains(k.modeReason, "wsl-modules.yml:3: config-fragment: CONFIG_VLAN_8021Q: net/8021q/Makefile:5: builds vlan_core.o into the kernel") ||
		!strings.HasSuffix(k.modeReason, "so the kernel is built from the tag's source with the fragment (not Microsoft's binary)") {
		t.Errorf("mode %s: %s", k.mode, k.modeReason)
	}
}

// TestStockModeInTreeStages runs stock mode with a fragment and no
// config as separate stages (kernel, two module shards, package), each
// with its own runner as scale-out jobs do: the fragment is planned with
// the config the stock kernel embeds, the later stages take the kernel
// stage's plan from kernel.json, shard 1 builds the in-tree module, and
// the package has it.
func TestStockModeInTreeStages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules")
	}
	ctx := context.Background()
	list := fragmentList(t, "stock", "CONFIG_NLS_UTF8=m")
	work := filepath.Join(t.TempDir(), "work")
	var m *manifest.Manifest
	for _, st := range []struct{ stage, shard string }{{StageKernel, ""}, {StageModules, "2/2"}, {StageModules, "1/2"}, {StagePackage, ""}} {
		o := stockOptions(t, list, work)
		// No config: the fragment is planned, and the tree prepared,
		// with the one Microsoft's kernel embeds (Debian's source has
		// no config-wsl to fall back on).
		o.KernelMode, o.Stage, o.Shard, o.ConfigFile = "", st.stage, st.shard, ""
		res, err := Run(ctx, o)
		if err != nil {
			t.Fatalf("stage %s %s: %v", st.stage, st.shard, err)
		}
		if k := res.Last(); k.Mode != ModeStock || !strings.Contains(k.ModeReason, "fs/nls/ (CONFIG_NLS_UTF8)") {
			t.Errorf("stage %s %s: mode %s: %s", st.stage, st.shard, k.Mode, k.ModeReason)
		}
		m = res.Last().Manifest
	}
	if m == nil || len(m.Modules) != 2 || m.Modules[1].Name != "in-tree-fs-nls" || !slices.Equal(m.Modules[1].Files, []string{"kernel/fs/nls/nls_utf8.ko"}) {
		t.Fatalf("package manifest modules: %+v", m)
	}
}

// TestFragmentRecheck: when the stock tree was prepared with another
// config than the one the fragment was planned against, the kernel stage
// plans it again over the prepared config (and keeps the prepared kernel
// when that plan holds).
func TestFragmentRecheck(t *testing.T) {
	if testing.Short() {
		t.Skip("configures the kernel source")
	}
	ctx := context.Background()
	r, k := plannedJob(t, fragmentList(t, "stock", "CONFIG_NLS_UTF8=m"))
	kern := buildtest.StockKernel(t)
	k.intree = &intree.Plan{Base: kconfig.Config{"CONFIG_SOMETHING_ELSE": "y"}}
	got, err := r.recheckFragment(ctx, k, kern, kbuild.KernelOptions{})
	if err != nil || got != kern || k.mode != ModeStock || len(k.intree.Units) != 1 || k.intree.Units[0].Dir != "fs/nls" {
		t.Fatalf("recheck: %v, mode %s, plan %+v", err, k.mode, k.intree)
	}
	prepared, _ := kconfig.ReadConfig(kern.Config())
	if d := kconfig.DiffConfig(k.intree.Base, prepared); len(d) != 0 {
		t.Errorf("plan base differs from the prepared config: %v", d)
	}
}
