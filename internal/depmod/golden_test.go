package depmod

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// TestGoldenDebian runs kmod 30's depmod and ours on copies of the Debian
// linux-image tree (4023 modules) and requires byte-identical output; then
// kmod's modprobe and modinfo must answer the same with both sets of
// indexes.
func TestGoldenDebian(t *testing.T) {
	ref, rel := debianTree(t)
	ours := cloneTree(t, ref)
	conf := emptyConf(t)
	kmodDepmod(t, ref, rel, conf)
	rep := runOurs(t, ours, rel, Options{})
	if rep.Modules < 4000 {
		t.Fatalf("only %d modules indexed", rep.Modules)
	}
	if len(rep.Duplicates) != 0 {
		t.Errorf("unexpected duplicates: %v", rep.Duplicates)
	}
	compareOutputs(t, modDir(ref, rel), modDir(ours, rel))
	wd, err := os.ReadFile(filepath.Join(modDir(ours, rel), FileWeakdep))
	if err != nil {
		t.Fatal(err)
	}
	if string(wd) != "# Weak dependencies extracted from modules themselves.\n" {
		t.Errorf("modules.weakdep = %q, want only the header", wd)
	}
	t.Run("consumers", func(t *testing.T) { compareConsumers(t, ref, ours, rel, conf) })
}

