package kbuild_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// TestKernelBuild checks the cached test kernel: every artefact later
// stages need, the release string, the config unchanged by olddefconfig,
// the cache size, and that a second BuildKernel is a cache hit.
func TestKernelBuild(t *testing.T) {
	k := buildtest.TestKernel(t)
	t.Logf("kernel %s in %s (%s, built in %.0fs)", k.Meta.Release, k.Dir, progress.Bytes(k.Meta.Bytes), k.Meta.BuildSeconds)
	if strings.Contains(k.Meta.Release, "+") {
		t.Errorf("release %q has a + suffix", k.Meta.Release)
	}
	img, err := os.ReadFile(k.Image())
	if err != nil {
		t.Fatal(err)
	}
	// x86 boot protocol: "HdrS" at 0x202.
	if len(img) < 0x206 || string(img[0x202:0x206]) != "HdrS" {
		t.Errorf("%s is not a bzImage", k.Image())
	}
	if out, err := exec.Command("file", "-b", k.Image()).Output(); err == nil && !strings.Contains(string(out), k.Meta.Release) {
		t.Errorf("file(1) says %q, want the release %s in it", out, k.Meta.Release)
	}
	if len(k.Meta.ConfigChanges) != 0 {
		t.Errorf("olddefconfig changed the test config: %v", k.Meta.ConfigChanges)
	}
	sv, err := modtree.ReadSymvers(k.Symvers())
	if err != nil || len(sv) < 1000 {
		t.Fatalf("Module.symvers: %d symbols, %v", len(sv), err)
	}
	if _, ok := sv["printk"]; !ok {
		if _, ok := sv["_printk"]; !ok {
			t.Errorf("Module.symvers lacks printk")
		}
	}
	tree, err := modtree.LoadDir(k.ModulesDir(), k.Meta.Release)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range tree.Modules {
		names[e.Name] = true
	}
	for _, n := range []string{"vfat", "fat", "msdos", "nls_cp437", "isofs", "videodev"} {
		if !names[n] {
			t.Errorf("stock module %s missing from %s", n, k.ModulesDir())
		}
	}
	tree.Symvers = sv
	if p := tree.Validate(modtree.ValidateOptions{Vermagic: k.Meta.Vermagic}); len(p) != 0 {
		t.Errorf("stock modules do not validate: %v", p)
	}
	for _, f := range []string{"modules.order", "modules.builtin", "modules.builtin.modinfo"} {
		if _, err := os.Stat(filepath.Join(k.ModulesDir(), f)); err != nil {
			t.Error(err)
		}
	}
	for _, l := range []string{"build", "source"} {
		if _, err := os.Lstat(filepath.Join(k.ModulesDir(), l)); err == nil {
			t.Errorf("%s link left in the modules tree", l)
		}
	}
	for _, f := range []string{"Makefile", "Module.symvers", ".config", "include/generated/utsrelease.h",
		"include/config/auto.conf", "scripts/mod/modpost", "scripts/basic/fixdep", "arch/x86/Makefile"} {
		if _, err := os.Stat(filepath.Join(k.DevelDir(), f)); err != nil {
			t.Errorf("kernel-devel: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(k.HeadersDir(), "include", "linux", "input.h")); err != nil {
		t.Errorf("headers: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(k.DevelDir(), "include", "config", "kernel.release"))
	if strings.TrimSpace(string(b)) != k.Meta.Release {
		t.Errorf("kernel-devel release %q, meta %q", b, k.Meta.Release)
	}
	// The cache must fit actions/cache comfortably.
	if k.Meta.Bytes > 1<<30 {
		t.Errorf("cache entry is %s", progress.Bytes(k.Meta.Bytes))
	}

	// Same inputs again: a cache hit, no kernel make.
	o := buildtest.Options(t)
	o.Log = &bytes.Buffer{}
	k2, err := kbuild.BuildKernel(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.CacheHit || k2.Dir != k.Dir {
		t.Errorf("second build: hit %v, dir %s (first %s)", k2.CacheHit, k2.Dir, k.Dir)
	}
	if o.Log.(*bytes.Buffer).Len() != 0 {
		t.Errorf("cache hit ran make:\n%s", o.Log)
	}
}

// TestKernelBadInput checks the kernel-side bad inputs: no config in the
// tree, a tarball with ../ or absolute paths, a directory that is not a
// kernel tree, and fragments with y->m and m->y changes.
func TestKernelBadInput(t *testing.T) {
	ctx := context.Background()
	cache := t.TempDir()

	// A tree with a Makefile but no Microsoft/config-wsl.
	fake := t.TempDir()
	os.WriteFile(filepath.Join(fake, "Makefile"), []byte("all:\n"), 0o644)
	_, err := kbuild.BuildKernel(ctx, kbuild.KernelOptions{Source: fake, CacheDir: cache})
	if err == nil || !strings.Contains(err.Error(), "no kernel config in "+fake+": none of Microsoft/config-wsl, arch/x86/configs/config-wsl exists; pass --config FILE") {
		t.Errorf("missing config: %v", err)
	}
	_, err = kbuild.BuildKernel(ctx, kbuild.KernelOptions{Source: fake, CacheDir: cache, Arch: "arm64", HostArch: "arm64"})
	if err == nil || !strings.Contains(err.Error(), "Microsoft/config-wsl-arm64, arch/arm64/configs/config-wsl-arm64") {
		t.Errorf("missing arm64 config: %v", err)
	}
	// Not a kernel tree.
	_, err = kbuild.BuildKernel(ctx, kbuild.KernelOptions{Source: t.TempDir(), CacheDir: cache})
	if err == nil || !strings.Contains(err.Error(), "is not a kernel source tree (no top-level Makefile)") {
		t.Errorf("empty dir: %v", err)
	}

	// Tarballs with unsafe paths.
	for _, name := range []string{"linux/../../evil", "/etc/evil"} {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for _, n := range []string{"linux/Makefile", name} {
			tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
			tw.Write([]byte("x"))
		}
		tw.Close()
		zw.Close()
		tb := filepath.Join(t.TempDir(), "linux.tar.gz")
		os.WriteFile(tb, buf.Bytes(), 0o644)
		_, err := kbuild.BuildKernel(ctx, kbuild.KernelOptions{Source: tb, CacheDir: cache})
		if err == nil || !strings.Contains(err.Error(), "unsafe") {
			t.Errorf("tarball with %s: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(tb), "evil")); err == nil {
			t.Errorf("tarball with %s wrote outside", name)
		}
	}

	// Fragments, checked against the real source and test config.
	src := buildtest.SourceDir(t)
	check := func(frag string) (*kbuild.KernelMeta, error) {
		f, err := kconfig.ParseFragment("wsl-modules.yml", 4, frag)
		if err != nil {
			return nil, err
		}
		c, err := kbuild.CheckConfig(ctx, kbuild.KernelOptions{Source: src, ConfigFile: buildtest.ConfigFile(), Fragment: f}, t.TempDir())
		if err != nil {
			return nil, err
		}
		return c.Meta, nil
	}
	if _, err := check("CONFIG_EXT4_FS=m\n"); err == nil || !strings.Contains(err.Error(), "wsl-modules.yml:4: config-fragment: CONFIG_EXT4_FS is y in the stock config; only n->m changes are allowed (y->m refused)") {
		t.Errorf("y->m: %v", err)
	}
	if _, err := check("CONFIG_NLS_UTF8=m\nCONFIG_VFAT_FS=y\n"); err == nil || !strings.Contains(err.Error(), "wsl-modules.yml:5: config-fragment: CONFIG_VFAT_FS=y: only n->m changes") {
		t.Errorf("m->y: %v", err)
	}
	// A bool option cannot be m.
	if _, err := check("CONFIG_TMPFS_XATTR=m\n"); err == nil || !strings.Contains(err.Error(), "wsl-modules.yml:4: config-fragment: CONFIG_TMPFS_XATTR came out as") {
		t.Errorf("bool as m: %v", err)
	}
	// The stock config's own faults come first: without CONFIG_MODULES
	// it is that, not the fragment line, that is reported.
	cfg, err := os.ReadFile(buildtest.ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	noMods := filepath.Join(t.TempDir(), "config-nomodules")
	os.WriteFile(noMods, []byte(strings.Replace(string(cfg), "CONFIG_MODULES=y", "# CONFIG_MODULES is not set", 1)), 0o644)
	f, _ := kconfig.ParseFragment("wsl-modules.yml", 4, "CONFIG_EXT4_FS=m\n")
	if _, err := kbuild.CheckConfig(ctx, kbuild.KernelOptions{Source: src, ConfigFile: noMods, Fragment: f}, t.TempDir()); err == nil ||
		!strings.Contains(err.Error(), "config "+noMods+": CONFIG_MODULES is not set") {
		t.Errorf("no CONFIG_MODULES: %v", err)
	}
	// A good n->m fragment passes and leaves the release alone.
	m, err := check("# more codepages\nCONFIG_NLS_UTF8=m\nCONFIG_NLS_CODEPAGE_850=m\n")
	if err != nil {
		t.Fatalf("n->m: %v", err)
	}
	if !strings.HasSuffix(m.Release, "-microsoft-standard-WSL2") || m.FragmentSHA256 == "" || len(m.ConfigChanges) != 0 {
		t.Errorf("meta %+v", m)
	}
}

// TestCopyDevelFallback checks the kernel-devel fallback for kernels
// without scripts/package/install-extmod-build: applied to the tree that
// script made (which holds every source and object file it copies), it
// must reproduce the same file set, and a module must build against it.
func TestCopyDevelFallback(t *testing.T) {
	k := buildtest.TestKernel(t)
	dest := filepath.Join(t.TempDir(), "kernel-devel")
	if err := kbuild.CopyDevel(k.DevelDir(), k.DevelDir(), "x86", dest); err != nil {
		t.Fatal(err)
	}
	want, got := fileSet(t, k.DevelDir()), fileSet(t, dest)
	delete(want, ".config") // added by installDevel, not part of the set
	for f := range want {
		if !got[f] {
			t.Errorf("fallback lacks %s", f)
		}
	}
	for f := range got {
		if !want[f] {
			t.Errorf("fallback has extra %s", f)
		}
	}
	mod := filepath.Join(t.TempDir(), "provider")
	if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules", "provider"), mod, atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("make", "-C", dest, "M="+mod, "modules").CombinedOutput()
	if err != nil {
		t.Fatalf("module build against the fallback tree: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(mod, "wslt_provider.ko")); err != nil {
		t.Error(err)
	}
}

func fileSet(t *testing.T, dir string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out[rel] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCopyDevelObjectWins: a file in both trees (a stale host program in
// the source tree) comes from the object tree, whatever the two
// directories are called (sorting by root name once picked the source).
func TestCopyDevelObjectWins(t *testing.T) {
	for _, names := range [][2]string{{"a-src", "z-obj"}, {"z-src", "a-obj"}} {
		dir := t.TempDir()
		src, obj := filepath.Join(dir, names[0]), filepath.Join(dir, names[1])
		files := map[string]string{
			filepath.Join(src, "Makefile"):                      "top\n",
			filepath.Join(src, "scripts", "basic", "fixdep"):    "stale source copy\n",
			filepath.Join(obj, "scripts", "basic", "fixdep"):    "built\n",
			filepath.Join(obj, "Module.symvers"):                "",
			filepath.Join(obj, "include/config/auto.conf"):      "CONFIG_MODULES=y\n",
			filepath.Join(obj, "include/config/kernel.release"): "6.6.0\n",
		}
		for p, body := range files {
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		dest := filepath.Join(dir, "devel")
		if err := kbuild.CopyDevel(src, obj, "x86", dest); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(dest, "scripts", "basic", "fixdep")); string(b) != "built\n" {
			t.Errorf("%v: scripts/basic/fixdep is %q, want the object tree's", names, b)
		}
	}
}
