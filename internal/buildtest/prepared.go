package buildtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// WSLConfig is Microsoft's x86_64 config of linux-msft-wsl-6.6.87.1 (a
// copy of shared/reference/configs/config-wsl-6.6.87.1).
func WSLConfig() string { return Testdata("dkms", "config-wsl-6.6.87.1") }

// preparedFormat is part of the prepared trees' cache key.
const preparedFormat = "prepared-2"

// PreparedKernel returns Debian's linux-source-6.12 (SourceDir) configured
// with config (make olddefconfig) and prepared for external modules (make
// modules_prepare), not built: about a minute on 2 cores instead of the
// hour a full build of Microsoft's config takes. It is shaped as a kbuild
// cache entry (kernel-devel is the O= object tree; no image, no stock
// modules) so that BuildModules and dkms build take it as they take a
// built kernel. It is cached in testenv.CacheDir()/prepared/<key>, keyed
// by the source's Makefile, the config, the compiler and a format, and
// built once under a file lock.
//
// Without vmlinux there is no real Module.symvers. modpost needs one to
// resolve symbols, so the tree gets a stand-in listing every symbol the
// source exports (EXPORT_SYMBOL*, EXPORT_PER_CPU_SYMBOL*, static calls,
// tracepoints and x86's retpoline thunks, outside other arches'
// directories) plus those of the test
// kernel's Module.symvers (exports that macros generate), all as vmlinux's
// with CRC 0 (DEFAULT_SYMBOL_NAMESPACE is not followed). A module that
// builds here may therefore still miss a symbol of the real kernel, and
// its depends: lists no stock module; both apply to every builder of the
// tree alike. The stock-mode tree of internal/kbuild is to replace this.
func PreparedKernel(t testing.TB, config string) *kbuild.Kernel {
	t.Helper()
	src := SourceDir(t)
	key, err := preparedKey(src, config)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(testenv.CacheDir(), "prepared", key)
	if k, err := kbuild.OpenKernel(dir); err == nil {
		return k
	}
	symvers := TestKernel(t).Symvers()
	unlock := testenv.Lock(t, dir+".lock")
	defer unlock()
	if k, err := kbuild.OpenKernel(dir); err == nil {
		return k
	}
	start := time.Now()
	if err := prepare(src, config, symvers, dir, key); err != nil {
		t.Fatalf("preparing %s with %s: %v", src, config, err)
	}
	t.Logf("prepared kernel tree %s in %.0fs", dir, time.Since(start).Seconds())
	k, err := kbuild.OpenKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func preparedKey(src, config string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", preparedFormat, runtime.GOARCH)
	for _, f := range []string{filepath.Join(src, "Makefile"), config} {
		d, err := digest.File(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\n", d)
	}
	cc, err := exec.Command("gcc", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("gcc --version: %w", err)
	}
	h.Write(cc)
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// prepare makes the entry in dir; meta.json, written last, marks it
// complete.
func prepare(src, config, testSymvers, dir, key string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	devel := filepath.Join(dir, "kernel-devel")
	if err := os.MkdirAll(devel, 0o755); err != nil {
		return err
	}
	cfg, err := os.ReadFile(config)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(devel, ".config"), cfg, 0o644); err != nil {
		return err
	}
	env := append(safeenv.Environ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARCH", "CROSS_COMPILE", "KBUILD_OUTPUT", "O", "M",
		"CC", "LOCALVERSION", "KCONFIG_CONFIG", "LANG", "LC_ALL"), "LC_ALL=C")
	for _, target := range [][]string{{"olddefconfig"}, {fmt.Sprintf("-j%d", runtime.NumCPU()), "modules_prepare"}} {
		cmd := exec.Command("make", append([]string{"-s", "-C", src, "O=" + devel, "LOCALVERSION="}, target...)...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("make %s: %v\n%s", strings.Join(target, " "), err, tail(out))
		}
	}
	if err := writeSymvers(src, testSymvers, devel, dir); err != nil {
		return err
	}
	return writePreparedMeta(devel, dir, key, env)
}

// exportRE matches the export macros whose names the stand-in
// Module.symvers lists; a name built with ## is left to the test kernel's
// list.
var exportRE = regexp.MustCompile(`^(EXPORT_SYMBOL|EXPORT_PER_CPU_SYMBOL|EXPORT_STATIC_CALL|EXPORT_TRACEPOINT_SYMBOL|__EXPORT_THUNK)(_[A-Z_]+)?\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:,\s*"?([A-Za-z_][A-Za-z0-9_]*)"?\s*)?\)$`)

// writeSymvers writes the stand-in Module.symvers into the tree and the
// entry.
func writeSymvers(src, testSymvers, devel, dir string) error {
	cmd := exec.Command("grep", "-rhoE", "--include=*.[chS]", "--exclude-dir=arch", "--exclude-dir=tools",
		"--exclude-dir=Documentation", "--exclude-dir=samples", "--exclude-dir=scripts",
		`(__)?EXPORT_(SYMBOL|PER_CPU_SYMBOL|STATIC_CALL|TRACEPOINT_SYMBOL|THUNK)[A-Z_]*[[:space:]]*\([^)]*\)`, ".", "arch/x86")
	cmd.Dir = src
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("grep exports: %w", err)
	}
	syms := map[string]string{} // name -> "export\tnamespace"
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := exportRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		export := "EXPORT_SYMBOL"
		if strings.Contains(m[2], "GPL") {
			export = "EXPORT_SYMBOL_GPL"
		}
		ns := ""
		if strings.Contains(m[2], "_NS") {
			ns = m[4]
		}
		for _, n := range exportedNames(m[1], m[2], m[3]) {
			if old, ok := syms[n]; !ok || strings.HasPrefix(old, "EXPORT_SYMBOL_GPL") && export == "EXPORT_SYMBOL" {
				syms[n] = export + "\t" + ns
			}
		}
	}
	// arch/x86/lib/retpoline.S exports a thunk per register with ##.
	regs, err := os.ReadFile(filepath.Join(src, "arch", "x86", "include", "asm", "GEN-for-each-reg.h"))
	if err != nil {
		return err
	}
	for _, m := range regexp.MustCompile(`(?m)^GEN\((\w+)\)`).FindAllStringSubmatch(string(regs), -1) {
		for _, f := range []string{"__x86_indirect_thunk_", "__x86_indirect_call_thunk_", "__x86_indirect_jump_thunk_"} {
			syms[f+m[1]] = "EXPORT_SYMBOL\t"
		}
	}
	real, err := modtree.ReadSymvers(testSymvers)
	if err != nil {
		return err
	}
	for n, e := range real {
		if _, ok := syms[n]; !ok {
			syms[n] = e.Export + "\t" + e.Namespace
		}
	}
	names := make([]string, 0, len(syms))
	for n := range syms {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		export, ns, _ := strings.Cut(syms[n], "\t")
		fmt.Fprintf(&b, "0x00000000\t%s\tvmlinux\t%s\t%s\n", n, export, ns)
	}
	for _, p := range []string{filepath.Join(devel, "Module.symvers"), filepath.Join(dir, "Module.symvers")} {
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// exportedNames are the symbols one export macro exports.
func exportedNames(macro, suffix, name string) []string {
	switch macro {
	case "EXPORT_STATIC_CALL":
		if strings.HasPrefix(suffix, "_TRAMP") {
			return []string{"__SCT__" + name}
		}
		return []string{"__SCK__" + name, "__SCT__" + name}
	case "EXPORT_TRACEPOINT_SYMBOL":
		return []string{"__tracepoint_" + name, "__traceiter_" + name, "__SCK__tp_func_" + name, "__SCT__tp_func_" + name}
	}
	return []string{name}
}

// writePreparedMeta builds a tiny module against the tree to learn its
// vermagic, and writes the entry's config, empty stock module directory
// and meta.json.
func writePreparedMeta(devel, dir, key string, env []string) error {
	rel, err := os.ReadFile(filepath.Join(devel, "include", "config", "kernel.release"))
	if err != nil {
		return err
	}
	release := strings.TrimSpace(string(rel))
	probe := filepath.Join(dir, ".probe")
	if err := os.MkdirAll(probe, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(probe)
	os.WriteFile(filepath.Join(probe, "Kbuild"), []byte("obj-m := probe.o\n"), 0o644)
	os.WriteFile(filepath.Join(probe, "probe.c"), []byte("#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n"), 0o644)
	cmd := exec.Command("make", "-s", "-C", devel, "M="+probe, "modules")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("probe module: %v\n%s", err, tail(out))
	}
	m, err := kmodule.ReadFile(filepath.Join(probe, "probe.ko"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "modules", "lib", "modules", release), 0o755); err != nil {
		return err
	}
	cfg, err := os.ReadFile(filepath.Join(devel, ".config"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config"), cfg, 0o644); err != nil {
		return err
	}
	cc, _ := exec.CommandContext(context.Background(), "gcc", "--version").Output()
	sum := sha256.Sum256(cfg)
	meta := kbuild.KernelMeta{Format: kbuild.CacheFormat, Key: key, Release: release, Arch: "x86_64",
		Vermagic: m.Vermagic(), Compiler: strings.SplitN(string(cc), "\n", 2)[0], ConfigSHA256: hex.EncodeToString(sum[:]),
		Created: time.Now().UTC().Format(time.RFC3339)}
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "meta.json"), append(b, '\n'), 0o644)
}

func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