// compareConsumers asks kmod's modprobe and modinfo about a sample of
// modules and aliases in two trees and requires the same answers (with
// the base directory masked).
func compareConsumers(t *testing.T, ref, ours, rel, conf string) {
	order, err := os.ReadFile(filepath.Join(modDir(ref, rel), "modules.order"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i, l := range modtree.ParseOrder(order) {
		if i%60 == 0 {
			names = append(names, strings.TrimSuffix(filepath.Base(l), ".ko"))
		}
	}
	// Modules with long dependency chains.
	names = append(names, "vfat", "xfs", "btrfs", "nf_nat_ftp", "snd_hda_intel", "twofish_x86_64_3way")
	var aliases []string
	f, err := os.Open(filepath.Join(modDir(ref, rel), FileAlias))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan(); i++ {
		if fs := strings.Fields(sc.Text()); len(fs) == 3 && fs[0] == "alias" && i%400 == 1 &&
			!strings.ContainsAny(fs[1], "*?[") {
			aliases = append(aliases, fs[1])
		}
	}
	f.Close()
	aliases = append(aliases, "fs-vfat", "char-major-10-229", "devname:fuse", "crypto-sha256", "net-pf-10")
	ask := func(base, tool string, args ...string) string {
		out, err := kmod(t, tool, args...)
		if err != nil {
			out += "\nexit: " + err.Error()
		}
		return strings.ReplaceAll(out, base, "BASE")
	}
	nonEmpty := 0
	check := func(what string, argsFor func(base string) []string, tool string) {
		a := ask(ref, tool, argsFor(ref)...)
		b := ask(ours, tool, argsFor(ours)...)
		if a != b {
			t.Errorf("%s: kmod's indexes give\n%s\nours give\n%s", what, a, b)
		}
		if strings.TrimSpace(a) != "" && !strings.Contains(a, "exit:") {
			nonEmpty++
		}
	}
	for _, n := range names {
		check("modprobe --show-depends "+n, func(base string) []string {
			return []string{"-d", base, "-S", rel, "-C", conf, "--show-depends", n}
		}, "modprobe")
		check("modinfo "+n, func(base string) []string { return []string{"-b", base, "-k", rel, n} }, "modinfo")
	}
	for _, a := range aliases {
		check("modprobe -R "+a, func(base string) []string {
			return []string{"-d", base, "-S", rel, "-C", conf, "-R", a}
		}, "modprobe")
	}
	// A symbol lookup goes through modules.symbols.bin, a built-in module
	// through modules.builtin.bin.
	for _, q := range []string{"symbol:fat_fill_super", "symbol:nf_conntrack_in"} {
		check("modprobe -R "+q, func(base string) []string {
			return []string{"-d", base, "-S", rel, "-C", conf, "-R", q}
		}, "modprobe")
	}
	check("modprobe --show-depends unix (built-in)", func(base string) []string {
		return []string{"-d", base, "-S", rel, "-C", conf, "--show-depends", "unix"}
	}, "modprobe")
	t.Logf("%d of %d kmod answers non-empty and identical", nonEmpty, len(names)*2+len(aliases)+3)
	if want := len(names)*2 + len(aliases); nonEmpty < want*9/10 {
		t.Errorf("only %d of %d kmod answers were successful and non-empty", nonEmpty, want)
	}
}

// compress replaces the module at p with a compressed copy made by the
// real tool and returns the new path.
func compress(t testing.TB, p, kind string) string {
	t.Helper()
	var cmd *exec.Cmd
	var out string
	switch kind {
	case "xz":
		out = p + ".xz"
		// Options as the kernel's modules_install uses.
		cmd = exec.Command(testenv.Tool(t, "xz"), "--check=crc32", "--lzma2=dict=1MiB", "-T1", "-q", p)
	case "zst":
		out = p + ".zst"
		cmd = exec.Command(testenv.Tool(t, "zstd"), "-q", "-T1", "--rm", p)
	case "gz":
		out = p + ".gz"
		cmd = exec.Command(testenv.Tool(t, "gzip"), "-n", "-9", p)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, b)
	}
	if _, err := os.Stat(p); err == nil {
		t.Fatalf("%s still present after compression", p)
	}
	return out
}

// TestGoldenCompressed compresses a sample of the Debian modules with xz
// and zstd (including heavily used ones, so compressed paths appear as
// dependencies) and requires byte-identical output to kmod 30's.
func TestGoldenCompressed(t *testing.T) {
	ref, rel := debianTree(t)
	dir := modDir(ref, rel)
	order, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{
		"kernel/fs/fat/fat.ko":                       "xz",
		"kernel/crypto/twofish_common.ko":            "zst",
		"kernel/net/netfilter/nf_conntrack.ko":       "xz",
		"kernel/sound/core/snd.ko":                   "zst",
		"kernel/drivers/usb/serial/usbserial.ko":     "xz",
		"kernel/arch/x86/crypto/twofish-x86_64.ko":   "xz",
		"kernel/drivers/media/v4l2-core/videodev.ko": "zst",
	}
	for i, l := range modtree.ParseOrder(order) {
		switch i % 50 {
		case 3:
			kinds[l] = "xz"
		case 4:
			kinds[l] = "zst"
		}
	}
	for p, k := range kinds {
		// Never compress in place: the tree is hard-linked to the cache.
		full := filepath.Join(dir, p)
		b, err := os.ReadFile(full)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(full); err != nil {
			t.Fatal(err)
		}
		testenv.WriteFile(t, full, string(b))
		compress(t, full, k)
	}
	ours := cloneTree(t, ref)
	kmodDepmod(t, ref, rel, emptyConf(t))
	runOurs(t, ours, rel, Options{})
	compareOutputs(t, modDir(ref, rel), modDir(ours, rel))
	dep, _ := os.ReadFile(filepath.Join(modDir(ours, rel), FileDep))
	for _, want := range []string{" kernel/fs/fat/fat.ko.xz", " kernel/crypto/twofish_common.ko.zst", "kernel/sound/core/snd.ko.zst:"} {
		if !bytes.Contains(dep, []byte(want)) {
			t.Errorf("modules.dep lacks %q", want)
		}
	}
}

// TestGzipModules shows that Debian's kmod 30 (-ZLIB) ignores .ko.gz
// modules, while ours reads them: our output for a tree with a gzipped
// module equals kmod's for the uncompressed tree, with the suffix added.
func TestGzipModules(t *testing.T) {
	base, rel := subsetTree(t, "kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko", "kernel/fs/fat/msdos.ko",
		"kernel/fs/nls/nls_cp437.ko")
	conf := emptyConf(t)
	plain := cloneTree(t, base)
	kmodDepmod(t, plain, rel, conf)
	wantDep, err := os.ReadFile(filepath.Join(modDir(plain, rel), FileDep))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(wantDep, []byte("vfat.ko: kernel/fs/fat/fat.ko")) {
		t.Fatalf("unexpected kmod modules.dep:\n%s", wantDep)
	}

	fat := filepath.Join(modDir(base, rel), "kernel/fs/fat/fat.ko")
	b, _ := os.ReadFile(fat)
	os.Remove(fat)
	testenv.WriteFile(t, fat, string(b))
	compress(t, fat, "gz")
	gz := cloneTree(t, base)
	kmodDepmod(t, base, rel, conf)
	kdep, _ := os.ReadFile(filepath.Join(modDir(base, rel), FileDep))
	if bytes.Contains(kdep, []byte("fat.ko.gz")) {
		t.Logf("this kmod reads .ko.gz modules:\n%s", kdep)
	} else if !bytes.Contains(kdep, []byte("kernel/fs/fat/vfat.ko:\n")) {
		t.Errorf("kmod without zlib should drop vfat's dependency on fat.ko.gz:\n%s", kdep)
	}

	runOurs(t, gz, rel, Options{})
	got, _ := os.ReadFile(filepath.Join(modDir(gz, rel), FileDep))
	want := bytes.ReplaceAll(wantDep, []byte("kernel/fs/fat/fat.ko"), []byte("kernel/fs/fat/fat.ko.gz"))
	if !bytes.Equal(got, want) {
		t.Errorf("modules.dep with fat.ko.gz:\n%s\nwant\n%s", got, want)
	}
	// kmod's modprobe on this host can resolve the dependency through our
	// index even though it cannot decompress the file.
	out, _ := kmod(t, "modprobe", "-d", gz, "-S", rel, "-C", conf, "--show-depends", "vfat")
	if !strings.Contains(out, "fat.ko.gz") {
		t.Errorf("modprobe --show-depends vfat with our index:\n%s", out)
	}
}

// TestDuplicates puts copies of modules under updates/ and extra/ and
// compares with kmod run with the same explicit ranking.
func TestDuplicates(t *testing.T) {
	base, rel := subsetTree(t, "kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko", "kernel/fs/fat/msdos.ko",
		"kernel/fs/nls/nls_cp437.ko")
	dir := modDir(base, rel)
	for _, c := range [][2]string{
		{"kernel/fs/fat/fat.ko", "updates/fat.ko"},
		{"kernel/fs/fat/msdos.ko", "extra/msdos.ko"},
		{"kernel/fs/fat/vfat.ko", "extra/vfat.ko"},
		{"kernel/fs/fat/vfat.ko", "updates/sub/vfat.ko"},
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, c[1])), 0o755)
		if err := linkFile(filepath.Join(dir, c[0]), filepath.Join(dir, c[1])); err != nil {
			t.Fatal(err)
		}
	}
	// Also list the copies in modules.order, as the build stage does.
	f, _ := os.OpenFile(filepath.Join(dir, "modules.order"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("extra/msdos.ko\nextra/vfat.ko\nupdates/fat.ko\nupdates/sub/vfat.ko\n")
	f.Close()
	conf := t.TempDir()
	testenv.WriteFile(t, filepath.Join(conf, "search.conf"), "search updates extra built-in\n")
	ours := cloneTree(t, base)
	kmodDepmod(t, base, rel, conf)
	rep := runOurs(t, ours, rel, Options{})
	compareOutputs(t, dir, modDir(ours, rel))
	want := map[string]string{"fat": "updates/fat.ko", "msdos": "extra/msdos.ko", "vfat": "updates/sub/vfat.ko"}
	winners := map[string]string{}
	losers := 0
	for _, d := range rep.Duplicates {
		winners[d.Name] = d.Winner
		losers++
	}
	for n, w := range want {
		if winners[n] != w {
			t.Errorf("duplicate %s: winner %q, want %q (report %+v)", n, winners[n], w, rep.Duplicates)
		}
	}
	if losers != 4 {
		t.Errorf("%d duplicates reported, want 4: %+v", losers, rep.Duplicates)
	}
}

// TestMissingBuiltin: without modules.builtin*, kmod 30 writes 0-byte
// builtin indexes; we write valid empty ones that modprobe accepts.
func TestMissingBuiltin(t *testing.T) {
	base, rel := subsetTree(t, "kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko")
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo"} {
		os.Remove(filepath.Join(modDir(base, rel), f))
	}
	conf := emptyConf(t)
	ours := cloneTree(t, base)
	kmodDepmod(t, base, rel, conf)
	runOurs(t, ours, rel, Options{})
	empty := []byte{0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1, 0, 0, 0, 0x0C}
	for _, f := range []string{FileBuiltinBin, FileBuiltinAliasBn} {
		k, _ := os.ReadFile(filepath.Join(modDir(base, rel), f))
		if len(k) != 0 {
			t.Logf("kmod wrote %d bytes for %s (documented as 0)", len(k), f)
		}
		o, _ := os.ReadFile(filepath.Join(modDir(ours, rel), f))
		if !bytes.Equal(o, empty) {
			t.Errorf("%s = %x, want the empty index", f, o)
		}
	}
	out, err := kmod(t, "modprobe", "-d", ours, "-S", rel, "-C", conf, "--show-depends", "vfat")
	if err != nil || !strings.Contains(out, "fat.ko") {
		t.Errorf("modprobe with our indexes: %v\n%s", err, out)
	}
}

