// Package buildtest gives tests a real built kernel: Debian's
// linux-source-6.12 with the small config in testdata/kernel/config-test,
// built once into testenv.CacheDir()/kernel-cache (keyed by its inputs and
// guarded by a file lock, so concurrent test packages build it once) and
// reused afterwards.
//
// The source is the GitHub-shaped tarball the fake GitHub serves
// (GitHubTarball: the Debian source repacked under
// WSL2-Linux-Kernel-<Tag>/ with the test config at Microsoft/config-wsl),
// so the end-to-end test, which downloads it through the fake API, gets
// the same cache entry instead of building a second kernel.
package buildtest

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/archive"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// RepoRoot returns the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Testdata returns the path of a file under the repository's testdata/.
func Testdata(elem ...string) string {
	return filepath.Join(append([]string{RepoRoot(), "testdata"}, elem...)...)
}

// ConfigFile is the test kernel's full config.
func ConfigFile() string { return Testdata("kernel", "config-test") }

// Tag is the kernel tag the test kernel's source is published under in
// the fake GitHub.
const Tag = "linux-msft-wsl-6.12.117.1"

// GitHubTarball returns the test kernel's source tarball: Debian's
// linux-source-6.12 repacked as GitHub's tarball of Tag, with ConfigFile
// at Microsoft/config-wsl (cached; the first call takes about a minute).
func GitHubTarball(t testing.TB) string {
	t.Helper()
	testenv.Long(t, "the kernel source as a GitHub tarball")
	config, err := os.ReadFile(ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	return githubfake.KernelTarball(t, Tag, map[string][]byte{"Microsoft/config-wsl": config})
}

// CacheDir is the kernel cache the test kernel lives in.
func CacheDir() string { return filepath.Join(testenv.CacheDir(), "kernel-cache") }

var (
	mu     sync.Mutex
	cached *kbuild.Kernel
)

// Options returns the KernelOptions of the test kernel.
func Options(t testing.TB) kbuild.KernelOptions {
	return kbuild.KernelOptions{
		Source:   GitHubTarball(t),
		Arch:     "x86_64",
		CacheDir: CacheDir(),
		Progress: progress.New(testenv.LogWriter(t)),
	}
}

// TestKernel returns the test kernel: bzImage (k.Image()), the installed
// stock modules (k.ModulesDir()), Module.symvers, kernel-devel, headers
// and the release (k.Meta.Release). The first call on a machine builds it
// (a few minutes on 2 cores); later calls take it from the cache.
func TestKernel(t testing.TB) *kbuild.Kernel {
	t.Helper()
	testenv.Long(t, "the test kernel")
	mu.Lock()
	defer mu.Unlock()
	if cached != nil {
		return cached
	}
	k, err := kbuild.BuildKernel(context.Background(), Options(t))
	if err != nil {
		t.Fatalf("building the test kernel: %v", err)
	}
	if !strings.HasPrefix(k.Meta.Release, "6.12.") || !strings.HasSuffix(k.Meta.Release, "-microsoft-standard-WSL2") {
		t.Fatalf("test kernel release %q", k.Meta.Release)
	}
	cached = k
	return k
}

// SourceDir returns Debian's linux-source-6.12 unpacked (once, atomically)
// into testenv.CacheDir()/linux-source-6.12, for tests that need a source
// directory (config checks). Do not write into it.
func SourceDir(t testing.TB) string {
	t.Helper()
	testenv.Long(t, "the kernel source")
	dir := filepath.Join(testenv.CacheDir(), "linux-source-6.12")
	if _, err := os.Stat(filepath.Join(dir, "Makefile")); err == nil {
		return dir
	}
	tarball := testenv.KernelSourceTarball(t)
	unlock := testenv.Lock(t, dir+".lock")
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, "Makefile")); err == nil {
		return dir
	}
	if _, err := archive.ExtractFile(context.Background(), tarball, dir, archive.Options{StripComponents: 1, Force: true}); err != nil {
		t.Fatalf("unpacking %s: %v", tarball, err)
	}
	return dir
}

// PrepareV4L2Loopback copies Debian's v4l2loopback DKMS source (src, e.g.
// testenv.DKMSSource(t, "v4l2loopback")) to dest and adds, the DKMS way,
// the testdata patch that makes 0.12.7 build on 6.12 (strlcpy is gone
// since 6.8): patches/<file> and a PATCH[0] line in dkms.conf.
func PrepareV4L2Loopback(src, dest string) error {
	if err := atomicfile.CopyTree(context.Background(), src, dest, atomicfile.CopyOptions{}); err != nil {
		return err
	}
	if filepath.Base(src) != "v4l2loopback-0.12.7" {
		return nil // other versions need no patch (or a different one)
	}
	const patch = "v4l2loopback-0.12.7-strscpy.patch"
	b, err := os.ReadFile(Testdata("dkms", patch))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dest, "patches"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dest, "patches", patch), b, 0o644); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dest, "dkms.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("PATCH[0]=\"" + patch + "\"\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
