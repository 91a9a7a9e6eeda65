package merge

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// smallBase is a module directory with a few real Debian modules, its
// modules.order and modules.builtin files.
func smallBase(t *testing.T) (dir, rel string) {
	t.Helper()
	_, rel = testenv.DebianModules(t)
	dir = filepath.Join(t.TempDir(), "base")
	testenv.CopyDebianModules(t, dir, "kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko", "kernel/fs/fat/msdos.ko", "modules.builtin", "modules.builtin.modinfo")
	os.WriteFile(filepath.Join(dir, "modules.order"), []byte("kernel/fs/fat/fat.ko\nkernel/fs/fat/vfat.ko\nkernel/fs/fat/msdos.ko\n"), 0o644)
	return dir, rel
}

// victim is a host directory the merge must never touch.
func victim(t *testing.T) (string, func()) {
	t.Helper()
	v := filepath.Join(t.TempDir(), "victim")
	os.MkdirAll(v, 0o755)
	os.WriteFile(filepath.Join(v, "modules.dep"), []byte("precious\n"), 0o644)
	os.WriteFile(filepath.Join(v, "secret.ko"), []byte("host file"), 0o644)
	return v, func() {
		t.Helper()
		ents, _ := os.ReadDir(v)
		b, _ := os.ReadFile(filepath.Join(v, "modules.dep"))
		if len(ents) != 2 || string(b) != "precious\n" {
			t.Errorf("the victim directory changed: %v, modules.dep %q", ents, b)
		}
	}
}

// A base image whose links point at host directories is refused, with no
// write on the host and no output: flat with extra -> /victim, nested
// with <release>/modules -> /victim, and a link that climbs out.
func TestMergeRefusesHostileLinks(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		make func(t *testing.T, dir, rel, victim string) string // returns the tree to image
		want string
	}{
		{"flat-extra", func(t *testing.T, dir, rel, v string) string {
			os.Symlink(v, filepath.Join(dir, "extra"))
			return dir
		}, "extra is a link to"},
		{"flat-climb", func(t *testing.T, dir, rel, v string) string {
			os.MkdirAll(filepath.Join(dir, "kernel", "x"), 0o755)
			os.Symlink("kernel", filepath.Join(dir, "k"))
			os.Symlink("../../../..", filepath.Join(dir, "kernel", "x", "up"))
			return dir
		}, "is a link to"},
		{"nested-modules", func(t *testing.T, dir, rel, v string) string {
			top := filepath.Join(t.TempDir(), "nested")
			os.MkdirAll(filepath.Join(top, rel), 0o755)
			os.Symlink(v, filepath.Join(top, rel, "modules"))
			return top
		}, "neither a module tree at its root"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, rel := smallBase(t)
			v, check := victim(t)
			img := vhdOf(t, c.make(t, dir, rel, v), "dynamic")
			pk := mkPack(t, "p", rel, map[string]string{"vfat.ko": filepath.Join(dir, "kernel/fs/fat/vfat.ko")})
			outDir := t.TempDir()
			_, err := Merge(ctx, Options{Base: img, Packs: []string{pk}, Out: filepath.Join(outDir, "out.vhdx")})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want it to contain %q", err, c.want)
			}
			check()
			if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
				t.Errorf("left %v", ents)
			}
		})
	}
}