// TestOrderRules: a module listed twice in modules.order takes the
// position of its last line (kmod 30), compared byte for byte with kmod;
// modules missing from modules.order come after the listed ones, sorted
// by path (kmod's order for those is unspecified, so only the set of
// lines is compared with kmod's).
func TestOrderRules(t *testing.T) {
	mods := []string{"kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko", "kernel/fs/fat/msdos.ko",
		"kernel/fs/nls/nls_cp437.ko", "kernel/fs/nls/nls_iso8859-1.ko", "kernel/fs/nls/nls_utf8.ko"}
	base, rel := subsetTree(t, mods...)
	dir := modDir(base, rel)
	testenv.WriteFile(t, filepath.Join(dir, "modules.order"),
		"kernel/fs/fat/fat.ko\nkernel/fs/nls/nls_utf8.ko\nkernel/fs/fat/vfat.ko\nkernel/fs/fat/msdos.ko\n"+
			"kernel/fs/nls/nls_cp437.ko\nkernel/fs/fat/fat.ko\nkernel/fs/nls/nls_iso8859-1.ko\nkernel/no/such.ko\n")
	conf := emptyConf(t)
	ours := cloneTree(t, base)
	kmodDepmod(t, base, rel, conf)
	runOurs(t, ours, rel, Options{})
	compareOutputs(t, dir, modDir(ours, rel))
	dep, _ := os.ReadFile(filepath.Join(dir, FileDep))
	if !strings.Contains(string(dep), "kernel/fs/nls/nls_cp437.ko:\nkernel/fs/fat/fat.ko:\n") {
		t.Errorf("kmod did not place fat.ko at its last modules.order line:\n%s", dep)
	}

	// Unlisted modules.
	testenv.WriteFile(t, filepath.Join(dir, "modules.order"), "kernel/fs/nls/nls_utf8.ko\nkernel/fs/fat/vfat.ko\n")
	ours = cloneTree(t, base)
	kmodDepmod(t, base, rel, conf)
	runOurs(t, ours, rel, Options{})
	kdep, _ := os.ReadFile(filepath.Join(dir, FileDep))
	odep, _ := os.ReadFile(filepath.Join(modDir(ours, rel), FileDep))
	want := "kernel/fs/nls/nls_utf8.ko:\nkernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko\n" +
		"kernel/fs/fat/fat.ko:\nkernel/fs/fat/msdos.ko: kernel/fs/fat/fat.ko\n" +
		"kernel/fs/nls/nls_cp437.ko:\nkernel/fs/nls/nls_iso8859-1.ko:\n"
	if string(odep) != want {
		t.Errorf("our modules.dep:\n%s\nwant\n%s", odep, want)
	}
	sortedLines := func(b []byte) string {
		l := strings.Split(strings.TrimSpace(string(b)), "\n")
		sort.Strings(l)
		return strings.Join(l, "\n")
	}
	if sortedLines(kdep) != sortedLines(odep) {
		t.Errorf("modules.dep lines differ from kmod's:\n%s\nkmod:\n%s", odep, kdep)
	}
}
