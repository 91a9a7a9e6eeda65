package symcrc

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// The real-kernel tests: the test kernel (buildtest.TestKernel, the
// same source and config fully built) gives the reference CRCs, its
// stock modules the symbols to prove.

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("real kernel trees: not in -short")
	}
}

func readConfig(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stockImports returns the vmlinux symbols the kernel's stock modules
// (all, or those named) import, with the CRCs their __versions record.
func stockImports(t *testing.T, k *kbuild.Kernel, names ...string) map[string]uint32 {
	t.Helper()
	return imports(t, k, true, names...)
}

// imports returns what the named (or all) stock modules import from
// vmlinux and, unless vmlinuxOnly, from other stock modules.
func imports(t *testing.T, k *kbuild.Kernel, vmlinuxOnly bool, names ...string) map[string]uint32 {
	t.Helper()
	symvers, err := modtree.ReadSymvers(k.Symvers())
	if err != nil {
		t.Fatal(err)
	}
	paths, err := modtree.ListModules(k.ModulesDir())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{}
	for _, p := range paths {
		if len(names) > 0 && !contains(names, kmodule.ModName(p)) {
			continue
		}
		m, err := kmodule.ReadFile(filepath.Join(k.ModulesDir(), p))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range m.Needs {
			e, ok := symvers[n.Name]
			if !n.HasCRC || !ok || vmlinuxOnly && e.Module != "vmlinux" {
				continue
			}
			if uint64(uint32(n.CRC)) != e.CRC {
				t.Fatalf("%s: %s has CRC 0x%08x, Module.symvers 0x%08x", p, n.Name, n.CRC, e.CRC)
			}
			want[n.Name] = uint32(n.CRC)
		}
	}
	if len(want) == 0 {
		t.Fatalf("no vmlinux imports in %s (%v)", k.ModulesDir(), names)
	}
	return want
}

// sampleVmlinux adds about n vmlinux symbols of Module.symvers to want,
// spread over the sorted list (deterministic), plus the named ones.
func sampleVmlinux(t *testing.T, k *kbuild.Kernel, want map[string]uint32, n int, named ...string) {
	t.Helper()
	symvers, err := modtree.ReadSymvers(k.Symvers())
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for s, e := range symvers {
		if e.Module == "vmlinux" {
			all = append(all, s)
		}
	}
	sort.Strings(all)
	if n > 0 {
		step := max(1, len(all)/n)
		for i := 0; i < len(all); i += step {
			want[all[i]] = uint32(symvers[all[i]].CRC)
		}
	}
	for _, s := range named {
		e, ok := symvers[s]
		if !ok || e.Module != "vmlinux" {
			t.Fatalf("%s is not a vmlinux export of the test kernel", s)
		}
		want[s] = uint32(e.CRC)
	}
}

// requireProven fails the test unless every symbol of want was proven.
func requireProven(t *testing.T, rep *Report, want map[string]uint32) {
	t.Helper()
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rep.Unlocated) > 0 {
		t.Fatalf("unlocated: %v", rep.Unlocated)
	}
	if len(rep.Checked) != len(want) {
		t.Fatalf("%d symbols checked, want %d", len(rep.Checked), len(want))
	}
	for _, c := range rep.Checked {
		if want[c.Symbol] != c.CRC {
			t.Fatalf("%s: checked with CRC 0x%08x, stock 0x%08x", c.Symbol, c.CRC, want[c.Symbol])
		}
	}
}

// checkedFile returns the file a symbol was proven from ("" if not).
func checkedFile(rep *Report, sym string) string {
	for _, c := range rep.Checked {
		if c.Symbol == sym {
			return c.File
		}
	}
	return ""
}

func TestProveTestKernel(t *testing.T) {
	skipShort(t)
	k := buildtest.TestKernel(t)
	tree := prepared(t, "x86_64", readConfig(t, buildtest.ConfigFile()))
	if got := tree.release(t); got != k.Meta.Release {
		t.Fatalf("prepared tree release %q, test kernel %q", got, k.Meta.Release)
	}
	// What the stock modules import from vmlinux and from each other
	// (fat's exports for vfat and msdos: objects of obj-m, -DMODULE).
	want := imports(t, k, false)
	n := len(want)
	symvers, err := modtree.ReadSymvers(k.Symvers())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"fat_attach", "video_ioctl2"} { // exported by stock modules
		want[s] = uint32(symvers[s].CRC)
	}
	// Assembly exports (the asm-prototypes.h route) and a macro-made one.
	sampleVmlinux(t, k, want, 300, "memcpy", "memset", "__put_user_4", "clear_page_erms", "param_ops_int")
	t.Logf("proving %d symbols (%d imported by the stock modules)", len(want), n)
	rep, err := Prove(context.Background(), tree.options(t, testenv.LogWriter(t)), want)
	if err != nil {
		t.Fatal(err)
	}
	requireProven(t, rep, want)
	for sym, file := range map[string]string{"memcpy": "arch/x86/lib/memcpy_64.S", "param_ops_int": "kernel/params.c",
		"fat_attach": "fs/fat/inode.c", "video_ioctl2": "drivers/media/v4l2-core/v4l2-ioctl.c"} {
		if got := checkedFile(rep, sym); got != file {
			t.Errorf("%s proven from %q, want %s", sym, got, file)
		}
	}
	t.Logf("%d symbols proven from %d files: index %s (cached %v), kbuild %s",
		len(rep.Checked), rep.Files, rep.IndexTime, rep.IndexCached, rep.KbuildTime)
}

