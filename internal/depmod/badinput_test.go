package depmod

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// buildModule compiles C source into a relocatable ELF object with gcc,
// placed at dir/rel. Exports are declared through __ksymtab_strings (the
// fallback kmod uses without __crc_ symbols), needs are undefined symbols.
func buildModule(t testing.TB, dir, rel, src string) {
	t.Helper()
	gcc := testenv.Tool(t, "gcc")
	c := filepath.Join(t.TempDir(), "m.c")
	testenv.WriteFile(t, c, src)
	out := filepath.Join(dir, rel)
	os.MkdirAll(filepath.Dir(out), 0o755)
	if b, err := exec.Command(gcc, "-c", "-O2", "-o", out, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
}

// moduleSource returns C source for a module that exports export, calls
// need (if any) and carries the .modinfo records.
func moduleSource(export, need, modinfo string) string {
	var b strings.Builder
	if need != "" {
		b.WriteString("extern int " + need + "(void);\n")
		b.WriteString("int " + export + "(void) { return " + need + "() + 1; }\n")
	} else {
		b.WriteString("int " + export + "(void) { return 1; }\n")
	}
	b.WriteString(`static const char ksym[] __attribute__((used, section("__ksymtab_strings"), aligned(1))) = "` + export + `";` + "\n")
	b.WriteString(`static const char info[] __attribute__((used, section(".modinfo"), aligned(1))) = "` + modinfo + `";` + "\n")
	return b.String()
}

// appendOrder appends lines to modules.order.
func appendOrder(t testing.TB, dir string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "modules.order"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		f.WriteString(l + "\n")
	}
}

// snapshot reads every depmod output in dir.
func snapshot(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, n := range outputsPresent(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = b
	}
	return out
}

// requireUnchanged checks that dir holds exactly the outputs of before.
func requireUnchanged(t testing.TB, dir string, before map[string][]byte) {
	t.Helper()
	after := snapshot(t, dir)
	if len(after) != len(before) {
		t.Errorf("output files changed: before %d, after %d: %v", len(before), len(after), outputsPresent(t, dir))
	}
	for n, b := range before {
		if !bytes.Equal(after[n], b) {
			t.Errorf("%s was modified by a failed run", n)
		}
	}
}

