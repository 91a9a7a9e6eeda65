package devel_test

import (
	"bufio"
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/boottest"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/depmod"
	"github.com/wsl-modules/wsl-modules-action/internal/devel"
	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// epoch is the image timestamp used by these tests.
const epoch = 1700000000

// buildImage writes an image of the test kernel's stock modules (or of
// source, if set) and returns its result.
func buildImage(t *testing.T, o image.Options, out string) *image.Result {
	t.Helper()
	o.SourceDateEpoch = epoch
	o.Slack = image.DefaultSlack
	res, err := image.Build(context.Background(), o, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readOnly bind-mounts dir read-only on a new directory and returns it.
// Being root, the test could write through permissions; a read-only mount
// makes any write into the tree fail (EROFS), so a build that writes there
// fails.
func readOnly(t *testing.T, dir string) string {
	t.Helper()
	testenv.Tool(t, "mount")
	mnt := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", dir, mnt).CombinedOutput(); err != nil {
		testenv.Missing(t, "a bind mount (needs root and CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	if out, err := exec.Command("mount", "-o", "remount,bind,ro", mnt).CombinedOutput(); err != nil {
		testenv.Missing(t, "a read-only bind mount: %v: %s", err, out)
	}
	probe := filepath.Join(mnt, ".write-probe")
	if err := os.WriteFile(probe, nil, 0o644); err == nil {
		os.Remove(probe)
		t.Fatalf("%s is writable after remount,ro", mnt)
	}
	return mnt
}

// copyDir copies a module source directory into a new temp dir.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := atomicfile.CopyTree(context.Background(), src, dst, atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	return dst
}

// makeModule runs make -C kdir M=dir modules and returns the log.
func makeModule(t *testing.T, kdir, dir string, vars ...string) string {
	t.Helper()
	args := append([]string{"-C", kdir, "M=" + dir, "modules"}, vars...)
	cmd := exec.Command("make", args...)
	cmd.Env = append(cleanEnv(), "PWD="+dir)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cleanEnv is the environment without make/kbuild variables that would
// change the build.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARCH", "CROSS_COMPILE", "KBUILD_OUTPUT", "O", "M", "CC", "KERNELRELEASE":
			continue
		}
		env = append(env, e)
	}
	return append(env, "LC_ALL=C")
}

// dumpModversions runs kmod's modprobe --dump-modversions: symbol -> CRC.
func dumpModversions(t *testing.T, ko string) map[string]uint32 {
	t.Helper()
	out, err := exec.Command(testenv.Tool(t, "modprobe"), "--dump-modversions", ko).Output()
	if err != nil {
		t.Fatalf("modprobe --dump-modversions %s: %v", ko, err)
	}
	m := map[string]uint32{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			t.Fatalf("modprobe --dump-modversions %s: line %q", ko, sc.Text())
		}
		crc, err := strconv.ParseUint(strings.TrimPrefix(f[0], "0x"), 16, 32)
		if err != nil {
			t.Fatalf("modprobe --dump-modversions %s: line %q", ko, sc.Text())
		}
		m[f[1]] = uint32(crc)
	}
	return m
}

