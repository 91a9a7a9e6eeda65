package modtree

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// Symbols altered in the Debian Module.symvers: a vmlinux symbol whose CRC
// is changed and one that is removed.
const (
	crcSymbol     = "__pci_register_driver"
	removedSymbol = "kmalloc_caches"
)

var debian struct {
	once sync.Once
	tree *Tree
	err  error
}

// debianTree loads the Debian module tree once for all tests (the tests
// only read it).
func debianTree(t *testing.T) (*Tree, string) {
	t.Helper()
	root, rel := testenv.DebianModules(t)
	dir := filepath.Join(root, "lib", "modules", rel)
	debian.once.Do(func() { debian.tree, debian.err = LoadDir(dir, rel) })
	if debian.err != nil {
		t.Fatal(debian.err)
	}
	return debian.tree, dir
}

// alteredSymvers writes a copy of Module.symvers with crcSymbol's CRC
// changed and removedSymbol's line deleted.
func alteredSymvers(t *testing.T) string {
	t.Helper()
	good, err := os.ReadFile(testenv.DebianSymvers(t))
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`(?m)^0x[0-9a-f]+\t`+regexp.QuoteMeta(crcSymbol)+`\tvmlinux\t`).
		ReplaceAllString(string(good), "0x12345678\t"+crcSymbol+"\tvmlinux\t")
	text2 := regexp.MustCompile(`(?m)^0x[0-9a-f]+\t`+regexp.QuoteMeta(removedSymbol)+`\tvmlinux\t.*\n`).
		ReplaceAllString(text, "")
	if text == string(good) || text2 == text {
		t.Fatal("could not alter Module.symvers")
	}
	p := filepath.Join(t.TempDir(), "Module.symvers")
	if err := os.WriteFile(p, []byte(text2), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// kmodChecks runs kmod's depmod -n -e -E symvers on the Debian tree (in
// the background: start it before loading the tree) and returns the
// "module symbol" pairs it reports as unresolved and as CRC mismatches.
func kmodChecks(t *testing.T, symvers string) func() (unresolved, crc []string) {
	t.Helper()
	root, rel := testenv.DebianModules(t)
	dir := filepath.Join(root, "lib", "modules", rel)
	cmd := exec.Command(testenv.Tool(t, "depmod"), "-n", "-b", root, "-C", t.TempDir(), "-e", "-E", symvers, rel)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // -n writes the index files to stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() (unresolved, crc []string) {
		t.Helper()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("depmod: %v\n%s", err, stderr.String())
		}
		unresolved, crc = testenv.KmodProblems(t, stderr.String(), dir)
		sort.Strings(unresolved)
		sort.Strings(crc)
		return unresolved, crc
	}
}

// split sorts problems into "module symbol" lists by kind.
func split(t *testing.T, ps []Problem) (unresolved, crc []string) {
	t.Helper()
	for _, p := range ps {
		switch p.Kind {
		case Unresolved:
			unresolved = append(unresolved, p.Module+" "+p.Symbol)
		case CRCMismatch:
			crc = append(crc, p.Module+" "+p.Symbol)
		default:
			t.Errorf("unexpected problem %s", p)
		}
	}
	sort.Strings(unresolved)
	sort.Strings(crc)
	return unresolved, crc
}

func same(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") == strings.Join(want, "\n") {
		return
	}
	for i := 0; ; i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("%s: %d reported, kmod %d; first difference at %d: %q vs kmod %q", what, len(got), len(want), i, g, w)
			return
		}
	}
}

