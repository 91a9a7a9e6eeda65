package kbuild_test

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/depmod"
	"github.com/wsl-modules/wsl-modules-action/internal/devel"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// arm64ImageMagic is the arm64 boot protocol's magic ("ARM\x64",
// little-endian 0x644d5241) at offset 56 of an Image
// (Documentation/arch/arm64/booting.rst).
const arm64ImageMagic = "ARM\x64"

// TestArm64Kernel checks the cross-built arm64 test kernel (issue 8): an
// arm64 Image, stock modules for aarch64 with the kernel's vermagic (as
// kmod's modinfo reads it), a Module.symvers they validate against, the
// two kernel-devel trees (host programs for this machine in kernel-devel,
// for aarch64 in kernel-devel-target), and a cache hit the second time.
func TestArm64Kernel(t *testing.T) {
	k := buildtest.TestKernelArm64(t)
	t.Logf("arm64 kernel %s in %s (%s, built in %.0fs)", k.Meta.Release, k.Dir, progress.Bytes(k.Meta.Bytes), k.Meta.BuildSeconds)
	if k.Meta.Arch != "arm64" || k.Meta.ImageFile != "Image" || filepath.Base(k.Image()) != "Image" {
		t.Errorf("meta arch %q, image file %q", k.Meta.Arch, k.Meta.ImageFile)
	}
	if !strings.HasPrefix(k.Meta.Compiler, "aarch64-linux-gnu-gcc") {
		t.Errorf("compiler %q, want the cross compiler", k.Meta.Compiler)
	}
	if len(k.Meta.ConfigChanges) != 0 {
		t.Errorf("olddefconfig changed testdata/kernel/config-test-arm64: %v", k.Meta.ConfigChanges)
	}

	img, err := os.ReadFile(k.Image())
	if err != nil {
		t.Fatal(err)
	}
	if len(img) < 64 || string(img[56:60]) != arm64ImageMagic {
		t.Fatalf("%s has no arm64 Image magic at offset 56", k.Image())
	}
	// image_size (offset 16) covers the whole loaded image; the file is
	// no larger.
	if size := binary.LittleEndian.Uint64(img[16:24]); size < uint64(len(img)) {
		t.Errorf("Image header image_size %d < file size %d", size, len(img))
	}
	if out, err := exec.Command("file", "-b", k.Image()).Output(); err == nil && !strings.Contains(string(out), "ARM64") {
		t.Errorf("file(1) says %q, want an ARM64 kernel image", out)
	}

	// Stock modules: aarch64 relocatable objects with the kernel's
	// vermagic (kmod's modinfo), validating against Module.symvers.
	sv, err := modtree.ReadSymvers(k.Symvers())
	if err != nil || len(sv) < 500 {
		t.Fatalf("Module.symvers: %d symbols, %v", len(sv), err)
	}
	if _, ok := sv["_printk"]; !ok {
		t.Errorf("Module.symvers lacks _printk")
	}
	vm := k.Meta.Vermagic
	if !strings.HasPrefix(vm, k.Meta.Release+" ") || !strings.Contains(vm, " modversions ") || !strings.HasSuffix(strings.TrimSpace(vm), " aarch64") {
		t.Errorf("vermagic %q: want the release, modversions and arm64's MODULE_ARCH_VERMAGIC aarch64", vm)
	}
	tree, err := modtree.LoadDir(k.ModulesDir(), k.Meta.Release)
	if err != nil {
		t.Fatal(err)
	}
	modinfo := testenv.Tool(t, "modinfo")
	names := map[string]bool{}
	for _, e := range tree.Modules {
		names[e.Name] = true
		p := filepath.Join(k.ModulesDir(), e.Path)
		if m := elfMachineOf(t, p); m != elf.EM_AARCH64 {
			t.Errorf("%s: ELF machine %s, want EM_AARCH64", e.Path, m)
		}
		if got := strings.TrimSpace(testenv.Run(t, modinfo, "-F", "vermagic", p)); got != strings.TrimSpace(vm) {
			t.Errorf("%s: modinfo vermagic %q, kernel's %q", e.Path, got, vm)
		}
	}
	for _, n := range []string{"vfat", "fat", "msdos", "nls_base", "nls_cp437", "nls_iso8859_1", "isofs"} {
		if !names[n] {
			t.Errorf("stock module %s missing from %s", n, k.ModulesDir())
		}
	}
	tree.Symvers = sv
	if p := tree.Validate(modtree.ValidateOptions{Vermagic: vm}); len(p) != 0 {
		t.Errorf("stock modules do not validate: %v", p)
	}
	// The dependency chain, as kmod's modinfo reads it: vfat -> fat ->
	// nls_base (NLS=m).
	for mod, want := range map[string]string{"fat/vfat.ko": "fat,nls_base", "fat/fat.ko": "nls_base", "nls/nls_cp437.ko": "nls_base"} {
		d := strings.Split(strings.TrimSpace(testenv.Run(t, modinfo, "-F", "depends", filepath.Join(k.ModulesDir(), "kernel", "fs", mod))), ",")
		sort.Strings(d)
		if strings.Join(d, ",") != want {
			t.Errorf("%s depends %q, want %s", mod, d, want)
		}
	}

	// kernel-devel runs here, kernel-devel-target on aarch64: the same
	// host programs, built for different machines, and otherwise the same
	// files.
	if k.TargetDevelDir() == k.DevelDir() {
		t.Fatalf("cross build has no kernel-devel-target")
	}
	hostProgs := elfPrograms(t, k.DevelDir())
	targetProgs := elfPrograms(t, k.TargetDevelDir())
	for _, p := range []string{"scripts/basic/fixdep", "scripts/mod/modpost", "scripts/genksyms/genksyms"} {
		if hostProgs[p] != elf.EM_X86_64 {
			t.Errorf("kernel-devel/%s: %v, want x86_64", p, hostProgs[p])
		}
		if targetProgs[p] != elf.EM_AARCH64 {
			t.Errorf("kernel-devel-target/%s: %v, want aarch64", p, targetProgs[p])
		}
	}
	for p, m := range targetProgs {
		if m != elf.EM_AARCH64 {
			t.Errorf("kernel-devel-target/%s: %v, want aarch64", p, m)
		}
	}
	// Retarget leaves out sorttable (not run by module builds; it needs
	// the kernel's tools/include to rebuild): the only program missing.
	var missing []string
	for _, p := range sortedKeys(hostProgs) {
		if _, ok := targetProgs[p]; !ok {
			missing = append(missing, p)
		}
	}
	if len(targetProgs) != len(hostProgs)-len(missing) || !slices.Equal(missing, []string{"scripts/sorttable"}) {
		t.Errorf("host programs: kernel-devel %v, kernel-devel-target %v", sortedKeys(hostProgs), sortedKeys(targetProgs))
	}
	if diff := treeFilesDiff(t, k.DevelDir(), k.TargetDevelDir(), hostProgs); len(diff) > 0 {
		t.Errorf("kernel-devel and kernel-devel-target differ beyond the host programs: %v", diff)
	}
	for _, f := range []string{"Makefile", "Module.symvers", ".config", "arch/arm64/Makefile", "include/generated/utsrelease.h"} {
		if _, err := os.Stat(filepath.Join(k.TargetDevelDir(), f)); err != nil {
			t.Errorf("kernel-devel-target: %v", err)
		}
	}

	// Same inputs again: a cache hit, no make.
	o := buildtest.OptionsArm64(t)
	var log bytes.Buffer
	o.Log = &log
	k2, err := kbuild.BuildKernel(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.CacheHit || k2.Dir != k.Dir {
		t.Errorf("second build: hit %v, dir %s (first %s)", k2.CacheHit, k2.Dir, k.Dir)
	}
	if log.Len() != 0 {
		t.Errorf("cache hit ran make:\n%s", log.String())
	}
}

// TestArm64Run builds the testdata provider and consumer modules for arm64
// with modbuild.Run against the cross-built kernel (module builds use the
// host-runnable kernel-devel with ARCH=arm64 CROSS_COMPILE=), checks them
// with kmod's tools (modinfo vermagic, modprobe --dump-modversions on
// foreign-arch modules) and modtree, then compares our depmod with kmod's
// depmod -b on the staged tree (byte-identical output), builds the image
// with kernel-devel-target, and checks it with e2fsck -fn and our reader.
func TestArm64Run(t *testing.T) {
	k := buildtest.TestKernelArm64(t)
	rel := k.Meta.Release
	l := buildtest.ModulesRepo(t, `kernel:
  arch: arm64
modules:
  - name: consumer
    path: modules/consumer
    make: [ "KDIR={{.KernelDir}}" ]
  - name: provider
    path: modules/provider
`, nil)
	out := filepath.Join(t.TempDir(), "build")
	o := buildtest.OptionsArm64(t)
	res, err := modbuild.Run(context.Background(), modbuild.Options{KernelSource: o.Source, ConfigFile: o.ConfigFile,
		List: l, Out: out, CacheDir: o.CacheDir, Progress: o.Progress})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Kernel.CacheHit || res.Kernel.Dir != k.Dir {
		t.Errorf("Run did not use the cached arm64 kernel: hit %v, %s", res.Kernel.CacheHit, res.Kernel.Dir)
	}
	man, err := manifest.Read(filepath.Join(out, manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if man.Kernel.Arch != "arm64" || man.Kernel.ImageFile != "Image" || man.Kernel.Release != rel {
		t.Errorf("manifest kernel %+v", man.Kernel)
	}
	for _, m := range man.Modules {
		if m.Status != manifest.StatusOK {
			t.Errorf("module %s: %s %s", m.Name, m.Status, m.Error)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "Image")); err != nil {
		t.Error(err)
	}
	// The output's kernel-devel is the tree for the image: its host
	// programs must run on arm64.
	for _, tool := range []string{"scripts/basic/fixdep", "scripts/mod/modpost"} {
		f, err := elf.Open(filepath.Join(out, "kernel-devel", tool))
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != elf.EM_AARCH64 {
			t.Errorf("build output kernel-devel/%s is %v, want EM_AARCH64", tool, f.Machine)
		}
		f.Close()
	}

	mdir := filepath.Join(out, "staging", "lib", "modules", rel)
	modinfo := testenv.Tool(t, "modinfo")
	modprobe := testenv.Tool(t, "modprobe")
	provider := filepath.Join(mdir, "extra", "provider", "wslt_provider.ko")
	consumer := filepath.Join(mdir, "extra", "consumer", "wslt_consumer.ko")
	for _, p := range []string{provider, consumer} {
		if m := elfMachineOf(t, p); m != elf.EM_AARCH64 {
			t.Errorf("%s: ELF machine %s, want EM_AARCH64", p, m)
		}
		if got := strings.TrimSpace(testenv.Run(t, modinfo, "-F", "vermagic", p)); got != strings.TrimSpace(k.Meta.Vermagic) {
			t.Errorf("%s: vermagic %q, kernel's %q", p, got, k.Meta.Vermagic)
		}
	}
	if d := strings.TrimSpace(testenv.Run(t, modinfo, "-F", "depends", consumer)); d != "wslt_provider" {
		t.Errorf("consumer depends %q", d)
	}

	// CRCs: every __versions entry kmod reads from the aarch64 modules
	// matches the kernel's Module.symvers or the provider's export.
	ksyms, err := modtree.ReadSymvers(k.Symvers())
	if err != nil {
		t.Fatal(err)
	}
	prov, err := kmodule.ReadFile(provider)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{}
	for n, e := range ksyms {
		want[n] = uint32(e.CRC)
	}
	for _, e := range prov.Exports {
		if e.Name == "wslt_provider_add" && e.HasCRC {
			want[e.Name] = uint32(e.CRC)
		}
	}
	if _, ok := want["wslt_provider_add"]; !ok {
		t.Fatalf("provider exports no CRC for wslt_provider_add: %+v", prov.Exports)
	}
	verRE := regexp.MustCompile(`^0x([0-9a-f]{8})\s+(\S+)$`)
	for _, p := range []string{provider, consumer} {
		dump := strings.TrimSpace(testenv.Run(t, modprobe, "--dump-modversions", p))
		n := 0
		for _, line := range strings.Split(dump, "\n") {
			m := verRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: modprobe --dump-modversions line %q", p, line)
			}
			crc, ok := want[m[2]]
			if !ok {
				t.Errorf("%s: __versions has %s, which nothing exports", p, m[2])
			} else if fmt.Sprintf("%08x", crc) != m[1] {
				t.Errorf("%s: %s CRC 0x%s, exporter has 0x%08x", p, m[2], m[1], crc)
			}
			n++
		}
		if n == 0 || (p == consumer && !strings.Contains(dump, "wslt_provider_add")) {
			t.Errorf("%s: __versions:\n%s", p, dump)
		}
		t.Logf("%s: %d __versions CRCs agree (kmod)", filepath.Base(p), n)
	}
	staged, err := modtree.LoadDir(mdir, rel)
	if err != nil {
		t.Fatal(err)
	}
	staged.Symvers = ksyms
	if p := staged.Validate(modtree.ValidateOptions{Vermagic: k.Meta.Vermagic}); len(p) != 0 {
		t.Errorf("staged tree does not validate: %v", p)
	}

	// depmod: kmod's on one copy, ours on another; every file kmod
	// writes must be byte-identical.
	ref, ours := filepath.Join(t.TempDir(), "kmod"), filepath.Join(t.TempDir(), "ours")
	for _, d := range []string{ref, ours} {
		if err := atomicfile.CopyTree(context.Background(), filepath.Join(out, "staging"), d, atomicfile.CopyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// modules_install ran the kernel's depmod.sh: drop its output so that
	// both start from the inputs (modules.order, modules.builtin*).
	var before []string
	for _, d := range []string{ref, ours} {
		mdir := filepath.Join(d, "lib", "modules", rel)
		before = nil
		for _, f := range a64Files(t, mdir) {
			if strings.HasPrefix(f, "modules.") && f != "modules.order" && f != "modules.builtin" && f != "modules.builtin.modinfo" {
				if err := os.Remove(filepath.Join(mdir, f)); err != nil {
					t.Fatal(err)
				}
				continue
			}
			before = append(before, f)
		}
	}
	conf := t.TempDir() // no depmod.d of this machine
	kout := strings.TrimSpace(testenv.Run(t, "depmod", "-b", ref, "-C", conf, "-e", "-E", k.Symvers(), rel))
	if kout != "" {
		t.Errorf("kmod depmod -e -E reports problems:\n%s", kout)
	}
	rep, err := depmod.Run(context.Background(), depmod.Options{BaseDir: ours, Release: rel, Symvers: k.Symvers(),
		ErrSyms: true, Strict: true})
	if err != nil {
		t.Fatalf("depmod.Run: %v", err)
	}
	var written []string
	for _, f := range a64Files(t, filepath.Join(ref, "lib", "modules", rel)) {
		if !slices.Contains(before, f) {
			written = append(written, f)
		}
	}
	if len(written) < 8 {
		t.Fatalf("kmod depmod wrote only %v", written)
	}
	for _, f := range written {
		w, err := os.ReadFile(filepath.Join(ref, "lib", "modules", rel, f))
		if err != nil {
			t.Fatal(err)
		}
		g, err := os.ReadFile(filepath.Join(ours, "lib", "modules", rel, f))
		if err != nil {
			t.Errorf("ours: %v", err)
			continue
		}
		if !bytes.Equal(g, w) {
			t.Errorf("%s differs from kmod's (%d vs %d bytes)", f, len(g), len(w))
		}
	}
	dep, _ := os.ReadFile(filepath.Join(ours, "lib", "modules", rel, "modules.dep"))
	for _, line := range []string{"extra/consumer/wslt_consumer.ko: extra/provider/wslt_provider.ko\n",
		"kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko kernel/fs/nls/nls_base.ko\n"} {
		if !bytes.Contains(dep, []byte(line)) {
			t.Errorf("modules.dep lacks %q:\n%s", line, dep)
		}
	}
	t.Logf("depmod: %d modules, %d files identical to kmod's: %v", rep.Modules, len(written), written)

	// The image with kernel-devel-target at build/.
	img := filepath.Join(t.TempDir(), "modules.vhdx")
	ires, err := image.Build(context.Background(), image.Options{ModuleDir: filepath.Join(ours, "lib", "modules", rel), Release: rel, Layout: image.LayoutFlat,
		Devel: k.TargetDevelDir(), Slack: image.DefaultSlack, SourceDateEpoch: 1700000000}, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("arm64 image: VHDX %s, content %s (devel %s), %d files", progress.Bytes(ires.Size),
		progress.Bytes(ires.ContentBytes), progress.Bytes(ires.DevelBytes), ires.Files)
	raw := filepath.Join(t.TempDir(), "raw.img")
	testenv.Run(t, "qemu-img", "convert", "-O", "raw", img, raw)
	testenv.Run(t, "e2fsck", "-fn", raw)
	x := buildtest.ExtractImage(t, img)
	if got, want := testenv.TreeDigest(t, filepath.Join(x, "build")), testenv.TreeDigest(t, k.TargetDevelDir()); got != want {
		t.Errorf("build/ in the image differs from kernel-devel-target")
	}
	for _, f := range append(written, "extra/consumer/wslt_consumer.ko", "kernel/fs/fat/vfat.ko") {
		g, err := os.ReadFile(filepath.Join(x, f))
		if err != nil {
			t.Error(err)
			continue
		}
		w, _ := os.ReadFile(filepath.Join(ours, "lib", "modules", rel, f))
		if !bytes.Equal(g, w) {
			t.Errorf("%s in the image differs from the staged file", f)
		}
	}
	// As the pipeline ships it: the tree from the image passes Verify for
	// arm64 (aarch64 host programs, this kernel's Module.symvers).
	vrep, err := devel.Verify(filepath.Join(x, "build"), devel.Options{Release: rel, Arch: "arm64", Symvers: k.Symvers(),
		BuildPaths: []string{k.Dir, filepath.Dir(k.Dir)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel-devel-target from the image: %d files, %s, %d host tools (glibc >= %s), warnings %v",
		vrep.Files, progress.Bytes(vrep.Bytes), len(vrep.HostTools), vrep.GLIBC, vrep.Warnings)
}

func elfMachineOf(t *testing.T, p string) elf.Machine {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Type != elf.ET_REL && strings.HasSuffix(p, ".ko") {
		t.Errorf("%s: ELF type %s, want ET_REL", p, f.Type)
	}
	return f.Machine
}

// elfPrograms maps each ELF executable in a tree (relative path) to its
// machine.
func elfPrograms(t *testing.T, dir string) map[string]elf.Machine {
	t.Helper()
	out := map[string]elf.Machine{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := elf.Open(p)
		if err != nil {
			return nil // not ELF
		}
		defer f.Close()
		if f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN {
			rel, _ := filepath.Rel(dir, p)
			out[filepath.ToSlash(rel)] = f.Machine
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// treeFilesDiff lists the paths whose presence, type or content differ
// between two trees, leaving out the paths in skip.
func treeFilesDiff(t *testing.T, a, b string, skip map[string]elf.Machine) []string {
	t.Helper()
	read := func(dir string) map[string]string {
		m := map[string]string{}
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			rel = filepath.ToSlash(rel)
			if _, ok := skip[rel]; ok || rel == "." {
				return nil
			}
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				l, err := os.Readlink(p)
				m[rel] = "link:" + l
				return err
			case d.IsDir():
				m[rel] = "dir"
			default:
				h, err := digest.File(p)
				m[rel] = "file:" + h
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ma, mb := read(a), read(b)
	var diff []string
	for p, v := range ma {
		if mb[p] != v {
			diff = append(diff, p)
		}
	}
	for p := range mb {
		if _, ok := ma[p]; !ok {
			diff = append(diff, p)
		}
	}
	sort.Strings(diff)
	return diff
}

// a64Files lists the regular files directly in dir.
func a64Files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out
}
