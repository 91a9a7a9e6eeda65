package kbuild_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/devel"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// symversLines returns a Module.symvers file's lines, sorted (kbuild's
// order is a hash order).
func symversLines(t *testing.T, p string) []string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	sort.Strings(lines)
	return lines
}

// The stock entry of the test kernel carries Microsoft's (here: the
// build's) kernel bit for bit, the stock modules byte for byte, and a
// Module.symvers rebuilt from the two that equals the full build's.
func TestPrepareStock(t *testing.T) {
	built := buildtest.TestKernel(t)
	k := buildtest.StockKernel(t)
	if k.Meta.Mode != manifest.ModeStock || k.Meta.Release != built.Meta.Release || k.Meta.Vermagic != built.Meta.Vermagic {
		t.Fatalf("stock entry: mode %q release %q vermagic %q; built %q %q", k.Meta.Mode, k.Meta.Release, k.Meta.Vermagic,
			built.Meta.Release, built.Meta.Vermagic)
	}
	img, _ := digest.File(k.Image())
	want, _ := digest.File(built.Image())
	if img != want || k.Meta.Stock.KernelSHA256 != want {
		t.Errorf("kernel image sha256 %s (recorded %s), the stock one is %s", img, k.Meta.Stock.KernelSHA256, want)
	}
	got, exp := symversLines(t, k.Symvers()), symversLines(t, built.Symvers())
	if strings.Join(got, "\n") != strings.Join(exp, "\n") {
		t.Errorf("Module.symvers: %d lines, the build has %d", len(got), len(exp))
		for i := 0; i < len(got) && i < len(exp); i++ {
			if got[i] != exp[i] {
				t.Fatalf("first difference: %q vs %q", got[i], exp[i])
			}
		}
	}
	stock, err := modtree.LoadDir(k.ModulesDir(), k.Meta.Release)
	if err != nil {
		t.Fatal(err)
	}
	if len(stock.Modules) == 0 {
		t.Fatal("no stock modules in the entry")
	}
	for _, e := range stock.Modules {
		a, _ := digest.File(filepath.Join(k.ModulesDir(), e.Path))
		b, _ := digest.File(filepath.Join(built.ModulesDir(), e.Path))
		if a != b || a == "" {
			t.Errorf("%s differs from the stock module", e.Path)
		}
	}
	if _, err := os.Stat(filepath.Join(k.PreparedDir(), "include", "generated", "autoconf.h")); err != nil {
		t.Errorf("prepared tree: %v", err)
	}
	if _, err := devel.Verify(k.DevelDir(), devel.Options{Release: k.Meta.Release, Arch: "x86_64", Symvers: k.Symvers()}); err != nil {
		t.Errorf("kernel-devel: %v", err)
	}
	if err := k.Verify(context.Background()); err != nil {
		t.Errorf("entry digest: %v", err)
	}
	// The test config signs modules (CONFIG_MODULE_SIG, not _FORCE): the
	// stock kernel loads our unsigned modules, tainted; nothing is signed.
	if k.Meta.Signing != kbuild.SigningUnsigned || built.Meta.Signing != kbuild.SigningSigned {
		t.Errorf("signing: stock %q, built %q", k.Meta.Signing, built.Meta.Signing)
	}
	if _, err := os.Stat(filepath.Join(k.Dir, "signing")); err == nil {
		t.Errorf("the stock entry holds a signing key")
	}
}