// checkModules checks modules built against the extracted tree: vermagic
// equals the kernel's (ours and kmod's modinfo), and their __versions CRCs
// match the kernel's Module.symvers (plus extraSymvers, e.g. a provider
// module's) both by modtree.Validate and by kmod's --dump-modversions.
func checkModules(t *testing.T, k *kbuild.Kernel, kos []string, extraSymvers ...string) {
	t.Helper()
	ksyms, err := modtree.ReadSymvers(k.Symvers())
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]modtree.SymverEntry{}
	for n, e := range ksyms {
		all[n] = e
	}
	for _, p := range extraSymvers {
		s, err := modtree.ReadSymvers(p)
		if err != nil {
			t.Fatal(err)
		}
		for n, e := range s {
			all[n] = e
		}
	}
	tree := &modtree.Tree{Release: k.Meta.Release, Symvers: all}
	for _, ko := range kos {
		m, err := kmodule.ReadFile(ko)
		if err != nil {
			t.Fatal(err)
		}
		tree.Modules = append(tree.Modules, &modtree.Entry{Path: filepath.Base(ko), Module: m})
		out, err := exec.Command(testenv.Tool(t, "modinfo"), "-F", "vermagic", ko).Output()
		if err != nil {
			t.Fatalf("modinfo %s: %v", ko, err)
		}
		if got := strings.TrimSpace(string(out)); got != strings.TrimSpace(k.Meta.Vermagic) {
			t.Errorf("%s: modinfo vermagic %q, kernel's %q", ko, got, k.Meta.Vermagic)
		}
		dump := dumpModversions(t, ko)
		if len(dump) == 0 {
			t.Errorf("%s: no __versions (MODVERSIONS kernel)", ko)
		}
		checked := 0
		for sym, crc := range dump {
			e, ok := all[sym]
			if !ok {
				t.Errorf("%s: __versions has %s, which neither Module.symvers exports", ko, sym)
				continue
			}
			if uint32(e.CRC) != crc {
				t.Errorf("%s: %s CRC 0x%08x, Module.symvers has 0x%08x", ko, sym, crc, uint32(e.CRC))
			}
			checked++
		}
		t.Logf("%s: vermagic %q, %d CRCs match Module.symvers (kmod)", filepath.Base(ko), m.Vermagic(), checked)
	}
	for _, p := range tree.Validate(modtree.ValidateOptions{Vermagic: k.Meta.Vermagic}) {
		t.Errorf("modtree: %s", p)
	}
}

// buildAgainst builds the testdata provider and consumer modules and
// Debian's v4l2loopback DKMS package against the read-only tree kdir and
// returns the .ko files.
func buildAgainst(t *testing.T, k *kbuild.Kernel, kdir string) []string {
	t.Helper()
	provider := copyDir(t, buildtest.Testdata("modules", "provider"))
	makeModule(t, kdir, provider)
	consumer := copyDir(t, buildtest.Testdata("modules", "consumer"))
	// The consumer's own Makefile defaults KDIR to /lib/modules/$(uname
	// -r)/build; build it the way its users do, with KDIR.
	cmd := exec.Command("make", "KDIR="+kdir, "KBUILD_EXTRA_SYMBOLS="+filepath.Join(provider, "Module.symvers"))
	cmd.Dir, cmd.Env = consumer, append(cleanEnv(), "PWD="+consumer)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make (consumer): %v\n%s", err, out)
	}
	kos := []string{filepath.Join(provider, "wslt_provider.ko"), filepath.Join(consumer, "wslt_consumer.ko")}
	checkModules(t, k, kos, filepath.Join(provider, "Module.symvers"))

	ko := dkmsBuild(t, k, kdir)
	checkModules(t, k, []string{ko})
	return append(kos, ko)
}

// dkmsBuild builds Debian's v4l2loopback-dkms with Debian's own dkms in a
// private dkms tree (nothing touches /var/lib/dkms) against kdir.
func dkmsBuild(t *testing.T, k *kbuild.Kernel, kdir string) string {
	t.Helper()
	dkms := testenv.Tool(t, "dkms")
	src := testenv.DKMSSource(t, "v4l2loopback")
	base := t.TempDir()
	srcTree, dkmsTree, installTree := filepath.Join(base, "src"), filepath.Join(base, "dkms"), filepath.Join(base, "install")
	name := filepath.Base(src)
	ver := strings.TrimPrefix(name, "v4l2loopback-")
	if err := buildtest.PrepareV4L2Loopback(src, filepath.Join(srcTree, name)); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dkmsTree, installTree} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"build", "-m", "v4l2loopback", "-v", ver, "-k", k.Meta.Release, "--kernelsourcedir", kdir,
		"--sourcetree", srcTree, "--dkmstree", dkmsTree, "--installtree", installTree}
	cmd := exec.Command(dkms, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	logs, _ := filepath.Glob(filepath.Join(dkmsTree, "v4l2loopback", ver, "build", "make.log"))
	if err != nil {
		var log []byte
		if len(logs) > 0 {
			log, _ = os.ReadFile(logs[0])
		}
		t.Fatalf("dkms %s: %v\n%s\nmake.log:\n%s", strings.Join(args, " "), err, out, log)
	}
	if len(logs) > 0 {
		log, _ := os.ReadFile(logs[0])
		if !strings.Contains(string(log), "KERNEL_DIR="+kdir) {
			t.Errorf("dkms did not build against %s:\n%s", kdir, log)
		}
	}
	ko := filepath.Join(dkmsTree, "v4l2loopback", ver, k.Meta.Release, "x86_64", "module", "v4l2loopback.ko")
	if _, err := os.Stat(ko); err != nil {
		t.Fatalf("dkms build left no module: %v\n%s", err, out)
	}
	return ko
}

