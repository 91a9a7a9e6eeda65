package buildtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// StockFiles are stock inputs made from the test kernel the way Microsoft
// makes its own: the kernel is the bzImage as built, the modules image is
// the installed stock modules through `mke2fs -d` and `qemu-img convert
// -O vpc` (a dynamic VHD, like WSL's modules.vhd), flat layout.
type StockFiles struct {
	Kernel, Modules string
}

var (
	stockMu     sync.Mutex
	stockFiles  *StockFiles
	stockKernel *kbuild.Kernel
)

// Stock returns the stock files of the test kernel, made once per test
// kernel build in the test cache.
func Stock(t testing.TB) StockFiles {
	t.Helper()
	testenv.Long(t, "the stock files of the test kernel")
	k := TestKernel(t)
	stockMu.Lock()
	defer stockMu.Unlock()
	if stockFiles != nil {
		return *stockFiles
	}
	dir := filepath.Join(testenv.CacheDir(), "stock", k.Meta.Key[:16])
	vhd := filepath.Join(dir, "modules.vhd")
	if _, err := os.Stat(vhd); err != nil {
		if err := makeStockVHD(k.ModulesDir(), vhd); err != nil {
			t.Fatalf("stock modules.vhd: %v", err)
		}
	}
	stockFiles = &StockFiles{Kernel: k.Image(), Modules: vhd}
	return *stockFiles
}

// makeStockVHD writes a modules VHD of dir as Microsoft's scripts do, via
// a temporary file renamed into place.
func makeStockVHD(dir, vhd string) error {
	if err := os.MkdirAll(filepath.Dir(vhd), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(vhd), ".stock-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	raw := filepath.Join(tmp, "modules.img")
	steps := [][]string{
		{"mke2fs", "-q", "-t", "ext4", "-L", "", "-d", dir, raw, "256M"},
		{"qemu-img", "convert", "-f", "raw", "-O", "vpc", raw, filepath.Join(tmp, "modules.vhd")},
	}
	for _, s := range steps {
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000", "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %w\n%s", s, err, out)
		}
	}
	return atomicfile.CopyFile(filepath.Join(tmp, "modules.vhd"), vhd, 0o644)
}

// StockOptions returns the options that prepare the test kernel in stock
// mode: Debian's source with the test config, and Stock's files.
func StockOptions(t testing.TB) kbuild.StockOptions {
	t.Helper()
	f := Stock(t)
	return kbuild.StockOptions{KernelOptions: kbuild.KernelOptions{Source: SourceDir(t), ConfigFile: ConfigFile(),
		Arch: "x86_64", CacheDir: CacheDir(), Progress: progress.New(testenv.LogWriter(t))}, Kernel: f.Kernel, Modules: f.Modules}
}

// StockKernel returns the test kernel prepared in stock mode (cached like
// TestKernel; preparing it takes about a minute).
func StockKernel(t testing.TB) *kbuild.Kernel {
	t.Helper()
	testenv.Long(t, "the stock-mode test kernel")
	o := StockOptions(t)
	stockMu.Lock()
	defer stockMu.Unlock()
	if stockKernel != nil {
		return stockKernel
	}
	k, err := kbuild.PrepareStock(context.Background(), o)
	if err != nil {
		t.Fatalf("preparing the test kernel in stock mode: %v", err)
	}
	stockKernel = k
	return k
}
