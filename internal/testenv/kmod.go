package testenv

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// DebianSymvers returns the Module.symvers of the Debian kernel of
// DebianModules (from its linux-headers package), cached by
// scripts/setup.sh.
func DebianSymvers(t testing.TB) string {
	t.Helper()
	p := filepath.Join(CacheDir(), "debian-symvers", "Module.symvers")
	if _, err := os.Stat(p); err != nil {
		Missing(t, "%s", p)
	}
	return p
}

// KmodWarning matches one symbol warning of kmod's depmod -e -E: the
// module's path, the kind ("needs unknown symbol" or "disagrees about
// version of symbol") and the symbol.
var KmodWarning = regexp.MustCompile(`^depmod: WARNING: (\S+) (needs unknown symbol|disagrees about version of symbol) (\S+)$`)

// KmodProblems parses kmod's depmod -e -E warnings (out, every non-empty
// line a KmodWarning) into "path symbol" lists per kind, in kmod's order,
// with the paths relative to the module directory dir.
func KmodProblems(t testing.TB, out, dir string) (unresolved, crc []string) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		m := KmodWarning.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("unexpected kmod depmod output line %q", l)
		}
		rel, err := filepath.Rel(dir, m[1])
		if err != nil {
			t.Fatal(err)
		}
		if m[2] == "needs unknown symbol" {
			unresolved = append(unresolved, rel+" "+m[3])
		} else {
			crc = append(crc, rel+" "+m[3])
		}
	}
	return unresolved, crc
}

// CopyDebianModules copies files of the Debian module directory of
// DebianModules (paths relative to lib/modules/<release>, such as
// kernel/fs/fat/fat.ko or modules.builtin) to the same paths under dst,
// making directories as needed.
func CopyDebianModules(t testing.TB, dst string, paths ...string) {
	t.Helper()
	root, rel := DebianModules(t)
	src := filepath.Join(root, "lib", "modules", rel)
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			t.Fatal(err)
		}
		WriteFileMode(t, filepath.Join(dst, p), b, 0o644)
	}
}