// TestPrepareStockRefusesForcedSignatures: a config with
// CONFIG_MODULE_SIG_FORCE means the stock kernel loads only modules signed
// with Microsoft's key, so stock mode refuses it, saying why, and leaves
// no entry.
func TestPrepareStockRefusesForcedSignatures(t *testing.T) {
	cfg, err := os.ReadFile(buildtest.ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	forced := filepath.Join(t.TempDir(), "config-forced")
	os.WriteFile(forced, []byte(strings.Replace(string(cfg), "# CONFIG_MODULE_SIG_FORCE is not set", "CONFIG_MODULE_SIG_FORCE=y", 1)), 0o644)
	o := buildtest.StockOptions(t)
	o.CacheDir, o.ConfigFile = t.TempDir(), forced
	_, err = kbuild.PrepareStock(context.Background(), o)
	if !errors.Is(err, kbuild.ErrStock) || !strings.Contains(err.Error(), "CONFIG_MODULE_SIG_FORCE") || !strings.Contains(err.Error(), "kernel: build") {
		t.Fatalf("error %v", err)
	}
	if ents, _ := filepath.Glob(filepath.Join(o.CacheDir, "kernel", "*", "meta.json")); len(ents) > 0 {
		t.Errorf("left %v", ents)
	}
}

// Stock files that do not fit are refused with the names of both sides,
// and no cache entry is left behind.
func TestPrepareStockBadInput(t *testing.T) {
	f := buildtest.Stock(t)
	root, drel := testenv.DebianModules(t)
	dir := t.TempDir()
	truncated := filepath.Join(dir, "bzImage.truncated")
	b, _ := os.ReadFile(f.Kernel)
	os.WriteFile(truncated, b[:len(b)/3], 0o644)
	notKernel := filepath.Join(dir, "notes.txt")
	os.WriteFile(notKernel, []byte(strings.Repeat("not a kernel\n", 500)), 0o644)
	debianModules := filepath.Join(root, "lib", "modules", drel)
	for _, c := range []struct {
		name, kernel, modules, want string
	}{
		{"other-release-kernel", filepath.Join(root, "boot", "vmlinuz-"+drel), f.Modules, `is release "` + drel + `"`},
		{"other-release-modules", f.Kernel, debianModules, `are for release "` + drel + `"`},
		{"truncated", truncated, f.Modules, "truncated"},
		{"not-a-kernel", notKernel, f.Modules, "not a kernel image"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cache := t.TempDir()
			o := buildtest.StockOptions(t)
			o.CacheDir, o.Kernel, o.Modules = cache, c.kernel, c.modules
			_, err := kbuild.PrepareStock(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
			if c.name == "other-release-kernel" && !errors.Is(err, kbuild.ErrStock) {
				t.Errorf("error does not wrap ErrStock: %v", err)
			}
			ents, _ := filepath.Glob(filepath.Join(cache, "kernel", "*"))
			for _, e := range ents {
				if !strings.HasSuffix(e, ".lock") && !strings.Contains(filepath.Base(e), ".work-") {
					t.Errorf("left %s", e)
				}
			}
		})
	}
}

// TestPrepareStockEmbeddedConfig: Microsoft's kernels embed their config
// (CONFIG_IKCONFIG; so does the test kernel). Without a config given,
// stock mode prepares with that one (Debian's source has no in-tree WSL
// config to fall back on, so this only works through it), and the entry's
// config is the stock kernel's. With a config given that differs, the
// differences are recorded and logged by option.
func TestPrepareStockEmbeddedConfig(t *testing.T) {
	built := buildtest.TestKernel(t)
	var log bytes.Buffer
	o := buildtest.StockOptions(t)
	o.CacheDir, o.ConfigFile, o.Progress = t.TempDir(), "", progress.New(io.MultiWriter(&log, testenv.LogWriter(t)))
	k, err := kbuild.PrepareStock(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := testenv.SHA256File(t, k.Config()), testenv.SHA256File(t, built.Config()); a != b {
		t.Errorf("prepared config %s, the stock kernel's %s", a, b)
	}
	if !strings.Contains(log.String(), "preparing with the config Microsoft's kernel embeds") {
		t.Errorf("the log does not say where the config came from:\n%s", log.String())
	}
	for _, c := range k.Meta.ConfigChanges {
		if strings.Contains(c, "embedded") {
			t.Errorf("config change %q with the kernel's own config", c)
		}
	}

	cfg, err := os.ReadFile(buildtest.ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "config-wrong")
	os.WriteFile(wrong, []byte(strings.Replace(string(cfg), "# CONFIG_DEBUG_SPINLOCK is not set", "CONFIG_DEBUG_SPINLOCK=y", 1)), 0o644)
	o.ConfigFile = wrong
	k, err = kbuild.PrepareStock(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range k.Meta.ConfigChanges {
		found = found || strings.HasPrefix(c, "differs from the stock kernel's embedded config: CONFIG_DEBUG_SPINLOCK: ") && strings.HasSuffix(c, "-> y")
	}
	if !found {
		t.Errorf("config changes %q lack CONFIG_DEBUG_SPINLOCK", k.Meta.ConfigChanges)
	}
}