// TestLoadDir: every module of modules.order is loaded, in path order,
// with its name and vermagic as modinfo reports them.
func TestLoadDir(t *testing.T) {
	tree, dir := debianTree(t)
	order, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Fields(string(order))
	sort.Strings(want)
	var got []string
	for _, e := range tree.Modules {
		got = append(got, e.Path)
		if e.Module == nil || e.Name != kmodule.ModName(e.Path) {
			t.Fatalf("%s: bad entry %+v", e.Path, e)
		}
	}
	if len(got) != 4023 {
		t.Errorf("%d modules, want 4023", len(got))
	}
	same(t, "module paths vs modules.order", got, want)
	if tree.Release == "" || tree.Symvers != nil {
		t.Errorf("release %q, symvers %v", tree.Release, tree.Symvers != nil)
	}
	// Spot-check parsed content against modinfo.
	for _, i := range []int{0, len(tree.Modules) / 2, len(tree.Modules) - 1} {
		e := tree.Modules[i]
		out, err := exec.Command(testenv.Tool(t, "modinfo"), "-F", "vermagic", filepath.Join(dir, e.Path)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if v := strings.TrimSuffix(string(out), "\n"); e.Vermagic() != v {
			t.Errorf("%s: vermagic %q, modinfo says %q", e.Path, e.Vermagic(), v)
		}
	}
}

func TestLoadDirErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.ko"), []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir, "r"); err == nil || !strings.Contains(err.Error(), "bad.ko") {
		t.Errorf("LoadDir with a bad module = %v, want an error naming bad.ko", err)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := LoadDir(missing, "r"); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("LoadDir(missing) = %v, want an error naming %s", err, missing)
	}
}

func TestReadSymvers(t *testing.T) {
	p := testenv.DebianSymvers(t)
	sv, err := ReadSymvers(p)
	if err != nil {
		t.Fatal(err)
	}
	// Compare every entry with the file split by awk.
	out, err := exec.Command(testenv.Tool(t, "awk"), "-F", "\t", `{print $2, $1, $3, $4, "[" $5 "]"}`, p).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(sv) != len(lines) || len(sv) < 20000 {
		t.Fatalf("%d symbols, the file has %d lines", len(sv), len(lines))
	}
	namespaces := 0
	for _, l := range lines {
		f := strings.Fields(l)
		e, ok := sv[f[0]]
		if !ok {
			t.Fatalf("%s missing", f[0])
		}
		got := fmt.Sprintf("%s 0x%08x %s %s [%s]", f[0], e.CRC, e.Module, e.Export, e.Namespace)
		if got != l {
			t.Fatalf("entry %q, file says %q", got, l)
		}
		if e.Namespace != "" {
			namespaces++
		}
	}
	if namespaces == 0 {
		t.Error("no symbol namespace parsed")
	}
}

