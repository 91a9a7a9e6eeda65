package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// TestPackMergeImageLsCLI creates packs of real Debian modules with
// 'pack create', lists one with 'pack ls', plans a merge with --dry-run
// (nothing written), merges, and checks that 'image ls' names each added
// module's pack.
func TestPackMergeImageLsCLI(t *testing.T) {
	root, rel := testenv.DebianModules(t)
	src := filepath.Join(root, "lib", "modules", rel)
	base := t.TempDir()
	dst := filepath.Join(base, "lib", "modules", rel)
	order := []string{"kernel/fs/fat/fat.ko", "kernel/fs/nls/nls_cp437.ko"}
	testenv.CopyDebianModules(t, dst, order...)
	os.WriteFile(filepath.Join(dst, "modules.order"), []byte(strings.Join(order, "\n")+"\n"), 0o644)

	dir := t.TempDir()
	vfat := filepath.Join(dir, "vfat.tar.zst")
	msdos := filepath.Join(dir, "msdos.tar.zst")
	for _, p := range []struct{ name, out, ko string }{{"vfat", vfat, "vfat.ko"}, {"msdos", msdos, "msdos.ko"}} {
		code, stdout, stderr := runCLI("pack", "create", "--name", p.name, "--version", "1.0", "--kernel-release", rel, "--out", p.out, filepath.Join(src, "kernel/fs/fat", p.ko))
		if code != 0 || !strings.Contains(stdout, "pack "+p.name+" 1.0 for "+rel+" (x86_64), 1 modules") {
			t.Fatalf("pack create: %d\n%s%s", code, stdout, stderr)
		}
	}
	code, stdout, stderr := runCLI("pack", "ls", vfat)
	if code != 0 || !strings.Contains(stdout, "vfat/vfat.ko  vfat ") || !strings.Contains(stdout, "kernel release: "+rel) {
		t.Fatalf("pack ls: %d\n%s%s", code, stdout, stderr)
	}

	out := filepath.Join(dir, "modules.vhdx")
	code, stdout, stderr = runCLI("merge", "--base", base, "--pack", vfat, "--pack", msdos, "--out", out, "--dry-run")
	if code != 0 || !strings.Contains(stdout, "extra/vfat/vfat.ko") || !strings.Contains(stdout, "[pack msdos]") || !strings.Contains(stdout, "dry run: nothing written") {
		t.Fatalf("merge --dry-run: %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("--dry-run wrote the output")
	}
	code, stdout, stderr = runCLI("merge", "--base", base, "--pack", vfat, "--pack", msdos, "--out", out)
	if code != 0 {
		t.Fatalf("merge: %d\n%s%s", code, stdout, stderr)
	}
	// image ls reads the image in place: nothing goes to TMPDIR.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	code, stdout, stderr = runCLI("image", "ls", out)
	if code != 0 {
		t.Fatalf("image ls: %d\n%s", code, stderr)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("image ls wrote %s to TMPDIR", ents[0].Name())
	}
	tagged := map[string]string{}
	for _, l := range strings.Split(stdout, "\n") {
		if i := strings.Index(l, "  [pack "); i >= 0 {
			f := strings.Fields(l[:i])
			tagged[f[len(f)-1]] = l[i+2:]
		}
	}
	want := map[string]string{"/extra/vfat/vfat.ko": "[pack vfat 1.0]", "/extra/msdos/msdos.ko": "[pack msdos 1.0]"}
	if len(tagged) != len(want) {
		t.Errorf("image ls tags %v, want %v", tagged, want)
	}
	for p, w := range want {
		if tagged[p] != w {
			t.Errorf("image ls: %s tagged %q, want %q", p, tagged[p], w)
		}
	}

	// Refusals: exit code 1 with the message; usage errors exit 2.
	other := filepath.Join(dir, "other.tar.zst")
	runCLI("pack", "create", "--name", "other", "--kernel-release", "6.1.0-99-amd64", "--out", other, filepath.Join(src, "kernel/fs/fat/vfat.ko"))
	out2 := filepath.Join(dir, "refused.vhdx")
	code, _, stderr = runCLI("merge", "--base", base, "--pack", other, "--out", out2)
	if code != 1 || !strings.Contains(stderr, "pack other: built for kernel release 6.1.0-99-amd64, base is "+rel) {
		t.Errorf("other release: %d %s", code, stderr)
	}
	if _, err := os.Stat(out2); err == nil {
		t.Error("refused merge wrote its output")
	}
	for _, args := range [][]string{{"merge", "--pack", vfat}, {"merge", "--base", base, "extra-arg", "--out", out2}, {"pack"}, {"pack", "create", "--name", "x"}, {"pack", "ls"}} {
		if code, _, stderr := runCLI(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, stderr)
		}
	}
}
