package buildtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
)

// ModuleList writes yml as the module list (wsl-modules.yml) of dir and
// loads it.
func ModuleList(t testing.TB, dir, yml string) *modlist.List {
	t.Helper()
	p := filepath.Join(dir, modlist.FileName)
	if err := os.WriteFile(p, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := modlist.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ModulesRepo makes a repository-like temporary directory holding the
// test modules (testdata/modules) at modules/ and copies of the extra
// directories (name in the repository → source directory), and returns
// its module list with content yml.
func ModulesRepo(t testing.TB, yml string, extra map[string]string) *modlist.List {
	t.Helper()
	dir := t.TempDir()
	if err := atomicfile.CopyTree(context.Background(), Testdata("modules"), filepath.Join(dir, "modules"), atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, from := range extra {
		if err := atomicfile.CopyTree(context.Background(), from, filepath.Join(dir, name), atomicfile.CopyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return ModuleList(t, dir, yml)
}