func TestReadSymversErrors(t *testing.T) {
	good, err := os.ReadFile(testenv.DebianSymvers(t))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	for _, tc := range []struct {
		name, line, want string
	}{
		{"fields", "0x12345678\tfoo\tvmlinux\n", "want at least 4 tab-separated fields, got 3"},
		{"spaces", "0x12345678 foo vmlinux EXPORT_SYMBOL\n", "got 1"},
		{"crc", "0xnothex\tfoo\tvmlinux\tEXPORT_SYMBOL\t\n", `bad CRC "0xnothex"`},
		{"crc-empty", "\tfoo\tvmlinux\tEXPORT_SYMBOL\t\n", `bad CRC ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 1234 // the 1234th line is replaced
			bad := append(append(append([]string{}, lines[:n-1]...), tc.line), lines[n:]...)
			p := filepath.Join(t.TempDir(), "Module.symvers")
			if err := os.WriteFile(p, []byte(strings.Join(bad, "")), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadSymvers(p)
			if want := fmt.Sprintf("%s:%d: ", p, n); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ReadSymvers = %v, want an error with %q and %q", err, want, tc.want)
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := ReadSymvers(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("ReadSymvers(missing) = %v", err)
	}
}

// TestValidateAgainstKmod compares Validate with kmod's depmod -e -E: the
// real Module.symvers gives no problems, the altered one exactly the
// modules importing the changed and removed symbols.
func TestValidateAgainstKmod(t *testing.T) {
	bad := alteredSymvers(t)
	kmodBad := kmodChecks(t, bad)
	kmodGood := kmodChecks(t, testenv.DebianSymvers(t))
	tree, _ := debianTree(t)

	good, err := ReadSymvers(testenv.DebianSymvers(t))
	if err != nil {
		t.Fatal(err)
	}
	t2 := *tree
	t2.Symvers = good
	if ps := t2.Validate(ValidateOptions{}); len(ps) != 0 {
		t.Errorf("%d problems with the real Module.symvers, first: %s", len(ps), ps[0])
	}
	wantUnr, wantCRC := kmodGood()
	if len(wantUnr)+len(wantCRC) != 0 {
		t.Errorf("kmod reports problems with the real Module.symvers: %v %v", wantUnr, wantCRC)
	}

	t2.Symvers, err = ReadSymvers(bad)
	if err != nil {
		t.Fatal(err)
	}
	ps := t2.Validate(ValidateOptions{})
	gotUnr, gotCRC := split(t, ps)
	wantUnr, wantCRC = kmodBad()
	same(t, "unresolved", gotUnr, wantUnr)
	same(t, "CRC mismatches", gotCRC, wantCRC)
	// Every report is about the altered symbols, and there are enough of
	// them for the comparison to mean something.
	for _, p := range ps {
		if p.Kind == CRCMismatch && (p.Symbol != crcSymbol || (p.Want != "0x12345678" || p.Provider != ProviderVmlinux)) ||
			p.Kind == Unresolved && p.Symbol != removedSymbol {
			t.Errorf("unexpected problem %s", p)
		}
	}
	if len(gotUnr) < 100 || len(gotCRC) < 100 {
		t.Errorf("only %d unresolved, %d CRC mismatches", len(gotUnr), len(gotCRC))
	}
	// Cross-check: the modules whose __versions carry the symbol.
	var importers []string
	for _, e := range tree.Modules {
		for _, n := range e.Needs {
			if n.Name == crcSymbol && n.HasCRC {
				importers = append(importers, e.Path+" "+crcSymbol)
			}
		}
	}
	sort.Strings(importers)
	same(t, "CRC mismatches vs importers", gotCRC, importers)
	t.Logf("%d unresolved, %d CRC mismatches (same as kmod depmod -e -E)", len(gotUnr), len(gotCRC))

	// Only restricts the report, not the symbols provided.
	only := map[string]bool{}
	for _, s := range append(gotCRC[:3:3], gotUnr[len(gotUnr)-2:]...) {
		only[strings.Fields(s)[0]] = true
	}
	ps = t2.Validate(ValidateOptions{Only: only})
	if len(ps) == 0 {
		t.Fatal("Only: nothing reported")
	}
	for _, p := range ps {
		if !only[p.Module] {
			t.Errorf("Only: reported %s", p)
		}
	}
	var want []Problem
	for _, p := range t2.Validate(ValidateOptions{}) {
		if only[p.Module] {
			want = append(want, p)
		}
	}
	if fmt.Sprint(ps) != fmt.Sprint(want) {
		t.Errorf("Only: %v, want %v", ps, want)
	}
	if ps := t2.Validate(ValidateOptions{Only: map[string]bool{}}); len(ps) != 0 {
		t.Errorf("empty Only reported %v", ps)
	}
}

// TestValidateWithoutSymvers: without Symvers only module-to-module CRCs
// are checked; the Debian tree agrees with itself.
func TestValidateWithoutSymvers(t *testing.T) {
	tree, _ := debianTree(t)
	if ps := tree.Validate(ValidateOptions{}); len(ps) != 0 {
		t.Errorf("%d problems, first %s", len(ps), ps[0])
	}
	// Without Module.symvers the modules still check each other: a vfat
	// whose CRC for one of fat's exports is wrong is found, naming fat as
	// the provider; with fat gone, its symbols could be vmlinux's, so
	// nothing is reported.
	var vfat *Entry
	for _, e := range tree.Modules {
		if e.Path == "kernel/fs/fat/vfat.ko" {
			vfat = e
		}
	}
	if vfat == nil {
		t.Fatal("no vfat.ko in the Debian tree")
	}
	mod := *vfat.Module
	mod.Needs = append([]kmodule.Need(nil), vfat.Needs...)
	sym := ""
	for i, n := range mod.Needs {
		if n.Name == "fat_attach" && n.HasCRC {
			mod.Needs[i].CRC ^= 1
			sym = n.Name
		}
	}
	if sym == "" {
		t.Fatal("vfat.ko does not import fat_attach with a CRC")
	}
	bad := &Entry{Path: vfat.Path, Module: &mod}
	ps := tree.Overlay([]*Entry{bad}, nil).Validate(ValidateOptions{})
	if len(ps) != 1 || ps[0].Kind != CRCMismatch || ps[0].Symbol != sym || ps[0].Provider != "kernel/fs/fat/fat.ko" {
		t.Errorf("altered CRC: %v", ps)
	}
	if ps := tree.Overlay(nil, map[string]bool{"kernel/fs/fat/fat.ko": true}).Validate(ValidateOptions{}); len(ps) != 0 {
		t.Errorf("without fat.ko and Module.symvers: %v", ps)
	}
}

func TestValidateVermagic(t *testing.T) {
	tree, dir := debianTree(t)
	out, err := exec.Command(testenv.Tool(t, "modinfo"), "-F", "vermagic", filepath.Join(dir, tree.Modules[0].Path)).Output()
	if err != nil {
		t.Fatal(err)
	}
	vm := strings.TrimSuffix(string(out), "\n")
	if ps := tree.Validate(ValidateOptions{Vermagic: vm}); len(ps) != 0 {
		t.Errorf("%d problems with vermagic %q, first %s", len(ps), vm, ps[0])
	}
	other := strings.Replace(vm, "6.1.0", "6.1.1", 1)
	if other == vm {
		t.Fatalf("could not alter vermagic %q", vm)
	}
	ps := tree.Validate(ValidateOptions{Vermagic: other})
	if len(ps) != len(tree.Modules) {
		t.Errorf("%d vermagic problems, want one per module (%d)", len(ps), len(tree.Modules))
	}
	for _, p := range ps {
		if p.Kind != Vermagic || !strings.Contains(p.String(), p.Module+": vermagic "+fmt.Sprintf("%q", vm)) {
			t.Fatalf("unexpected problem %s", p)
		}
	}
	ps = tree.Validate(ValidateOptions{Vermagic: other, Only: map[string]bool{tree.Modules[7].Path: true}})
	if len(ps) != 1 || ps[0].Module != tree.Modules[7].Path {
		t.Errorf("Only + Vermagic: %v", ps)
	}
}

// TestValidateWeak: a weak undefined symbol that nothing provides is not
// reported; the same symbol as a strong need is.
func TestValidateWeak(t *testing.T) {
	tree, _ := debianTree(t)
	good, err := ReadSymvers(testenv.DebianSymvers(t))
	if err != nil {
		t.Fatal(err)
	}
	// A real module with a weak need, if the tree has one.
	var weak []string
	for _, e := range tree.Modules {
		for _, n := range e.Needs {
			if n.Weak {
				weak = append(weak, e.Path+" "+n.Name)
			}
		}
	}
	t.Logf("weak needs in the Debian tree: %v", weak)
	// Make one module's need weak and remove its symbol from Symvers.
	var entry *Entry
	var sym string
	for _, e := range tree.Modules {
		for _, n := range e.Needs {
			if !n.Weak && !n.VersionsOnly && n.HasCRC {
				if x, ok := good[n.Name]; ok && x.Module == "vmlinux" {
					entry, sym = e, n.Name
				}
			}
		}
		if entry != nil {
			break
		}
	}
	if entry == nil {
		t.Fatal("no module needing a vmlinux symbol")
	}
	sv := map[string]SymverEntry{}
	for k, v := range good {
		if k != sym {
			sv[k] = v
		}
	}
	e := *entry
	m := *entry.Module
	m.Needs = append([]kmodule.Need(nil), m.Needs...)
	e.Module = &m
	t2 := &Tree{Release: tree.Release, Modules: []*Entry{&e}, Symvers: sv}
	ps := t2.Validate(ValidateOptions{})
	if len(ps) != 1 || ps[0].Kind != Unresolved || ps[0].Symbol != sym {
		t.Fatalf("strong need: %v, want %s unresolved", ps, sym)
	}
	for i := range m.Needs {
		if m.Needs[i].Name == sym {
			m.Needs[i].Weak = true
		}
	}
	if ps := t2.Validate(ValidateOptions{}); len(ps) != 0 {
		t.Errorf("weak need reported: %v", ps)
	}
}

// writeModule copies a real module (compressed with tool if not "") to
// dir/rel.
func writeModule(t *testing.T, src, dir, rel, tool string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if tool != "" {
		cmd := exec.Command(testenv.Tool(t, tool), "-c")
		cmd.Stdin = bytes.NewReader(b)
		if b, err = cmd.Output(); err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestListModules(t *testing.T) {
	tree, ddir := debianTree(t)
	src := filepath.Join(ddir, tree.Modules[0].Path)
	dir := t.TempDir()
	for _, f := range []struct{ rel, tool string }{
		{"kernel/a.ko", ""},
		{"kernel/fs/b.ko.xz", "xz"},
		{"kernel/fs/c.ko.gz", "gzip"},
		{"kernel/d.ko.zst", "zstd"},
		{"updates/dkms/e.ko", ""},
		{"kernel/build/f.ko", ""},   // only the top-level build/ is skipped
		{"build/g.ko", ""},          // skipped
		{"source/drivers/h.ko", ""}, // skipped
		{"kernel/i.ko.bz2", ""},     // not a module name
		{"kernel/j.o", ""},
		{"kernel/k.ko.txt", ""},
		{"modules.order", ""},
		{"modules.dep", ""},
	} {
		writeModule(t, src, dir, f.rel, f.tool)
	}
	// A directory named like a module and a symlink to one are not
	// module files.
	if err := os.MkdirAll(filepath.Join(dir, "kernel", "dir.ko"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.ko", filepath.Join(dir, "kernel", "link.ko")); err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/a.ko", "kernel/build/f.ko", "kernel/d.ko.zst", "kernel/fs/b.ko.xz", "kernel/fs/c.ko.gz", "updates/dkms/e.ko"}
	got, err := ListModules(dir)
	if err != nil {
		t.Fatal(err)
	}
	same(t, "ListModules", got, want)

	// LoadDir decompresses them all.
	lt, err := LoadDir(dir, "r")
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range lt.Modules {
		if e.Path != want[i] || len(e.Needs) != len(tree.Modules[0].Needs) {
			t.Errorf("%s: %d needs, want %d", e.Path, len(e.Needs), len(tree.Modules[0].Needs))
		}
	}

	// build and source as symlinks (as installed kernels have them).
	link := t.TempDir()
	writeModule(t, src, link, "kernel/a.ko", "")
	for _, l := range []string{"build", "source"} {
		if err := os.Symlink(dir, filepath.Join(link, l)); err != nil {
			t.Fatal(err)
		}
	}
	got, err = ListModules(link)
	if err != nil {
		t.Fatal(err)
	}
	same(t, "ListModules with build/source links", got, []string{"kernel/a.ko"})

	// The module directory itself may be a symlink.
	ln := filepath.Join(t.TempDir(), "6.1.0-test")
	if err := os.Symlink(dir, ln); err != nil {
		t.Fatal(err)
	}
	got, err = ListModules(ln)
	if err != nil {
		t.Fatal(err)
	}
	same(t, "ListModules through a symlinked directory", got, want)

	// A regular file or a missing directory is an error naming it.
	for _, p := range []string{filepath.Join(dir, "modules.order"), filepath.Join(dir, "missing")} {
		if l, err := ListModules(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("ListModules(%s) = %v, %v; want an error naming it", p, l, err)
		}
	}
}
