// Command stock benchmarks stock mode against build mode: the same module
// list (Debian's v4l2loopback DKMS package, with the tests' 6.12 patch,
// and the two test modules) built
// both ways from a cold kernel cache (a new, empty directory), on
// Debian's linux-source-6.12:
//
//   - build mode: the whole kernel with the config (kbuild.BuildKernel),
//     then the modules;
//   - stock mode: modules_prepare only, Module.symvers rebuilt from the
//     stock kernel image and modules (kbuild.PrepareStock), then the
//     modules with the CRC proof.
//
// The stock files are the test kernel's (its bzImage and a VHD of its
// modules, made as Microsoft makes them), taken from the test cache: they
// are inputs, not part of the timed work. With -config set to Microsoft's
// real config (../shared/reference/configs/config-wsl-6.6.87.1) only
// stock mode runs (a full build takes over 100 minutes here), twice: cold
// and with the prepared tree cached. The test kernel was not built with
// that config, so the modules must fail (modpost finds symbols the
// config's code calls, such as __fentry__, that the test kernel does not
// export, and says so): the run also shows that stock mode refuses a
// kernel whose config differs from the prepared one. The module times
// there are of failing builds; the preparation times are the real ones.
//
//	go run ./bench/stock [-config FILE] [-jobs N]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

func main() {
	cache := flag.String("cache", "/var/cache/wsl-modules-ci", "test cache dir (for the stock files and the source)")
	config := flag.String("config", "testdata/kernel/config-test", "kernel config")
	jobs := flag.Int("jobs", runtime.NumCPU(), "parallel jobs")
	flag.Parse()
	if err := run(*cache, *config, *jobs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// result is one timed run.
type result struct {
	kernel, modules time.Duration
	ok, failed      int
}

func (r result) total() time.Duration { return r.kernel + r.modules }

func run(cache, config string, jobs int) error {
	ctx := context.Background()
	root, _ := os.Getwd()
	config, _ = filepath.Abs(config)
	src := filepath.Join(cache, "linux-source-6.12")
	stockKernel, stockModules, err := stockFiles(cache)
	if err != nil {
		return err
	}
	list, cleanup, err := moduleList(root)
	if err != nil {
		return err
	}
	defer cleanup()
	real := filepath.Base(config) != "config-test"
	fmt.Printf("source %s, config %s, %d jobs on %d cores, %d modules\n", src, config, jobs, runtime.NumCPU(), len(list.Modules))
	cold, err := os.MkdirTemp("", "bench-stock-cache-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cold)
	ko := kbuild.KernelOptions{Source: src, ConfigFile: config, Arch: "x86_64", CacheDir: cold, Jobs: jobs, Progress: progress.New(os.Stderr)}
	so := kbuild.StockOptions{KernelOptions: ko, Kernel: stockKernel, Modules: stockModules}
	stock := func(label string) (result, error) {
		return timed(ctx, label, list, jobs, src, func() (*kbuild.Kernel, error) { return kbuild.PrepareStock(ctx, so) })
	}
	s1, err := stock("stock, cold cache")
	if err != nil {
		return err
	}
	if real {
		s2, err := stock("stock, prepared tree cached")
		if err != nil {
			return err
		}
		fmt.Printf("\nreal config: stock mode cold %s (target <= 5 min), warm %s (target <= 60 s)\n",
			s1.total().Round(time.Second), s2.total().Round(time.Second))
		return nil
	}
	b, err := timed(ctx, "build, cold cache", list, jobs, "", func() (*kbuild.Kernel, error) { return kbuild.BuildKernel(ctx, ko) })
	if err != nil {
		return err
	}
	fmt.Printf("\ntest config: stock %s, build %s: stock/build = %.3f (target <= 0.25)\n",
		s1.total().Round(time.Second), b.total().Round(time.Second), s1.total().Seconds()/b.total().Seconds())
	return nil
}

// timed prepares the kernel with prep and builds the list against it.
func timed(ctx context.Context, label string, list *modlist.List, jobs int, src string, prep func() (*kbuild.Kernel, error)) (result, error) {
	var r result
	start := time.Now()
	k, err := prep()
	if err != nil {
		return r, err
	}
	r.kernel = time.Since(start)
	work, err := os.MkdirTemp("", "bench-stock-work-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(work)
	start = time.Now()
	res, err := modbuild.BuildModules(ctx, modbuild.ModulesOptions{Kernel: k, List: list, WorkDir: filepath.Join(work, "src"),
		ModulesDir: filepath.Join(work, "mods"), LogDir: filepath.Join(work, "logs"), Jobs: jobs, KernelSource: src,
		Progress: progress.New(os.Stderr)})
	if err != nil {
		return r, err
	}
	r.modules = time.Since(start)
	for _, m := range res {
		if m.Status == manifest.StatusOK {
			r.ok++
		} else {
			r.failed++
			fmt.Printf("  %s: %s: %.300s\n", label, m.Name, m.Error)
			for _, l := range m.Tail {
				fmt.Printf("    | %s\n", l)
			}
		}
	}
	fmt.Printf("%-30s kernel %8s  modules %8s  total %8s  (%d ok, %d failed)\n", label, r.kernel.Round(time.Second),
		r.modules.Round(time.Second), r.total().Round(time.Second), r.ok, r.failed)
	return r, nil
}

// stockFiles finds the test kernel's stock files in the test cache
// (internal/buildtest makes them: go test ./internal/kbuild -run Stock).
func stockFiles(cache string) (kernel, modules string, err error) {
	m, _ := filepath.Glob(filepath.Join(cache, "stock", "*", "modules.vhd"))
	if len(m) == 0 {
		return "", "", fmt.Errorf("no stock files in %s/stock (run go test ./internal/kbuild -run TestPrepareStock first)", cache)
	}
	key := filepath.Base(filepath.Dir(m[len(m)-1]))
	k, _ := filepath.Glob(filepath.Join(cache, "kernel-cache", "kernel", key+"*", "bzImage"))
	if len(k) == 0 {
		return "", "", fmt.Errorf("no test kernel entry %s* in %s/kernel-cache", key, cache)
	}
	return k[0], m[len(m)-1], nil
}

// moduleList writes a module list of Debian's v4l2loopback and the test
// modules.
func moduleList(root string) (*modlist.List, func(), error) {
	dir, err := os.MkdirTemp("", "bench-stock-list-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	v4l, _ := filepath.Glob("/usr/src/v4l2loopback-*")
	if len(v4l) == 0 {
		cleanup()
		return nil, nil, fmt.Errorf("v4l2loopback-dkms is not installed")
	}
	// 0.12.7 needs the tests' patch on 6.12, added the DKMS way.
	if err := buildtest.PrepareV4L2Loopback(v4l[len(v4l)-1], filepath.Join(dir, "v4l2loopback")); err != nil {
		cleanup()
		return nil, nil, err
	}
	for name, from := range map[string]string{"provider": filepath.Join(root, "testdata/modules/provider"),
		"consumer": filepath.Join(root, "testdata/modules/consumer")} {
		if err := atomicfile.CopyTree(context.Background(), from, filepath.Join(dir, name), atomicfile.CopyOptions{}); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	yml := "modules:\n  - {name: v4l2loopback, path: v4l2loopback}\n  - {name: provider, path: provider}\n  - {name: consumer, path: consumer}\n"
	p := filepath.Join(dir, modlist.FileName)
	if err := os.WriteFile(p, []byte(yml), 0o644); err != nil {
		cleanup()
		return nil, nil, err
	}
	l, err := modlist.Load(p)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return l, cleanup, nil
}
