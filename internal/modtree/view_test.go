package modtree

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
)

// stageCopy writes a view to a new directory.
func stageCopy(t *testing.T, v *View) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "staged")
	if err := atomicfile.CopyFS(context.Background(), v, dst, atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	return dst
}

// The view of an unchanged tree is the tree without its index files:
// every other file, mode and link is carried, and modules.order is the
// same bytes.
func TestViewUnchangedTree(t *testing.T) {
	tree, dir := debianTree(t)
	v, err := tree.View(ViewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dst := stageCopy(t, v)
	var excl []string
	for _, f := range IndexFiles {
		excl = append(excl, "-x", f)
	}
	// The Debian package has no index files and no build/source links.
	out, err := exec.Command("diff", append(append([]string{"-r", "--no-dereference"}, excl...), dir, dst)...).CombinedOutput()
	if err != nil {
		t.Fatalf("diff -r: %v\n%.2000s", err, out)
	}
	for _, f := range IndexFiles {
		if _, err := os.Lstat(filepath.Join(dst, f)); err == nil {
			t.Errorf("%s carried over", f)
		}
	}
}

// Dropping modules prunes the directories they leave empty, adding one
// places it, generated files replace carried ones, and the top-level
// build/source links go.
func TestViewOverlayDropAddGenerated(t *testing.T) {
	tree, dir := debianTree(t)
	src := filepath.Join(t.TempDir(), "src")
	if out, err := exec.Command("cp", "-a", dir, src).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	os.Symlink("/usr/src/linux-headers-x", filepath.Join(src, "build"))
	os.Symlink("/usr/src/linux-x", filepath.Join(src, "source"))
	os.WriteFile(filepath.Join(src, "modules.dep"), []byte("stale\n"), 0o644)
	base, err := LoadDir(src, tree.Release)
	if err != nil {
		t.Fatal(err)
	}
	var drop []string
	for _, e := range base.Modules {
		if strings.HasPrefix(e.Path, "kernel/fs/fat/") {
			drop = append(drop, e.Path)
		}
	}
	if len(drop) < 2 {
		t.Fatalf("fat modules: %v", drop)
	}
	vfat := base.Entry("kernel/fs/fat/vfat.ko")
	data, err := os.ReadFile(filepath.Join(src, vfat.Path))
	if err != nil {
		t.Fatal(err)
	}
	added, err := NewEntry("extra/mine/vfat.ko", data, "mine")
	if err != nil {
		t.Fatal(err)
	}
	dropSet := map[string]bool{}
	for _, p := range drop {
		dropSet[p] = true
	}
	o := base.Overlay([]*Entry{added}, dropSet)
	o.Order = AppendOrder(base.Order, []string{added.Path}, dropSet)
	v, err := o.View(ViewOptions{Files: map[string][]byte{"modules.dep": []byte("fresh\n"), "record.json": []byte("{}")}})
	if err != nil {
		t.Fatal(err)
	}
	dst := stageCopy(t, v)
	for _, p := range []string{"kernel/fs/fat", "build", "source"} {
		if _, err := os.Lstat(filepath.Join(dst, p)); err == nil {
			t.Errorf("%s is in the staged tree", p)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "extra/mine/vfat.ko")); string(got) != string(data) {
		t.Error("added module: wrong bytes")
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "modules.dep")); string(got) != "fresh\n" {
		t.Errorf("modules.dep = %q, want the generated one", got)
	}
	order, _ := os.ReadFile(filepath.Join(dst, OrderFile))
	lines := ParseOrder(order)
	if slices.Contains(lines, "kernel/fs/fat/vfat.ko") || lines[len(lines)-1] != "extra/mine/vfat.ko" || len(lines) != len(base.Order)-len(drop)+1 {
		t.Errorf("modules.order: %d lines, last %q", len(lines), lines[len(lines)-1])
	}
	// The view is a proper fs.FS.
	if err := fstestCheck(v); err != nil {
		t.Error(err)
	}
}

// fstestCheck walks the view and reads every file, checking sizes.
func fstestCheck(v *View) error {
	return fs.WalkDir(v, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := fs.ReadFile(v, p)
		if err != nil {
			return err
		}
		if info, _ := d.Info(); int64(len(b)) != info.Size() {
			return &fs.PathError{Op: "size", Path: p, Err: fs.ErrInvalid}
		}
		return nil
	})
}

func TestAppendOrder(t *testing.T) {
	old := []string{"kernel/a.ko", "", "kernel/b.ko", "extra/x/x.ko", "kernel/c.ko"}
	got := AppendOrder(old, []string{"extra/z/z.ko", "extra/x/x.ko", "extra/y/y.ko", "extra/z/z.ko"}, map[string]bool{"kernel/b.ko": true})
	want := []string{"kernel/a.ko", "kernel/c.ko", "extra/x/x.ko", "extra/y/y.ko", "extra/z/z.ko"}
	if !slices.Equal(got, want) {
		t.Errorf("AppendOrder = %v, want %v", got, want)
	}
	if s := string(FormatOrder(want)); s != strings.Join(want, "\n")+"\n" {
		t.Errorf("FormatOrder = %q", s)
	}
	if got := ParseOrder(FormatOrder(want)); !slices.Equal(got, want) {
		t.Errorf("round trip: %v", got)
	}
}
