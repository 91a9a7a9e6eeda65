package buildtest

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// CrossCompileArm64 is the cross-compiler prefix the arm64 test kernel is
// built with on x86_64 (Debian's gcc-aarch64-linux-gnu).
const CrossCompileArm64 = "aarch64-linux-gnu-"

// ConfigFileArm64 is the arm64 test kernel's full config.
func ConfigFileArm64() string { return Testdata("kernel", "config-test-arm64") }

var (
	muArm64     sync.Mutex
	cachedArm64 *kbuild.Kernel
)

// OptionsArm64 returns the KernelOptions of the arm64 test kernel:
// Debian's linux-source-6.12 tarball with ConfigFileArm64, cross-compiled
// from amd64, in the same cache as TestKernel.
func OptionsArm64(t testing.TB) kbuild.KernelOptions {
	t.Helper()
	testenv.Tool(t, CrossCompileArm64+"gcc")
	return kbuild.KernelOptions{
		Source:     testenv.KernelSourceTarball(t),
		ConfigFile: ConfigFileArm64(),
		Arch:       "arm64",
		HostArch:   "amd64",
		CacheDir:   CacheDir(),
		Progress:   progress.New(testenv.LogWriter(t)),
	}
}

// TestKernelArm64 returns the arm64 test kernel, cross-built on x86_64:
// Image (k.Image()), the installed stock modules, Module.symvers,
// kernel-devel (host programs for this machine, k.DevelDir()) and
// kernel-devel-target (host programs for aarch64, k.TargetDevelDir()),
// headers and the release. The first call on a machine builds it (a few
// minutes on 2 cores, guarded by the cache entry's file lock); later calls
// take it from the cache. Without the cross compiler the test is skipped
// (failed under CI=true).
func TestKernelArm64(t testing.TB) *kbuild.Kernel {
	t.Helper()
	testenv.Long(t, "the arm64 test kernel")
	muArm64.Lock()
	defer muArm64.Unlock()
	if cachedArm64 != nil {
		return cachedArm64
	}
	k, err := kbuild.BuildKernel(context.Background(), OptionsArm64(t))
	if err != nil {
		t.Fatalf("building the arm64 test kernel: %v", err)
	}
	if !strings.HasPrefix(k.Meta.Release, "6.12.") || !strings.HasSuffix(k.Meta.Release, "-microsoft-standard-WSL2") {
		t.Fatalf("arm64 test kernel release %q", k.Meta.Release)
	}
	if k.Meta.Arch != "arm64" || k.Meta.ImageFile != "Image" {
		t.Fatalf("arm64 test kernel: arch %q, image %q", k.Meta.Arch, k.Meta.ImageFile)
	}
	cachedArm64 = k
	return k
}
