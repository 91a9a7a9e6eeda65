package modbuild_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/intree"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// inTreeBuild builds units against the stock-mode test kernel with an
// empty module list and returns the results by name, the modules dir and
// the progress log.
func inTreeBuild(t *testing.T, k *kbuild.Kernel, src string, units []intree.Unit) (map[string]*modbuild.ModuleResult, string, string) {
	t.Helper()
	ws := t.TempDir()
	l := buildtest.ModuleList(t, ws, "modules: []\n")
	var log bytes.Buffer
	mdir := filepath.Join(ws, "modules")
	res, err := modbuild.BuildModules(context.Background(), modbuild.ModulesOptions{Kernel: k, List: l, WorkDir: filepath.Join(ws, "work"),
		ModulesDir: mdir, LogDir: filepath.Join(ws, "logs"), KernelSource: src, InTree: units,
		Progress: progress.New(&log)})
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]*modbuild.ModuleResult{}
	for _, r := range res {
		by[r.Name] = r
	}
	return by, mdir, log.String()
}

// TestInTreeStockModules plans a fragment over Debian's 6.12 with the
// test config (codepages under fs/nls, whose file unit builds three
// modules of one directory; UDF, a directory the stock config never
// built, which makes CRC_ITU_T (lib/) visible as m) and builds it against
// the stock-mode test kernel: every module lands at kernel/<dir>/ as a
// kernel built with the fragment has it, with the stock vermagic, passes
// the verification and the CRC proof, udf is built after the lib/ unit
// whose crc_itu_t it uses, and kmod's depmod and modprobe resolve the
// staged tree.
func TestInTreeStockModules(t *testing.T) {
	if testing.Short() {
		t.Skip("prepares the stock kernel and builds modules")
	}
	modprobe, modinfo, depmodBin := testenv.Tool(t, "modprobe"), testenv.Tool(t, "modinfo"), testenv.Tool(t, "depmod")
	k := buildtest.StockKernel(t)
	src := buildtest.SourceDir(t)
	f, err := kconfig.ParseFragment("wsl-modules.yml", 3, "CONFIG_NLS_UTF8=m\nCONFIG_NLS_CODEPAGE_932=m\nCONFIG_UDF_FS=m\n")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := intree.PlanSource(context.Background(), kbuild.KernelOptions{Source: src, ConfigFile: buildtest.ConfigFile(),
		Arch: "x86_64", Fragment: f}, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	by, mdir, log := inTreeBuild(t, k, src, plan.Units)
	want := map[string][]string{
		"in-tree-fs-nls": {"kernel/fs/nls/nls_cp932.ko", "kernel/fs/nls/nls_euc-jp.ko", "kernel/fs/nls/nls_utf8.ko"},
		"in-tree-fs-udf": {"kernel/fs/udf/udf.ko"},
		"in-tree-lib":    {"kernel/lib/crc-itu-t.ko"},
	}
	if len(by) != len(want) {
		t.Fatalf("results %v, want %v", by, want)
	}
	for name, files := range want {
		r := by[name]
		if r == nil || r.Status != manifest.StatusOK || !slices.Equal(r.Files, files) || r.Source.Kind != "in-tree" ||
			!slices.Contains(r.Config, "CONFIG_UDF_FS=m") || len(r.Warnings) > 0 {
			t.Errorf("%s: %+v", name, r)
			continue
		}
		for _, f := range files {
			out, err := exec.Command(modinfo, "-F", "vermagic", filepath.Join(mdir, f)).Output()
			if err != nil || strings.TrimSpace(string(out)) != strings.TrimSpace(k.Meta.Vermagic) {
				t.Errorf("%s: vermagic %q (%v), the stock kernel's %q", f, out, err, k.Meta.Vermagic)
			}
		}
	}
	if d := by["in-tree-fs-udf"].DependsOn; !slices.Equal(d, []string{"in-tree-lib"}) {
		t.Errorf("udf depends on %v, want in-tree-lib (crc_itu_t)", d)
	}
	if !strings.Contains(log, "CRC proof:") || !strings.Contains(log, " 0 mismatches") {
		t.Errorf("no CRC proof in the log")
	}
	// The staged tree (Microsoft's modules plus these) through kmod.
	var added []*modtree.Entry
	for _, r := range by {
		added = append(added, r.Entries...)
	}
	out := t.TempDir()
	if _, err := modbuild.Assemble(context.Background(), out, modbuild.AssembleOptions{Kernel: k, Added: added}); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(out, "staging")
	rel := k.Meta.Release
	dm := exec.Command(depmodBin, "-b", root, "-e", "-E", k.Symvers(), "-n", rel)
	var stderr bytes.Buffer
	dm.Stderr = &stderr
	if err := dm.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("kmod depmod -e -E: %v\n%s", err, stderr.String())
	}
	deps, err := exec.Command(modprobe, "-d", root, "-S", rel, "--show-depends", "udf").CombinedOutput()
	if err != nil {
		t.Fatalf("modprobe --show-depends udf: %v\n%s", err, deps)
	}
	for _, p := range []string{"kernel/lib/crc-itu-t.ko", "kernel/fs/nls/nls_base.ko", "kernel/fs/udf/udf.ko"} {
		if !strings.Contains(string(deps), filepath.Join(rel, p)) {
			t.Errorf("modprobe --show-depends udf does not load %s:\n%s", p, deps)
		}
	}
}

// TestInTreeUnexportedSymbol builds an in-tree unit whose module calls a
// function Microsoft's kernel has but does not export: modpost refuses
// it, and the failure names the symbol, the directory and kernel: build;
// nothing is installed.
func TestInTreeUnexportedSymbol(t *testing.T) {
	if testing.Short() {
		t.Skip("prepares the stock kernel and builds a module")
	}
	k := buildtest.StockKernel(t)
	src := t.TempDir()
	for p, body := range map[string]string{
		"drivers/wsltest/Makefile": "obj-$(CONFIG_WSLT_SYNC) += wslt_sync.o\n",
		"drivers/wsltest/wslt_sync.c": `#include <linux/module.h>
extern void ksys_sync(void);
static int __init wslt_init(void) { ksys_sync(); return 0; }
module_init(wslt_init);
MODULE_LICENSE("GPL");
`} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u := intree.Unit{Name: intree.UnitName("drivers/wsltest"), Dir: "drivers/wsltest", Objects: []string{"wslt_sync.o"},
		Sources: []string{"wslt_sync.c"}, Selected: []string{"CONFIG_WSLT_SYNC"},
		Options: []intree.Option{{Name: "CONFIG_WSLT_SYNC", Value: "m", Line: 4}}}
	by, mdir, _ := inTreeBuild(t, k, src, []intree.Unit{u})
	r := by[u.Name]
	if r == nil || r.Status != manifest.StatusFailed || !strings.Contains(r.Error, "Microsoft's kernel does not export ksys_sync") ||
		!strings.Contains(r.Error, "drivers/wsltest (CONFIG_WSLT_SYNC)") || !strings.Contains(r.Error, "kernel: build") {
		t.Fatalf("result %+v", r)
	}
	if _, err := os.Stat(filepath.Join(mdir, "kernel", "drivers", "wsltest", "wslt_sync.ko")); err == nil {
		t.Error("the failed module was installed")
	}
}