// corruptCopy writes a compressed copy of the Debian fat.ko to dst (kind
// "xz", "zst" or "gz") and damages it.
func corruptCopy(t testing.TB, src, dst, kind string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	plain := strings.TrimSuffix(dst, "."+kind)
	testenv.WriteFile(t, plain, string(b))
	compress(t, plain, kind)
	c, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	switch kind {
	case "zst":
		c = c[:len(c)/2] // truncated stream
	default:
		for i := len(c) / 2; i < len(c)/2+64; i++ {
			c[i] ^= 0x5a // flipped bytes, caught by the format's checks
		}
	}
	if err := os.WriteFile(dst, c, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBadInput: each bad module gets an error naming its file, and a
// failed run leaves the previous indexes untouched and no temporary files.
func TestBadInput(t *testing.T) {
	root, rel0 := testenv.DebianModules(t)
	fat := filepath.Join(root, "lib", "modules", rel0, "kernel/fs/fat/fat.ko")
	fatBytes, err := os.ReadFile(fat)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		file string // relative path named in the error
		add  func(t *testing.T, dir string)
		want []string // substrings of the error
	}{
		{"truncated", "kernel/bad/truncated.ko", func(t *testing.T, dir string) {
			testenv.WriteFile(t, filepath.Join(dir, "kernel/bad/truncated.ko"), string(fatBytes[:len(fatBytes)/3]))
		}, []string{"truncated"}},
		{"not-elf", "kernel/bad/notelf.ko", func(t *testing.T, dir string) {
			testenv.WriteFile(t, filepath.Join(dir, "kernel/bad/notelf.ko"), "#!/bin/sh\necho this is not a module\n")
		}, []string{"not an ELF"}},
		{"corrupt-xz", "kernel/bad/corrupt.ko.xz", func(t *testing.T, dir string) {
			corruptCopy(t, fat, filepath.Join(dir, "kernel/bad/corrupt.ko.xz"), "xz")
		}, []string{"xz"}},
		{"corrupt-zstd", "kernel/bad/corrupt.ko.zst", func(t *testing.T, dir string) {
			corruptCopy(t, fat, filepath.Join(dir, "kernel/bad/corrupt.ko.zst"), "zst")
		}, []string{"zstd"}},
		{"corrupt-gzip", "kernel/bad/corrupt.ko.gz", func(t *testing.T, dir string) {
			corruptCopy(t, fat, filepath.Join(dir, "kernel/bad/corrupt.ko.gz"), "gz")
		}, []string{"gzip"}},
		{"non-ascii-alias", "kernel/bad/accent.ko", func(t *testing.T, dir string) {
			buildModule(t, dir, "kernel/bad/accent.ko", moduleSource("accent_fn", "", `license=GPL\0alias=caf\xc3\xa9\0`))
			appendOrder(t, dir, "kernel/bad/accent.ko")
		}, []string{"alias", "7-bit ASCII"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base, rel := subsetTree(t, "kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko")
			dir := modDir(base, rel)
			runOurs(t, base, rel, Options{})
			before := snapshot(t, dir)
			if len(before) != len(OutputFiles) {
				t.Fatalf("first run wrote %d files, want %d", len(before), len(OutputFiles))
			}
			tc.add(t, dir)
			_, err := Run(context.Background(), Options{BaseDir: base, Release: rel})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.file) {
				t.Errorf("error does not name %s: %v", tc.file, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			t.Logf("error: %v", err)
			requireUnchanged(t, dir, before)
		})
	}
}

// TestCycle builds three real ELF objects: a and b need each other's
// symbols, c needs a. kmod's depmod reports the cycle and writes nothing;
// so do we, naming a and b.
func TestCycle(t *testing.T) {
	base, rel := subsetTree(t, "kernel/fs/fat/fat.ko")
	dir := modDir(base, rel)
	buildModule(t, dir, "extra/cyc-a.ko", moduleSource("cyc_a_fn", "cyc_b_fn", `license=GPL\0alias=cyc-a`))
	buildModule(t, dir, "extra/cyc_b.ko", moduleSource("cyc_b_fn", "cyc_a_fn", `license=GPL`))
	buildModule(t, dir, "extra/user.ko", moduleSource("user_fn", "cyc_a_fn", `license=GPL`))
	appendOrder(t, dir, "extra/cyc-a.ko", "extra/cyc_b.ko", "extra/user.ko")

	ref := cloneTree(t, base)
	out, kerr := kmod(t, "depmod", "-b", ref, "-C", emptyConf(t), rel)
	if kerr == nil || !strings.Contains(out, "Cycle detected") {
		t.Errorf("kmod depmod did not report the cycle (err %v):\n%s", kerr, out)
	}
	if got := outputsPresent(t, modDir(ref, rel)); len(got) != 0 {
		t.Logf("kmod left %v", got)
	}

	_, err := Run(context.Background(), Options{BaseDir: base, Release: rel})
	var ce *CycleError
	if !errors.As(err, &ce) {
		t.Fatalf("Run = %v, want a CycleError", err)
	}
	t.Logf("kmod: %s", strings.TrimSpace(out))
	t.Logf("ours: %v", err)
	if len(ce.Cycles) != 1 {
		t.Fatalf("cycles %v, want one", ce.Cycles)
	}
	c := strings.Join(ce.Cycles[0], " -> ")
	if c != "cyc_a -> cyc_b -> cyc_a" && c != "cyc_b -> cyc_a -> cyc_b" {
		t.Errorf("cycle %q", c)
	}
	if strings.Join(ce.Paths, ",") != "extra/cyc-a.ko,extra/cyc_b.ko" {
		t.Errorf("paths %v", ce.Paths)
	}
	if got := outputsPresent(t, dir); len(got) != 0 {
		t.Errorf("files written despite the cycle: %v", got)
	}

	// Without the cycle, kmod and we agree on the crafted modules.
	buildModule(t, dir, "extra/cyc_b.ko", moduleSource("cyc_b_fn", "", `license=GPL`))
	ref = cloneTree(t, base)
	kmodDepmod(t, ref, rel, emptyConf(t))
	runOurs(t, base, rel, Options{})
	compareOutputs(t, modDir(ref, rel), dir)
	dep, _ := os.ReadFile(filepath.Join(dir, FileDep))
	if !strings.Contains(string(dep), "extra/user.ko: extra/cyc-a.ko extra/cyc_b.ko\n") {
		t.Errorf("modules.dep:\n%s", dep)
	}
}

// TestUnwritableOutput: when the module directory cannot be written, the
// error names the file and the old indexes stay as they were.
func TestUnwritableOutput(t *testing.T) {
	base, rel := subsetTree(t, "kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko")
	dir := modDir(base, rel)
	runOurs(t, base, rel, Options{})
	before := snapshot(t, dir)
	if os.Geteuid() == 0 {
		// Permissions do not stop root; the immutable attribute does.
		chattr := testenv.Tool(t, "chattr")
		if b, err := exec.Command(chattr, "+i", dir).CombinedOutput(); err != nil {
			testenv.Missing(t, "chattr +i on %s: %v %s", dir, err, b)
		}
		t.Cleanup(func() { exec.Command(chattr, "-i", dir).Run() })
	} else {
		os.Chmod(dir, 0o555)
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	}
	_, err := Run(context.Background(), Options{BaseDir: base, Release: rel})
	if err == nil {
		t.Fatal("no error for an unwritable module directory")
	}
	if !strings.Contains(err.Error(), filepath.Join(dir, FileDep)) {
		t.Errorf("error does not name the output file: %v", err)
	}
	t.Logf("error: %v", err)
	requireUnchanged(t, dir, before)
}