// TestBuildAgainstExtractedTree is issue 9's main test: images with the
// devel tree (flat; nested with UAPI headers too), extracted with our own
// reader, the tree mounted read-only, the testdata modules and Debian's
// v4l2loopback-dkms built against it with make M= and Debian's dkms; the
// modules must carry the kernel's vermagic and CRCs, nothing may be
// written into the tree, and (flat) the modules must load in a boot of
// the real kernel. It also reports image sizes with and without the tree.
func TestBuildAgainstExtractedTree(t *testing.T) {
	testenv.Tool(t, "make")
	testenv.Tool(t, "gcc")
	k := buildtest.TestKernel(t)
	rel := k.Meta.Release
	cacheDigest := testenv.TreeDigest(t, k.DevelDir())
	dir := t.TempDir()

	sizes := map[string]*image.Result{}
	for _, c := range []struct {
		name string
		o    image.Options
	}{
		{"flat, none", image.Options{Layout: image.LayoutFlat}},
		{"flat, devel", image.Options{Layout: image.LayoutFlat, Devel: k.DevelDir()}},
		{"nested, none", image.Options{Layout: image.LayoutNested}},
		{"nested, uapi", image.Options{Layout: image.LayoutNested, Headers: k.HeadersDir()}},
		{"nested, devel+uapi", image.Options{Layout: image.LayoutNested, Devel: k.DevelDir(), Headers: k.HeadersDir()}},
	} {
		c.o.ModuleDir, c.o.Release = k.ModulesDir(), rel
		out := filepath.Join(dir, strings.NewReplacer(", ", "-", "+", "-").Replace(c.name)+".vhdx")
		sizes[c.name] = buildImage(t, c.o, out)
	}
	base := sizes["flat, none"].Size
	for _, n := range []string{"flat, none", "flat, devel", "nested, none", "nested, uapi", "nested, devel+uapi"} {
		r := sizes[n]
		t.Logf("image %-20s VHDX %6.1f MiB (%+6.1f MiB vs flat without headers), disk %6.1f MiB, content %6.1f MiB (devel %5.1f MiB, uapi %4.1f MiB), %d files",
			n, mib(r.Size), mib(r.Size-base), mib(r.DiskSize), mib(r.ContentBytes), mib(r.DevelBytes), mib(r.HeadersBytes), r.Files)
	}
	if d := sizes["flat, devel"]; d.DevelBytes == 0 || d.Size <= base {
		t.Errorf("flat image with the devel tree: devel %d bytes, size %d <= %d", d.DevelBytes, d.Size, base)
	}

	for _, layout := range []image.Layout{image.LayoutFlat, image.LayoutNested} {
		t.Run(string(layout), func(t *testing.T) {
			img := filepath.Join(dir, "flat-devel.vhdx")
			if layout == image.LayoutNested {
				img = filepath.Join(dir, "nested-devel-uapi.vhdx")
			}
			x := buildtest.ExtractImage(t, img)
			tree := filepath.Join(x, "build")
			if layout == image.LayoutNested {
				tree = filepath.Join(x, rel, "modules", "build")
				if _, err := os.Stat(filepath.Join(x, rel, "linux-headers", "include", "linux", "input.h")); err != nil {
					t.Errorf("nested image lacks the UAPI headers: %v", err)
				}
				if _, err := os.Stat(filepath.Join(x, "build")); err == nil {
					t.Errorf("nested image has build/ at its root")
				}
			}
			// The round trip through the image keeps the tree exactly.
			if got := testenv.TreeDigest(t, tree); got != cacheDigest {
				t.Fatalf("extracted %s differs from the kernel cache's kernel-devel", tree)
			}
			if layout == image.LayoutNested {
				// As WSL sees the image: every timestamp is the image's
				// (our extraction leaves them at extraction time, which
				// the flat case covers).
				setTimes(t, tree, time.Unix(epoch, 0))
			}
			ro := readOnly(t, tree)
			rep, err := devel.Verify(ro, devel.Options{Release: rel, Arch: "x86_64", Symvers: k.Symvers(),
				BuildPaths: []string{k.Dir, filepath.Dir(k.Dir)}})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("extracted tree: %d files, %.1f MiB, host tools %d (glibc >= %s), warnings %v",
				rep.Files, mib(rep.Bytes), len(rep.HostTools), rep.GLIBC, rep.Warnings)

			kos := buildAgainst(t, k, ro)
			if got := testenv.TreeDigest(t, ro); got != cacheDigest {
				t.Errorf("the tree changed during the builds")
			}
			if layout == image.LayoutFlat {
				bootWith(t, k, kos)
			}
		})
	}
}

