package modbuild_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

func runOpts(t *testing.T, l *modlist.List, out string) modbuild.Options {
	return modbuild.Options{
		KernelSource: buildtest.GitHubTarball(t),
		List:         l, Out: out, CacheDir: buildtest.CacheDir(), Progress: progress.New(testenv.LogWriter(t)),
	}
}

const fullList = `# consumer is listed first: the order must come from the symbols
modules:
  - name: consumer
    path: modules/consumer
    make: [ "KDIR={{.KernelDir}}" ]
  - name: provider
    path: modules/provider
  - name: v4l2loopback
    path: v4l2loopback
  - name: broken
    path: modules/broken
`

// TestRunModules builds the test modules and Debian's v4l2loopback DKMS
// package against the cached test kernel: the cross-module dependency is
// found and honoured, the broken module is reported with its log while the
// others finish, and every good module passes independent checks (modinfo
// vermagic, modprobe --dump-modversions CRCs, depmod -e).
func TestRunModules(t *testing.T) {
	k := buildtest.TestKernel(t)
	v4l := filepath.Join(t.TempDir(), "v4l2loopback")
	if err := buildtest.PrepareV4L2Loopback(testenv.DKMSSource(t, "v4l2loopback"), v4l); err != nil {
		t.Fatal(err)
	}
	l := buildtest.ModulesRepo(t, fullList, map[string]string{"v4l2loopback": v4l})
	out := filepath.Join(t.TempDir(), "build")
	ctx := context.Background()

	// Default: a failed module fails the run, no output, logs kept.
	res, err := modbuild.Run(ctx, runOpts(t, l, out))
	if !errors.Is(err, modbuild.ErrModulesFailed) {
		t.Fatalf("Run: %v, want ErrModulesFailed", err)
	}
	if !res.Kernel.CacheHit {
		t.Errorf("kernel was not a cache hit")
	}
	if _, serr := os.Stat(out); serr == nil {
		t.Errorf("output %s created although a module failed", out)
	}
	msg := err.Error()
	if !strings.Contains(msg, "module broken FAILED") || !strings.Contains(msg, "broken.c:7") || !strings.Contains(msg, "this_function_does_not_exist") {
		t.Errorf("failure report lacks the module, file:line or error:\n%s", msg)
	}
	logb, lerr := os.ReadFile(filepath.Join(out+".failed-logs", "broken.log"))
	if lerr != nil || !bytes.Contains(logb, []byte("error:")) {
		t.Errorf("broken.log: %v\n%s", lerr, logb)
	}
	if len(res.Failed) != 1 || res.Failed[0].Name != "broken" {
		t.Errorf("failed: %+v", res.Failed)
	}
	for _, m := range res.Manifest.Modules {
		if m.Name != "broken" && m.Status != manifest.StatusOK {
			t.Errorf("module %s: %s %s", m.Name, m.Status, m.Error)
		}
	}

	// --keep-going: the output without the broken module.
	o := runOpts(t, l, out)
	o.KeepGoing = true
	res, err = modbuild.Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	man, err := manifest.Read(filepath.Join(out, manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if man.Kernel.Release != k.Meta.Release || !man.Kernel.CacheHit || man.Kernel.Compiler == "" || man.Kernel.ConfigSHA256 == "" {
		t.Errorf("manifest kernel %+v", man.Kernel)
	}
	mods := map[string]manifest.Module{}
	for _, m := range man.Modules {
		mods[m.Name] = m
	}
	if c := mods["consumer"]; c.Status != manifest.StatusOK || strings.Join(c.DependsOn, ",") != "provider" {
		t.Errorf("consumer: %+v", c)
	}
	if v := mods["v4l2loopback"]; v.Status != manifest.StatusOK || v.Version == "" || v.SrcVersion == "" ||
		strings.Join(v.Files, ",") != "extra/v4l2loopback/v4l2loopback.ko" {
		t.Errorf("v4l2loopback: %+v", v)
	}
	// The steps of each make are counted, through DKMS (v4l2loopback) too.
	for _, n := range []string{"consumer", "v4l2loopback"} {
		if mods[n].Steps < 3 {
			t.Errorf("%s: %d kbuild steps recorded", n, mods[n].Steps)
		}
	}
	if b := mods["broken"]; b.Status != manifest.StatusFailed || len(b.Files) != 0 {
		t.Errorf("broken: %+v", b)
	}
	for _, f := range []string{"bzImage", "Module.symvers", "System.map", "config", "logs/kernel.log",
		"logs/consumer.log", "logs/broken.log", "kernel-devel/Makefile", "headers/include/linux/input.h"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	mdir := filepath.Join(out, "staging", "lib", "modules", k.Meta.Release)
	order, _ := os.ReadFile(filepath.Join(mdir, "modules.order"))
	if !strings.HasSuffix(string(order), "extra/consumer/wslt_consumer.ko\nextra/provider/wslt_provider.ko\nextra/v4l2loopback/v4l2loopback.ko\n") {
		t.Errorf("modules.order tail:\n%s", order[max(0, len(order)-200):])
	}
	if _, err := os.Stat(filepath.Join(mdir, "extra", "broken")); err == nil {
		t.Errorf("broken module installed")
	}

	// Independent checks with kmod's tools.
	modinfo := testenv.Tool(t, "modinfo")
	modprobe := testenv.Tool(t, "modprobe")
	depmod := testenv.Tool(t, "depmod")
	stockVermagic := toolOut(t, modinfo, "-F", "vermagic", filepath.Join(mdir, "kernel", "fs", "fat", "vfat.ko"))
	if stockVermagic == "" {
		t.Fatal("no vermagic for stock vfat.ko")
	}
	for _, f := range []string{"extra/consumer/wslt_consumer.ko", "extra/provider/wslt_provider.ko", "extra/v4l2loopback/v4l2loopback.ko"} {
		if got := toolOut(t, modinfo, "-F", "vermagic", filepath.Join(mdir, f)); got != stockVermagic {
			t.Errorf("%s vermagic %q, stock %q", f, got, stockVermagic)
		}
	}
	// The test config signs modules (CONFIG_MODULE_SIG_ALL, sha256): ours
	// are signed with the build's key, as the kernel's own are.
	stockSigner := toolOut(t, modinfo, "-F", "signer", filepath.Join(mdir, "kernel", "fs", "fat", "vfat.ko"))
	if stockSigner == "" {
		t.Fatal("the stock vfat.ko is not signed")
	}
	for _, f := range []string{"extra/consumer/wslt_consumer.ko", "extra/v4l2loopback/v4l2loopback.ko"} {
		p := filepath.Join(mdir, f)
		if s, h := toolOut(t, modinfo, "-F", "signer", p), toolOut(t, modinfo, "-F", "sig_hashalgo", p); s != stockSigner || h != "sha256" {
			t.Errorf("%s: signer %q (stock %q), hash %q", f, s, stockSigner, h)
		}
	}
	if d := toolOut(t, modinfo, "-F", "depends", filepath.Join(mdir, "extra/consumer/wslt_consumer.ko")); d != "wslt_provider" {
		t.Errorf("consumer depends %q", d)
	}
	if d := toolOut(t, modinfo, "-F", "depends", filepath.Join(mdir, "extra/v4l2loopback/v4l2loopback.ko")); !strings.Contains(d, "videodev") {
		t.Errorf("v4l2loopback depends %q", d)
	}
	// The consumer's __versions CRC for the provider's symbol equals the
	// provider's __crc_ (kmodule) and the provider build's Module.symvers
	// line as written by modpost.
	dump := toolOut(t, modprobe, "--dump-modversions", filepath.Join(mdir, "extra/consumer/wslt_consumer.ko"))
	m := regexp.MustCompile(`(?m)^(0x[0-9a-f]+)\s+wslt_provider_add$`).FindStringSubmatch(dump)
	if m == nil {
		t.Fatalf("consumer has no __versions entry for wslt_provider_add:\n%s", dump)
	}
	prov, err := kmodule.ReadFile(filepath.Join(mdir, "extra/provider/wslt_provider.ko"))
	if err != nil {
		t.Fatal(err)
	}
	var crc string
	for _, e := range prov.Exports {
		if e.Name == "wslt_provider_add" && e.HasCRC {
			crc = fmt.Sprintf("0x%08x", uint32(e.CRC))
		}
	}
	if crc == "" || m[1] != crc {
		t.Errorf("consumer CRC %s, provider __crc_ %q", m[1], crc)
	}
	// Every other CRC the modules record agrees with the kernel's
	// Module.symvers, as depmod -e -E sees it (no warnings).
	dm := exec.Command(depmod, "-n", "-e", "-E", filepath.Join(out, "Module.symvers"), "-b", filepath.Join(out, "staging"), k.Meta.Release)
	var stderr bytes.Buffer
	dm.Stderr, dm.Stdout = &stderr, nil
	if err := dm.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("depmod -e: %v\n%s", err, stderr.String())
	}
	if len(res.Failed) != 1 {
		t.Errorf("keep-going result failed = %d", len(res.Failed))
	}
	// Second run over an existing --out without --force is refused.
	if _, err := modbuild.Run(ctx, runOpts(t, l, out)); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("existing out: %v", err)
	}
}

// toolOut runs a checker and returns its trimmed output.
func toolOut(t *testing.T, tool string, args ...string) string {
	t.Helper()
	return strings.TrimSpace(testenv.Run(t, tool, args...))
}

// TestRunModuleBadInput: a dependency cycle, a module dir without a
// Makefile, a url source with a wrong sha256, a git source without a
// fetcher.
func TestRunModuleBadInput(t *testing.T) {
	buildtest.TestKernel(t)
	ctx := context.Background()

	// Cycle: a uses b's export and b uses a's.
	cyc := t.TempDir()
	for _, n := range []string{"a", "b"} {
		other := map[string]string{"a": "b", "b": "a"}[n]
		os.MkdirAll(filepath.Join(cyc, n), 0o755)
		os.WriteFile(filepath.Join(cyc, n, "Kbuild"), []byte("obj-m := cyc_"+n+".o\n"), 0o644)
		os.WriteFile(filepath.Join(cyc, n, "cyc_"+n+".c"), []byte(fmt.Sprintf(`#include <linux/module.h>
int cyc_%s_fn(void); int cyc_%s_fn(void) { return cyc_%s_fn(); }
EXPORT_SYMBOL(cyc_%s_fn);
MODULE_LICENSE("GPL");
`, other, n, other, n)), 0o644)
	}
	l := buildtest.ModulesRepo(t, "modules:\n  - name: a\n    path: a\n  - name: b\n    path: b\n", map[string]string{"a": filepath.Join(cyc, "a"), "b": filepath.Join(cyc, "b")})
	out := filepath.Join(t.TempDir(), "out")
	_, err := modbuild.Run(ctx, runOpts(t, l, out))
	if err == nil || !strings.Contains(err.Error(), "dependency cycle: a -> b -> a") {
		t.Errorf("cycle: %v", err)
	}

	// No Makefile; a url with a wrong sha256 (file:// through
	// LocalFetcher); a git source with no fetcher configured.
	tb := filepath.Join(t.TempDir(), "prov.tar.gz")
	writeTarGz(t, tb, buildtest.Testdata("modules", "provider"), "prov-1.0")
	yml := fmt.Sprintf(`modules:
  - name: nomake
    path: modules/nomakefile
  - name: tarball
    url: file://%s
    sha256: %s
  - name: gitmod
    git: https://example.invalid/x.git
    ref: v1
`, tb, strings.Repeat("ab", 32))
	l = buildtest.ModulesRepo(t, yml, nil)
	o := runOpts(t, l, out)
	o.Fetch = func(ctx context.Context, m modlist.Module, dest string) (manifest.Source, error) {
		if m.Kind() == modlist.KindGit {
			return manifest.Source{}, fmt.Errorf("module %s: no network in this test", m.Name)
		}
		return modbuild.LocalFetcher(ctx, m, dest)
	}
	res, err := modbuild.Run(ctx, o)
	if !errors.Is(err, modbuild.ErrModulesFailed) {
		t.Fatalf("Run: %v", err)
	}
	errs := map[string]string{}
	for _, m := range res.Manifest.Modules {
		errs[m.Name] = m.Error
	}
	if !strings.Contains(errs["nomake"], "module nomake: no Makefile, Kbuild or dkms.conf in ") {
		t.Errorf("nomake: %q", errs["nomake"])
	}
	if !strings.Contains(errs["tarball"], "sha256 mismatch") || !strings.Contains(errs["tarball"], "modules[tarball].sha256") {
		t.Errorf("tarball: %q", errs["tarball"])
	}
	if !strings.Contains(errs["gitmod"], "no network") {
		t.Errorf("gitmod: %q", errs["gitmod"])
	}

	// With the right sha256 the tarball module builds.
	sum := testenv.SHA256File(t, tb)
	l = buildtest.ModulesRepo(t, fmt.Sprintf("modules:\n  - name: tarball\n    url: file://%s\n    sha256: %s\n", tb, sum), nil)
	o = runOpts(t, l, filepath.Join(t.TempDir(), "out2"))
	o.Fetch = modbuild.LocalFetcher
	res, err = modbuild.Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Manifest.Modules[0]; m.Status != manifest.StatusOK || m.Source.SHA256 != sum || m.Source.Kind != "url" {
		t.Errorf("tarball module: %+v", m)
	}

	// Without a fetcher, git sources fail clearly.
	l = buildtest.ModulesRepo(t, "modules:\n  - name: gitmod\n    git: https://example.invalid/x.git\n    ref: v1\n", nil)
	_, err = modbuild.Run(ctx, runOpts(t, l, filepath.Join(t.TempDir(), "out3")))
	if err == nil || !strings.Contains(err.Error(), "git sources need a fetcher") {
		t.Errorf("no fetcher: %v", err)
	}
}

func writeTarGz(t *testing.T, dst, dir, top string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: top + "/", Mode: 0o755, Typeflag: tar.TypeDir})
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		tw.WriteHeader(&tar.Header{Name: top + "/" + e.Name(), Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRunRelativePaths runs a build with a relative module list, output and
// cache directory, as a user typing "--out out" does: make -C changes
// directory, so the paths given to it must have been made absolute.
func TestRunRelativePaths(t *testing.T) {
	buildtest.TestKernel(t)
	dir := t.TempDir()
	if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules"), filepath.Join(dir, "modules"), atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	yml := "modules:\n  - name: provider\n    path: modules/provider\n  - name: consumer\n    path: modules/consumer\n"
	if err := os.WriteFile(filepath.Join(dir, modlist.FileName), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(buildtest.CacheDir(), filepath.Join(dir, "cache")); err != nil {
		t.Fatal(err)
	}
	tarball := buildtest.GitHubTarball(t)
	t.Chdir(dir)
	l, err := modlist.Load(modlist.FileName)
	if err != nil {
		t.Fatal(err)
	}
	res, err := modbuild.Run(context.Background(), modbuild.Options{KernelSource: tarball, List: l, Out: "out",
		CacheDir: "cache", Progress: progress.New(testenv.LogWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Kernel.CacheHit {
		t.Error("relative cache path missed the cached test kernel")
	}
	for _, m := range res.Manifest.Modules {
		if m.Status != manifest.StatusOK {
			t.Errorf("module %s: %s %s", m.Name, m.Status, m.Error)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "staging", "lib", "modules", res.Kernel.Meta.Release, "extra", "consumer", "wslt_consumer.ko")); err != nil {
		t.Error(err)
	}
}

// TestModuleBuildGetsNoSecrets builds a module whose Makefile prints its
// whole environment into the build log (which is published) while the
// process holds the action's token: the token must not reach the log.
func TestModuleBuildGetsNoSecrets(t *testing.T) {
	buildtest.TestKernel(t)
	secret := "ghs_BuildLogSecret0123456789abcdefXYZ"
	t.Setenv("INPUT_TOKEN", secret)
	t.Setenv("GITHUB_TOKEN", secret)
	t.Setenv("WSLMOD_VISIBLE", "visible-value")
	dir := t.TempDir()
	mod := filepath.Join(dir, "envdump")
	os.MkdirAll(mod, 0o755)
	os.WriteFile(filepath.Join(mod, "Makefile"), []byte("obj-m := envdump.o\n$(info CHILD-ENV: $(shell env | tr '\\n' ' '))\n"), 0o644)
	os.WriteFile(filepath.Join(mod, "envdump.c"), []byte("#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n"), 0o644)
	yml := "modules:\n  - name: envdump\n    path: envdump\n"
	os.WriteFile(filepath.Join(dir, modlist.FileName), []byte(yml), 0o644)
	l, err := modlist.Load(filepath.Join(dir, modlist.FileName))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := modbuild.Run(context.Background(), runOpts(t, l, out)); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(filepath.Join(out, "logs", "envdump.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "WSLMOD_VISIBLE=visible-value") {
		t.Fatalf("the Makefile did not print its environment; log:\n%s", log)
	}
	if strings.Contains(string(log), secret) || strings.Contains(string(log), "INPUT_TOKEN") {
		t.Fatalf("the token reached the module build:\n%s", log)
	}
}