// wrongConfig is the test config with CONFIG_DEBUG_SPINLOCK=y: spinlock_t
// (empty on this UP kernel) gains a raw lock, magic, owner_cpu and owner,
// so every structure with a lock in it (struct inode, struct mutex,
// wait_queue_head, ...) changes layout, while the release string and the
// vermagic stay the same.
func wrongConfig(t *testing.T) []byte {
	cfg := readConfig(t, buildtest.ConfigFile())
	const off, on = "# CONFIG_DEBUG_SPINLOCK is not set\n", "CONFIG_DEBUG_SPINLOCK=y\n"
	if !bytes.Contains(cfg, []byte(off)) {
		t.Fatalf("%s has no %q", buildtest.ConfigFile(), strings.TrimSpace(off))
	}
	return bytes.Replace(cfg, []byte(off), []byte(on), 1)
}

func TestProveWrongConfig(t *testing.T) {
	skipShort(t)
	k := buildtest.TestKernel(t)
	tree := prepared(t, "x86_64", wrongConfig(t))
	conf := readConfig(t, filepath.Join(tree.obj, ".config"))
	if !bytes.Contains(conf, []byte("\nCONFIG_DEBUG_SPINLOCK=y\n")) {
		t.Fatal("olddefconfig dropped CONFIG_DEBUG_SPINLOCK=y")
	}
	if got := tree.release(t); got != k.Meta.Release {
		t.Fatalf("the wrong config must keep the release: %q, test kernel %q", got, k.Meta.Release)
	}
	want := stockImports(t, k, "fat", "vfat")
	sampleVmlinux(t, k, want, 0, "iput", "mutex_lock", "kfree", "strlen")
	rep, err := Prove(context.Background(), tree.options(t, testenv.LogWriter(t)), want)
	if err != nil {
		t.Fatal(err)
	}
	err = rep.Err()
	if err == nil {
		t.Fatal("a config with another spinlock_t layout passed the proof")
	}
	mis := map[string]Mismatch{}
	for _, m := range rep.Mismatches {
		mis[m.Symbol] = m
	}
	for sym, file := range map[string]string{"iput": "fs/inode.c", "mutex_lock": "kernel/locking/mutex.c"} {
		m, ok := mis[sym]
		if !ok || m.File != file || m.Stock != want[sym] || m.Source == m.Stock || m.Kind != CRCDiffers {
			t.Errorf("%s: mismatch %+v, want one in %s", sym, m, file)
		}
		if !strings.Contains(err.Error(), sym+": stock CRC ") || !strings.Contains(err.Error(), "("+file+")") {
			t.Errorf("the error does not name %s and %s", sym, file)
		}
	}
	// Types without locks keep their CRC: the proof is not just "differs".
	for _, sym := range []string{"kfree", "strlen"} {
		if checkedFile(rep, sym) == "" {
			t.Errorf("%s (no structure with a lock in its type) not proven", sym)
		}
	}
	t.Logf("%d of %d symbols mismatch with CONFIG_DEBUG_SPINLOCK=y, e.g.:", len(rep.Mismatches), len(want))
	for _, m := range rep.Mismatches[:min(5, len(rep.Mismatches))] {
		t.Logf("  %s", m)
	}
}

// TestProveTiming times the proof for what a typical module imports
// (fat and vfat: about 100 vmlinux symbols) on 2 jobs, with a cold and
// a warm index.
func TestProveTiming(t *testing.T) {
	skipShort(t)
	k := buildtest.TestKernel(t)
	tree := prepared(t, "x86_64", readConfig(t, buildtest.ConfigFile()))
	want := stockImports(t, k, "fat", "vfat")
	o := tree.options(t, nil)
	o.CacheDir = t.TempDir()
	for _, run := range []string{"cold", "warm"} {
		start := time.Now()
		rep, err := Prove(context.Background(), o, want)
		if err != nil {
			t.Fatal(err)
		}
		requireProven(t, rep, want)
		if rep.IndexCached != (run == "warm") {
			t.Errorf("%s run: index cached %v", run, rep.IndexCached)
		}
		t.Logf("%s index: %d symbols from %d files in %s (index %s, kbuild %s, -j%d)", run, len(want), rep.Files,
			time.Since(start).Round(time.Millisecond), rep.IndexTime.Round(time.Millisecond),
			rep.KbuildTime.Round(time.Millisecond), o.Jobs)
	}
}

func TestProveArm64(t *testing.T) {
	skipShort(t)
	k := buildtest.TestKernelArm64(t)
	tree := prepared(t, "arm64", readConfig(t, buildtest.ConfigFileArm64()))
	if got := tree.release(t); got != k.Meta.Release {
		t.Fatalf("prepared tree release %q, arm64 test kernel %q", got, k.Meta.Release)
	}
	want := stockImports(t, k)
	sampleVmlinux(t, k, want, 200, "memcpy", "memset")
	rep, err := Prove(context.Background(), tree.options(t, testenv.LogWriter(t)), want)
	if err != nil {
		t.Fatal(err)
	}
	requireProven(t, rep, want)
	if f := checkedFile(rep, "memcpy"); !strings.HasPrefix(f, "arch/arm64/lib/") || !strings.HasSuffix(f, ".S") {
		t.Errorf("arm64 memcpy proven from %q, want arch/arm64/lib/*.S", f)
	}
	t.Logf("%d symbols proven from %d files in %s", len(rep.Checked), rep.Files, rep.KbuildTime)
}
