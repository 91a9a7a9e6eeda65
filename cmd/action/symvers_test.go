package main

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

func sortedFileLines(t *testing.T, s string) []string {
	t.Helper()
	l := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	sort.Strings(l)
	return l
}

// TestSymversCLI rebuilds the test kernel's Module.symvers from its
// bzImage and installed modules, to a file and to standard output.
func TestSymversCLI(t *testing.T) {
	k := buildtest.TestKernel(t)
	want, err := os.ReadFile(k.Symvers())
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "Module.symvers")
	code, _, stderr := runCLI("symvers", "--kernel", k.Image(), "--modules", k.ModulesRoot(), "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "bzImage gzip") || !strings.Contains(stderr, "vmlinux exports") {
		t.Errorf("summary: %s", stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sortedFileLines(t, string(got)), sortedFileLines(t, string(want))) {
		t.Fatalf("--out differs from %s", k.Symvers())
	}
	// The module directory itself, to standard output.
	code, stdout, stderr := runCLI("symvers", "--kernel", k.Image(), "--modules", k.ModulesDir())
	if code != 0 || !reflect.DeepEqual(sortedFileLines(t, stdout), sortedFileLines(t, string(want))) {
		t.Fatalf("stdout: exit %d, %s", code, stderr)
	}
	// The modules in a modules.vhdx, as WSL ships them (flat layout).
	vhdx := filepath.Join(t.TempDir(), "modules.vhdx")
	if code, _, stderr := runCLI("image", "--source", k.ModulesRoot(), "--kernel-release", k.Meta.Release, "--out", vhdx); code != 0 {
		t.Fatalf("image: exit %d: %s", code, stderr)
	}
	code, stdout, stderr = runCLI("symvers", "--kernel", k.Image(), "--modules", vhdx)
	if code != 0 || !reflect.DeepEqual(sortedFileLines(t, stdout), sortedFileLines(t, string(want))) {
		t.Fatalf("modules.vhdx: exit %d, %s", code, stderr)
	}
	// An existing --out is kept without --force.
	if code, _, stderr := runCLI("symvers", "--kernel", k.Image(), "--out", out); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("existing --out: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCLI("symvers", "--kernel", k.Image(), "--out", out, "--force"); code != 0 {
		t.Errorf("--force: exit %d: %s", code, stderr)
	}
}

func TestSymversCLIErrors(t *testing.T) {
	k := buildtest.TestKernel(t)
	root, rel := testenv.DebianModules(t)
	notKernel := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(notKernel, []byte("not a kernel\n"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"symvers"}, 2, "--kernel is required"},
		{[]string{"symvers", "--kernel", k.Image(), "extra"}, 2, "unexpected argument"},
		{[]string{"symvers", "--kernel", notKernel}, 1, notKernel},
		{[]string{"symvers", "--kernel", k.Image(), "--modules", root}, 1, "are for kernel " + rel + " (from their lib/modules directory name)"},
		{[]string{"symvers", "--kernel", k.Image(), "--modules", filepath.Join(root, "lib", "modules", rel)}, 1, "are for kernel " + rel + " (from their vermagic)"},
		{[]string{"symvers", "--kernel", k.Image(), "--modules", notKernel}, 1, notKernel},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}
