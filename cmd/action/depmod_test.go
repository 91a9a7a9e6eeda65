package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// depmodTestTree links a few Debian modules into a new base directory with
// a modules.order listing them.
func depmodTestTree(t *testing.T) (base, rel string) {
	t.Helper()
	_, rel = testenv.DebianModules(t)
	base = t.TempDir()
	dst := filepath.Join(base, "lib", "modules", rel)
	mods := []string{"kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko", "kernel/fs/fat/msdos.ko"}
	testenv.CopyDebianModules(t, dst, mods...)
	if err := os.WriteFile(filepath.Join(dst, "modules.order"), []byte(strings.Join(mods, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return base, rel
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	env := &cliEnv{Stdout: &o, Stderr: &e, Getenv: func(string) string { return "" }}
	code = run(context.Background(), env, args)
	return code, o.String(), e.String()
}

func TestDepmodCLI(t *testing.T) {
	base, rel := depmodTestTree(t)
	dir := filepath.Join(base, "lib", "modules", rel)
	if code, _, stderr := runCLI("depmod", "-b", base, rel); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(dep, []byte("kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko\n")) {
		t.Errorf("modules.dep:\n%s", dep)
	}
	if code, _, _ := runCLI("depmod", "-b", base); code != 2 {
		t.Errorf("missing RELEASE: exit %d, want 2", code)
	}

	// --strict with a Module.symvers whose _printk CRC is wrong: exit 1
	// and the same warnings as kmod's depmod -e -E.
	good, err := os.ReadFile(testenv.DebianSymvers(t))
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "Module.symvers")
	badText := regexp.MustCompile(`(?m)^0x[0-9a-f]+\t_printk\t`).ReplaceAllString(string(good), "0x12345678\t_printk\t")
	badText = regexp.MustCompile(`(?m)^0x[0-9a-f]+\tkfree\t.*\n`).ReplaceAllString(badText, "")
	os.WriteFile(bad, []byte(badText), 0o644)
	os.Remove(filepath.Join(dir, "modules.dep"))
	code, _, stderr := runCLI("depmod", "-b", base, "-E", bad, "--strict", rel)
	if code != 1 {
		t.Fatalf("--strict: exit %d, want 1\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "modules.dep")); err == nil {
		t.Error("modules.dep written despite --strict failure")
	}
	conf := t.TempDir()
	kout, kerr := exec.Command(testenv.Tool(t, "depmod"), "-b", base, "-C", conf, "-e", "-E", bad, rel).CombinedOutput()
	if kerr != nil {
		t.Fatalf("kmod depmod: %v\n%s", kerr, kout)
	}
	warnings := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "depmod: WARNING: ") {
				out = append(out, l)
			}
		}
		return out
	}
	// kmod's lines, in kmod's order.
	got, want := warnings(stderr), warnings(string(kout))
	if len(want) < 3 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nkmod's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