// setTimes sets every modification time in the tree to tm.
func setTimes(t *testing.T, dir string, tm time.Time) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, tm, tm)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// bootWith puts the modules into extra/ of a staged copy of the test
// kernel's modules (with our depmod, strict: vermagic and CRCs), builds
// a flat image and boots the real kernel with it: the modules must load.
func bootWith(t *testing.T, k *kbuild.Kernel, kos []string) {
	t.Helper()
	testenv.Tool(t, "qemu-system-x86_64")
	testenv.Tool(t, "busybox")
	rel := k.Meta.Release
	stage := filepath.Join(t.TempDir(), "stage")
	if err := atomicfile.CopyTree(context.Background(), k.ModulesRoot(), stage, atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(stage, "lib", "modules", rel, "extra")
	if err := os.MkdirAll(extra, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ko := range kos {
		b, err := os.ReadFile(ko)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(extra, filepath.Base(ko)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := depmod.Run(context.Background(), depmod.Options{BaseDir: stage, Release: rel, Symvers: k.Symvers(), ErrSyms: true, Strict: true}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "modules.vhdx")
	buildImage(t, image.Options{ModuleDir: filepath.Join(stage, "lib", "modules", rel), Release: rel, Devel: k.DevelDir()}, img)
	res, err := boottest.Boot(context.Background(), boottest.Config{Kernel: k.Image(), Disk: img, Format: "vhdx",
		Modules: []string{"wslt_consumer", "v4l2loopback"}, Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.Release != rel {
		t.Errorf("guest uname -r %q, want %q", res.Release, rel)
	}
	if !slices.Equal(res.Loaded, []string{"wslt_consumer", "v4l2loopback"}) || len(res.Failed) > 0 {
		t.Errorf("loaded %v, failed %v\n%s", res.Loaded, res.Failed, res.Console)
	}
	for _, m := range []string{"wslt_provider", "wslt_consumer", "v4l2loopback", "videodev"} {
		if !slices.Contains(res.Lsmod, m) {
			t.Errorf("lsmod lacks %s: %v", m, res.Lsmod)
		}
	}
	for _, bad := range []string{"disagrees about version", "version magic", "Unknown symbol", "section size must match"} {
		if strings.Contains(res.Console, bad) {
			t.Errorf("kernel log has %q:\n%s", bad, res.Console)
		}
	}
	t.Logf("boot: %v loaded; lsmod %v", res.Loaded, res.Lsmod)
}
