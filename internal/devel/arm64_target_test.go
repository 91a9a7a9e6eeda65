package devel_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/devel"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// aarch64Sysroot is where Debian's libc6-arm64-cross puts the aarch64
// dynamic loader and libc (qemu-aarch64 -L).
const aarch64Sysroot = "/usr/aarch64-linux-gnu"

// arm64Make is make's ARCH/CROSS_COMPILE for module builds against the
// arm64 test kernel on this machine.
var arm64Make = []string{"ARCH=arm64", "CROSS_COMPILE=" + buildtest.CrossCompileArm64}

// TestArm64KernelDevelTrees checks the two kernel-devel trees of the
// cross-built arm64 test kernel (issue 9): kernel-devel-target, the one
// shipped in arm64 images, passes Verify for arm64 (every host program an
// aarch64 ELF, as readelf also says; Module.symvers identical to the
// kernel's; no build-machine paths); kernel-devel, the one module builds
// on this machine use, fails it (x86_64 programs) yet still builds the
// testdata modules for arm64 from a read-only mount, with the kernel's
// vermagic and CRCs (modtree and kmod).
func TestArm64KernelDevelTrees(t *testing.T) {
	testenv.Tool(t, "make")
	readelf := testenv.Tool(t, "readelf")
	k := buildtest.TestKernelArm64(t)
	rel := k.Meta.Release
	opts := devel.Options{Release: rel, Arch: "arm64", Symvers: k.Symvers(), BuildPaths: []string{k.Dir, filepath.Dir(k.Dir)}}

	target := readOnly(t, k.TargetDevelDir())
	rep, err := devel.Verify(target, opts)
	if err != nil {
		t.Fatalf("kernel-devel-target: %v", err)
	}
	if rep.Arch != "arm64" || rep.SrcArch != "arm64" || rep.Release != rel {
		t.Errorf("report: arch %q, srcarch %q, release %q", rep.Arch, rep.SrcArch, rep.Release)
	}
	var tools []string
	for _, h := range rep.HostTools {
		tools = append(tools, h.Path)
		out, err := exec.Command(readelf, "-h", filepath.Join(target, h.Path)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if h.Machine != "aarch64" || !strings.Contains(string(out), "AArch64") {
			t.Errorf("%s: %s; readelf:\n%s", h.Path, h.Machine, out)
		}
	}
	for _, p := range []string{"scripts/basic/fixdep", "scripts/mod/modpost", "scripts/genksyms/genksyms"} {
		if !slices.Contains(tools, p) {
			t.Errorf("kernel-devel-target lacks %s (host tools %v)", p, tools)
		}
	}
	t.Logf("kernel-devel-target: %d files, %.1f MiB, host tools %v (glibc >= %s), warnings %v",
		rep.Files, mib(rep.Bytes), tools, rep.GLIBC, rep.Warnings)

	// kernel-devel has the build machine's programs: wrong for an arm64
	// image, right for building here.
	host := readOnly(t, k.DevelDir())
	before := testenv.TreeDigest(t, host)
	_, err = devel.Verify(host, opts)
	var ve *devel.Error
	if !errors.As(err, &ve) {
		t.Fatalf("Verify(kernel-devel, arm64) = %v, want wrong-machine problems", err)
	}
	for _, p := range []string{"scripts/basic/fixdep", "scripts/mod/modpost"} {
		want := p + ": built for x86_64, but the tree is for aarch64: it cannot run there"
		if !slices.ContainsFunc(ve.Problems, func(q devel.Problem) bool { return q.String() == want }) {
			t.Errorf("kernel-devel: no problem %q in %v", want, ve.Problems)
		}
	}
	kos := buildArm64Modules(t, host, t.TempDir())
	for _, ko := range kos {
		if m := koMachine(t, ko); m != elf.EM_AARCH64 {
			t.Errorf("%s: %s, want aarch64", ko, m)
		}
	}
	checkModules(t, k, kos, filepath.Join(filepath.Dir(kos[0]), "Module.symvers"))
	if testenv.TreeDigest(t, host) != before {
		t.Errorf("kernel-devel changed during the module builds")
	}
}

// TestArm64TargetToolsRun runs kernel-devel-target's aarch64 host programs
// under qemu-user (qemu-aarch64 with Debian's aarch64 sysroot): each one
// directly (usage and exit status show it executed, rather than an exec
// format error), then a whole external module build against a copy of the
// tree whose programs are wrapped to run under qemu-aarch64 (this machine
// has no binfmt_misc registration for aarch64, so make cannot exec them
// directly; the C compiler is the x86_64 cross gcc). The modules built
// that way must be byte-identical to those built with kernel-devel's
// x86_64 programs, and every wrapped program must have run.
func TestArm64TargetToolsRun(t *testing.T) {
	testenv.Tool(t, "make")
	qemu := testenv.Tool(t, "qemu-aarch64")
	if _, err := os.Stat(filepath.Join(aarch64Sysroot, "lib", "ld-linux-aarch64.so.1")); err != nil {
		testenv.Missing(t, "the aarch64 sysroot (libc6-arm64-cross): %v", err)
	}
	k := buildtest.TestKernelArm64(t)
	target := k.TargetDevelDir()
	run := func(prog string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(qemu, append([]string{"-L", aarch64Sysroot, filepath.Join(target, prog)}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("qemu-aarch64 %s: %v", prog, err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	// Each program is run the way that makes it print and exit on its own
	// (fixdep's usage, genksyms --version, modpost on a missing input):
	// the output must be the program's own.
	for _, c := range []struct {
		prog string
		args []string
		code int
		want string
	}{
		{"scripts/basic/fixdep", nil, 1, "Usage: fixdep <depfile> <target> <cmdline>"},
		{"scripts/genksyms/genksyms", []string{"--version"}, 0, "genksyms version"},
		{"scripts/mod/modpost", []string{"-i", "/nonexistent/Module.symvers"}, 1, "/nonexistent/Module.symvers"},
	} {
		out, code := run(c.prog, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("qemu-aarch64 %s %v: exit %d, output %q; want exit %d and %q", c.prog, c.args, code, out, c.code, c.want)
		}
		t.Logf("qemu-aarch64 %s %s: exit %d: %s", c.prog, strings.Join(c.args, " "), code, firstLine(out))
	}

	// The same modules built twice at the same path: with kernel-devel
	// (x86_64 programs) and with the wrapped kernel-devel-target.
	wrapped := filepath.Join(t.TempDir(), "kernel-devel-target")
	if err := atomicfile.CopyTree(context.Background(), target, wrapped, atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(t.TempDir(), "calls.log")
	progs := wrapPrograms(t, wrapped, qemu, calls)
	if len(progs) < 3 {
		t.Fatalf("only %v wrapped", progs)
	}
	work := t.TempDir()
	ref := buildArm64Modules(t, k.DevelDir(), work)
	refBytes := map[string][]byte{}
	for _, ko := range ref {
		refBytes[filepath.Base(ko)] = mustRead(t, ko)
	}
	refMod := mustRead(t, filepath.Join(work, "provider", "wslt_provider.mod.c"))
	for _, d := range []string{"provider", "consumer"} {
		if err := os.RemoveAll(filepath.Join(work, d)); err != nil {
			t.Fatal(err)
		}
	}
	emu := buildArm64Modules(t, wrapped, work)
	for _, ko := range emu {
		if !bytes.Equal(mustRead(t, ko), refBytes[filepath.Base(ko)]) {
			t.Errorf("%s built with the aarch64 programs under qemu differs from the one built with the x86_64 programs", filepath.Base(ko))
		}
	}
	if !bytes.Equal(mustRead(t, filepath.Join(work, "provider", "wslt_provider.mod.c")), refMod) {
		t.Errorf("modpost's wslt_provider.mod.c differs between the aarch64 and x86_64 modpost")
	}
	checkModules(t, k, emu, filepath.Join(work, "provider", "Module.symvers"))
	counts := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(mustRead(t, calls))), "\n") {
		counts[l]++
	}
	for _, p := range []string{"scripts/basic/fixdep", "scripts/mod/modpost", "scripts/genksyms/genksyms"} {
		if counts[p] == 0 {
			t.Errorf("%s never ran under qemu-aarch64 during the build (calls %v)", p, counts)
		}
	}
	t.Logf("module build with the aarch64 host programs under qemu-aarch64: calls %v; %d modules identical to the x86_64-tools build", counts, len(emu))
}

// wrapPrograms renames each aarch64 executable under tree/scripts to
// <name>.aarch64 and puts in its place a shell script that logs its path
// (relative to tree) to calls and runs it under qemu-aarch64. It returns
// the wrapped paths.
func wrapPrograms(t *testing.T, tree, qemu, calls string) []string {
	t.Helper()
	var progs []string
	err := filepath.WalkDir(filepath.Join(tree, "scripts"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := elf.Open(p)
		if err != nil {
			return nil
		}
		m, typ := f.Machine, f.Type
		f.Close()
		if typ != elf.ET_EXEC && typ != elf.ET_DYN {
			return nil
		}
		if m != elf.EM_AARCH64 {
			return fmt.Errorf("%s is %s, not aarch64", p, m)
		}
		rel, _ := filepath.Rel(tree, p)
		if err := os.Rename(p, p+".aarch64"); err != nil {
			return err
		}
		script := fmt.Sprintf("#!/bin/sh\necho %s >> %s\nexec %s -L %s %s.aarch64 \"$@\"\n",
			shq(filepath.ToSlash(rel)), shq(calls), shq(qemu), shq(aarch64Sysroot), shq(p))
		progs = append(progs, filepath.ToSlash(rel))
		return os.WriteFile(p, []byte(script), 0o755)
	})
	if err != nil {
		t.Fatal(err)
	}
	return progs
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// buildArm64Modules builds the testdata provider and consumer modules for
// arm64 against kdir in work/provider and work/consumer and returns the
// two .ko files.
func buildArm64Modules(t *testing.T, kdir, work string) []string {
	t.Helper()
	provider := filepath.Join(work, "provider")
	consumer := filepath.Join(work, "consumer")
	for _, d := range []string{provider, consumer} {
		if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules", filepath.Base(d)), d, atomicfile.CopyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	makeModule(t, kdir, provider, arm64Make...)
	cmd := exec.Command("make", append([]string{"KDIR=" + kdir, "KBUILD_EXTRA_SYMBOLS=" + filepath.Join(provider, "Module.symvers")}, arm64Make...)...)
	cmd.Dir, cmd.Env = consumer, append(cleanEnv(), "PWD="+consumer)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make (consumer) against %s: %v\n%s", kdir, err, out)
	}
	return []string{filepath.Join(provider, "wslt_provider.ko"), filepath.Join(consumer, "wslt_consumer.ko")}
}

func koMachine(t *testing.T, p string) elf.Machine {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Machine
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}
