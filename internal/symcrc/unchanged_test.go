package symcrc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
)

// fileState is what a later build could notice of a file.
type fileState struct {
	mode  fs.FileMode
	size  int64
	mtime int64
	sum   [32]byte
}

// snapshot records every file (and directory) of a tree.
func snapshot(t *testing.T, root string) (files map[string]fileState, dirs map[string]bool) {
	t.Helper()
	files, dirs = map[string]fileState{}, map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs[rel] = true
			return nil
		}
		st := fileState{mode: info.Mode(), size: info.Size(), mtime: info.ModTime().UnixNano()}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			st.sum = sha256.Sum256(b)
		} else if target, err := os.Readlink(p); err == nil {
			st.sum = sha256.Sum256([]byte(target))
		}
		files[rel] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, dirs
}

// testModule is an external module whose build reads much of the tree
// (struct inode pulls in most of include/linux and the config).
const testModule = `#include <linux/module.h>
#include <linux/fs.h>
#include <linux/slab.h>

static int __init t_init(void)
{
	void *p = kmalloc(sizeof(struct inode), GFP_KERNEL);

	kfree(p);
	return 0;
}
static void __exit t_exit(void) { }
module_init(t_init);
module_exit(t_exit);
MODULE_LICENSE("GPL");
`

func buildModule(t *testing.T, tree preparedTree, dir string, goal string) {
	t.Helper()
	args := append([]string{"-C", tree.obj, "M=" + dir}, tree.makeArgs...)
	cmd := exec.Command("make", append(args, "KBUILD_MODPOST_WARN=1", goal)...)
	cmd.Env = testMakeEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make M=%s %s: %v\n%s", dir, goal, err, out)
	}
}

// TestProveLeavesTreeUnchanged: the proof writes nothing into the
// prepared tree (not even a directory, and crc32_le needs a header the
// full build generates), a module build after it has nothing to redo,
// and a clean rebuild gives the same bytes.
func TestProveLeavesTreeUnchanged(t *testing.T) {
	skipShort(t)
	k := buildtest.TestKernel(t)
	tree := prepared(t, "x86_64", readConfig(t, buildtest.ConfigFile()))
	mod := t.TempDir()
	if err := os.WriteFile(filepath.Join(mod, "t.c"), []byte(testModule), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mod, "Kbuild"), []byte("obj-m += t.o\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	buildModule(t, tree, mod, "modules")
	before, err := os.ReadFile(filepath.Join(mod, "t.ko"))
	if err != nil {
		t.Fatal(err)
	}
	modFiles, _ := snapshot(t, mod)
	files, dirs := snapshot(t, tree.obj)

	want := stockImports(t, k, "fat", "vfat")
	sampleVmlinux(t, k, want, 0, "memcpy", "memset", "iput", "crc32_le")
	rep, err := Prove(context.Background(), tree.options(t, nil), want)
	if err != nil {
		t.Fatal(err)
	}
	requireProven(t, rep, want)

	files2, dirs2 := snapshot(t, tree.obj)
	for p, st := range files {
		if st2, ok := files2[p]; !ok || st2 != st {
			t.Errorf("the proof changed %s (%+v → %+v, present %v)", p, st, st2, ok)
		}
	}
	for p := range files2 {
		if _, ok := files[p]; !ok {
			t.Errorf("the proof wrote %s into the tree", p)
		}
	}
	for d := range dirs {
		if !dirs2[d] {
			t.Errorf("the proof removed directory %s", d)
		}
	}
	for d := range dirs2 {
		if !dirs[d] {
			t.Errorf("the proof created directory %s in the tree", d)
		}
	}
	t.Logf("tree: %d files and %d directories unchanged", len(files), len(dirs))

	// Nothing to rebuild: no file of the module directory changes.
	buildModule(t, tree, mod, "modules")
	if modFiles2, _ := snapshot(t, mod); !reflect.DeepEqual(modFiles2, modFiles) {
		t.Error("a module build after the proof rebuilt something")
	}
	buildModule(t, tree, mod, "clean")
	buildModule(t, tree, mod, "modules")
	after, err := os.ReadFile(filepath.Join(mod, "t.ko"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the module built after the proof differs from the one built before")
	}
}
