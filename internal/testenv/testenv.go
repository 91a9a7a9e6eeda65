// Package testenv locates the real test corpora (Debian module trees,
// kernel sources, DKMS packages, a built test kernel) and external
// checkers (qemu-img, e2fsck, depmod, ...) used by the tests.
//
// scripts/setup.sh prepares the corpora in CacheDir. When something is
// missing, tests are skipped on a developer machine but fail under CI
// (CI=true), so CI can never pass by skipping.
//
// It also holds the tests' generic helpers (running a tool, writing and
// digesting trees, parsing kmod's warnings), so that no test package
// keeps a copy of its own; helpers that need a built kernel or a module
// list are in internal/buildtest.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// CacheDir is where scripts/setup.sh keeps test corpora and cached test
// artefacts: $WSLMOD_TEST_CACHE, or /var/cache/wsl-modules-ci.
func CacheDir() string {
	if d := os.Getenv("WSLMOD_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/wsl-modules-ci"
}

// InCI reports whether the tests run under CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test, or fails it under CI.
func Missing(t testing.TB, format string, a ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required test input missing (run scripts/setup.sh): "+format, a...)
	}
	t.Skipf("test input missing (run scripts/setup.sh): "+format, a...)
}

// Tool returns the path of an external program, or skips/fails the test.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if _, serr := os.Stat(filepath.Join(d, name)); serr == nil {
				return filepath.Join(d, name)
			}
		}
		Missing(t, "program %s not found", name)
	}
	return p
}

// Long skips t in -short mode: it needs one of the real, expensive inputs
// (a test kernel, the Debian module tree, the kernel source). -short is
// the unit tests alone, which CI runs under the race detector.
func Long(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s (not in -short mode)", what)
	}
}

// DebianModules returns the root of the unpacked Debian linux-image package
// (the directory holding lib/modules/<release>) and its kernel release.
func DebianModules(t testing.TB) (root, release string) {
	t.Helper()
	Long(t, "the Debian module tree")
	root = filepath.Join(CacheDir(), "debian-image")
	ents, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil || len(ents) != 1 {
		Missing(t, "Debian module tree in %s", root)
	}
	return root, ents[0].Name()
}

// KernelSourceTarball returns Debian's linux-source-6.12 tarball.
func KernelSourceTarball(t testing.TB) string {
	t.Helper()
	Long(t, "the kernel source")
	p := "/usr/src/linux-source-6.12.tar.xz"
	if _, err := os.Stat(p); err != nil {
		Missing(t, "%s (apt-get install linux-source-6.12)", p)
	}
	return p
}

// DKMSSource returns the source directory of an installed Debian *-dkms
// package, e.g. DKMSSource(t, "v4l2loopback").
func DKMSSource(t testing.TB, name string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join("/usr/src", name+"-*", "dkms.conf"))
	if len(m) == 0 {
		Missing(t, "/usr/src/%s-*/dkms.conf (apt-get install %s-dkms)", name, name)
	}
	return filepath.Dir(m[len(m)-1])
}
