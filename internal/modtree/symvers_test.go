package modtree_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// rebuildSymvers rebuilds Module.symvers from a kernel image and a module
// directory and returns its lines, sorted.
func rebuildSymvers(t *testing.T, image, modDir, release string) ([]string, *kimage.ExportTable) {
	t.Helper()
	f, err := kimage.Open(image, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	et, err := f.Exports()
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Release(); got != release {
		t.Errorf("%s: release %q, want %q", image, got, release)
	}
	tree, err := modtree.LoadDir(modDir, release)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := modtree.BuildSymvers(et.Symbols, tree)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := modtree.WriteSymvers(&buf, lines); err != nil {
		t.Fatal(err)
	}
	return sortedLines(buf.Bytes()), et
}

func sortedLines(b []byte) []string {
	l := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	sort.Strings(l)
	return l
}

// compareSymvers requires got to equal the lines of the file want, and
// to hold both vmlinux and module lines.
func compareSymvers(t *testing.T, got []string, want string) {
	t.Helper()
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	w := sortedLines(b)
	if !reflect.DeepEqual(got, w) {
		gs, ws := map[string]bool{}, map[string]bool{}
		for _, l := range got {
			gs[l] = true
		}
		for _, l := range w {
			ws[l] = true
		}
		n := 0
		for _, l := range w {
			if !gs[l] && n < 10 {
				t.Errorf("missing: %q", l)
				n++
			}
		}
		for _, l := range got {
			if !ws[l] && n < 20 {
				t.Errorf("extra:   %q", l)
				n++
			}
		}
		t.Fatalf("rebuilt Module.symvers: %d lines, %s has %d", len(got), want, len(w))
	}
	mods := 0
	for _, l := range got {
		if strings.Split(l, "\t")[2] != "vmlinux" {
			mods++
		}
	}
	if mods == 0 || mods == len(got) {
		t.Fatalf("%d module lines of %d: want both vmlinux and module lines", mods, len(got))
	}
	t.Logf("%d lines (%d from modules) equal %s", len(got), mods, want)
}

func TestBuildSymversTestKernel(t *testing.T) {
	k := buildtest.TestKernel(t)
	got, et := rebuildSymvers(t, k.Image(), k.ModulesDir(), k.Meta.Release)
	if et.Scanned || et.Layout != kimage.LayoutGPLTables {
		t.Errorf("bzImage: layout %v, scanned %v", et.Layout, et.Scanned)
	}
	compareSymvers(t, got, k.Symvers())
}

func TestBuildSymversArm64(t *testing.T) {
	if testing.Short() {
		t.Skip("arm64 test kernel")
	}
	k := buildtest.TestKernelArm64(t)
	got, et := rebuildSymvers(t, k.Image(), k.ModulesDir(), k.Meta.Release)
	if !et.Scanned {
		t.Errorf("arm64 Image: tables found by name, want by structure")
	}
	compareSymvers(t, got, k.Symvers())
}

// TestBuildSymversDebian rebuilds the Module.symvers of a distribution
// kernel nobody here built (Debian's vmlinuz: relocatable, KASLR, xz with
// the x86 BCJ filter) and compares it with linux-headers' copy.
func TestBuildSymversDebian(t *testing.T) {
	root, rel := testenv.DebianModules(t)
	want := testenv.DebianSymvers(t)
	got, _ := rebuildSymvers(t, filepath.Join(root, "boot", "vmlinuz-"+rel),
		filepath.Join(root, "lib", "modules", rel), rel)
	compareSymvers(t, got, want)
}

func TestSymverModule(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/fs/fat/fat.ko":                  "fs/fat/fat",
		"kernel/drivers/i2c/i2c-core.ko.zst":    "drivers/i2c/i2c-core",
		"kernel/drivers/media/mc/mc.ko.xz":      "drivers/media/mc/mc",
		"extra/v4l2loopback/v4l2loopback.ko":    "extra/v4l2loopback/v4l2loopback",
		"updates/dkms/zfs.ko.gz":                "updates/dkms/zfs",
		"kernel/kernel/sched/some-module.ko":    "kernel/sched/some-module",
		"kernel/net/ipv4/netfilter/x_tables.ko": "net/ipv4/netfilter/x_tables",
	} {
		if got := modtree.SymverModule(in); got != want {
			t.Errorf("SymverModule(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteSymversRoundTrip(t *testing.T) {
	lines := []modtree.Symver{
		{Symbol: "printk", SymverEntry: modtree.SymverEntry{CRC: 0x92997ed8, Module: "vmlinux", Export: modtree.ExportSymbol}},
		{Symbol: "i2c_transfer", SymverEntry: modtree.SymverEntry{CRC: 0x1, Module: "drivers/i2c/i2c-core", Export: modtree.ExportSymbolGPL}},
		{Symbol: "cxl_x", SymverEntry: modtree.SymverEntry{CRC: 0xffffffff, Module: "vmlinux", Export: modtree.ExportSymbolGPL, Namespace: "CXL"}},
	}
	var buf bytes.Buffer
	if err := modtree.WriteSymvers(&buf, lines); err != nil {
		t.Fatal(err)
	}
	want := "0x92997ed8\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n" +
		"0x00000001\ti2c_transfer\tdrivers/i2c/i2c-core\tEXPORT_SYMBOL_GPL\t\n" +
		"0xffffffff\tcxl_x\tvmlinux\tEXPORT_SYMBOL_GPL\tCXL\n"
	if buf.String() != want {
		t.Fatalf("WriteSymvers:\n%s\nwant:\n%s", buf.String(), want)
	}
	p := filepath.Join(t.TempDir(), "Module.symvers")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := modtree.ReadSymvers(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if back[l.Symbol] != l.SymverEntry {
			t.Errorf("%s: read back %+v, wrote %+v", l.Symbol, back[l.Symbol], l.SymverEntry)
		}
	}
	bad := []modtree.Symver{{Symbol: "a\tb", SymverEntry: modtree.SymverEntry{Module: "vmlinux", Export: modtree.ExportSymbol}}}
	if err := modtree.WriteSymvers(&buf, bad); err == nil {
		t.Error("WriteSymvers accepted a symbol with a tab")
	}
}

// TestBuildSymversDuplicate: a symbol exported by vmlinux and a module is
// an error naming both, as it is for modpost.
func TestBuildSymversDuplicate(t *testing.T) {
	root, rel := testenv.DebianModules(t)
	src := filepath.Join(root, "lib", "modules", rel, "kernel", "fs", "fat", "fat.ko")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "kernel", "fs", "fat")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fat.ko"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	tree, err := modtree.LoadDir(filepath.Dir(filepath.Dir(filepath.Dir(dir))), rel)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := modtree.BuildSymvers(nil, tree)
	if err != nil || len(lines) < 20 {
		t.Fatalf("fat.ko alone: %d lines, %v", len(lines), err)
	}
	for _, l := range lines {
		if l.Module != "fs/fat/fat" || l.Export != modtree.ExportSymbolGPL {
			t.Errorf("fat.ko line %v", l)
		}
	}
	_, err = modtree.BuildSymvers([]kimage.Export{{Name: "fat_search_long", CRC: 1}}, tree)
	if err == nil || !strings.Contains(err.Error(), "fat_search_long") || !strings.Contains(err.Error(), "fs/fat/fat") {
		t.Fatalf("duplicate export: %v", err)
	}
}
