package modtree_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// TestOpenReleaseRule checks the one release rule on directories.
func TestOpenReleaseRule(t *testing.T) {
	k := buildtest.TestKernel(t)
	rel := k.Meta.Release
	ctx := context.Background()
	open := func(src, given string) (*modtree.Tree, error) {
		tr, err := modtree.Open(ctx, src, modtree.OpenOptions{Release: given})
		if err == nil {
			tr.Close()
		}
		return tr, err
	}
	tr, err := open(k.ModulesRoot(), "")
	if err != nil || tr.Release != rel || tr.Source.ReleaseFrom != "lib/modules directory name" || tr.Source.Kind != modtree.KindDir {
		t.Fatalf("root: %+v %v", tr, err)
	}
	tr, err = open(k.ModulesDir(), "")
	if err != nil || tr.Release != rel || tr.Source.ReleaseFrom != "vermagic" || len(tr.Modules) == 0 {
		t.Fatalf("module dir: %+v %v", tr, err)
	}
	// The inputs depmod needs come with the tree.
	if tr.Order == nil || tr.Builtin == nil || tr.BuiltinModinfo == nil || tr.Files == nil {
		t.Errorf("module dir: order %d lines, builtin %v, builtin.modinfo %v", len(tr.Order), tr.Builtin != nil, tr.BuiltinModinfo != nil)
	}
	n := len(tr.Modules)
	if _, err = open(k.ModulesDir(), rel+"-other"); err == nil || !strings.Contains(err.Error(), "kernel release "+rel+"-other (from --kernel-release), but the modules' vermagic says \""+rel+"\" in ") {
		t.Errorf("release disagreeing with vermagic: %v", err)
	}
	two := t.TempDir()
	os.MkdirAll(filepath.Join(two, "lib", "modules", "a"), 0o755)
	os.MkdirAll(filepath.Join(two, "lib", "modules", "b"), 0o755)
	if _, err = open(two, ""); err == nil || !strings.Contains(err.Error(), "several kernel releases under lib/modules (a, b); choose one with --kernel-release") {
		t.Errorf("two releases: %v", err)
	}
	if _, err = open(two, "c"); err == nil || !strings.Contains(err.Error(), "no lib/modules/c (it has a, b)") {
		t.Errorf("missing release: %v", err)
	}
	// A tree of two kernels' modules is ambiguous.
	mixed := filepath.Join(t.TempDir(), "mixed")
	testenv.Run(t, "cp", "-a", k.ModulesDir(), mixed)
	root, drel := testenv.DebianModules(t)
	testenv.Run(t, "cp", filepath.Join(root, "lib", "modules", drel, "kernel", "fs", "fat", "vfat.ko"), filepath.Join(mixed, "kernel"))
	if _, err = open(mixed, ""); err == nil || !strings.Contains(err.Error(), "the modules' vermagic names several kernel releases") ||
		!strings.Contains(err.Error(), "kernel/vfat.ko") || !strings.Contains(err.Error(), drel) {
		t.Errorf("mixed: %v", err)
	}
	if _, err = open(t.TempDir(), ""); err == nil || !strings.Contains(err.Error(), "neither a root with lib/modules/<release> nor a module directory") {
		t.Errorf("empty dir: %v", err)
	}
	// A symlink to the module directory works; build/ and source/ are not
	// part of the module set.
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(k.ModulesDir(), link)
	withBuild := filepath.Join(t.TempDir(), "wb")
	testenv.Run(t, "cp", "-a", k.ModulesDir(), withBuild)
	os.MkdirAll(filepath.Join(withBuild, "build", "x"), 0o755)
	testenv.Run(t, "cp", filepath.Join(k.ModulesDir(), "kernel", "fs", "fat", "fat.ko"), filepath.Join(withBuild, "build", "x"))
	os.Symlink("/nonexistent", filepath.Join(withBuild, "source"))
	for _, src := range []string{link, withBuild} {
		if tr, err := open(src, ""); err != nil || len(tr.Modules) != n {
			t.Errorf("%s: %v modules, %v; want %d", src, len(tr.Modules), err, n)
		}
	}
}

// TestFindModuleDir checks the module-dir rule itself, which the image
// command uses too: a root's single or given lib/modules/<release>, a
// module directory as it is, and the errors naming what was found.
func TestFindModuleDir(t *testing.T) {
	root := t.TempDir()
	md := filepath.Join(root, "lib", "modules", "6.6.0-x")
	testenv.WriteFile(t, filepath.Join(md, "modules.order"), "kernel/a.ko\n")
	for _, c := range []struct{ src, rel, dir, gotRel string }{
		{root, "", md, "6.6.0-x"},
		{root, "6.6.0-x", md, "6.6.0-x"},
		{md, "", md, ""},
		{md, "6.6.0-x", md, "6.6.0-x"},
	} {
		dir, rel, err := modtree.FindModuleDir(c.src, c.rel)
		if err != nil || dir != c.dir || rel != c.gotRel {
			t.Errorf("FindModuleDir(%s, %q) = %s, %q, %v; want %s, %q", c.src, c.rel, dir, rel, err, c.dir, c.gotRel)
		}
	}
	os.MkdirAll(filepath.Join(root, "lib", "modules", "6.7.0-y"), 0o755)
	for rel, want := range map[string]string{
		"":      "several kernel releases under lib/modules (6.6.0-x, 6.7.0-y)",
		"6.8.0": "no lib/modules/6.8.0 (it has 6.6.0-x, 6.7.0-y)",
	} {
		if _, _, err := modtree.FindModuleDir(root, rel); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("FindModuleDir(root, %q): %v, want %q", rel, err, want)
		}
	}
	if _, _, err := modtree.FindModuleDir(filepath.Join(root, "missing"), ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
	plain := t.TempDir()
	testenv.WriteFile(t, filepath.Join(plain, "README"), "x")
	if _, _, err := modtree.FindModuleDir(plain, "6.6.0-x"); err == nil || !strings.Contains(err.Error(), plain+": neither a root with lib/modules/<release> nor a module directory") {
		t.Errorf("plain dir: %v", err)
	}
}
