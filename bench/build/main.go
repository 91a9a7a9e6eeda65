// Command build benchmarks out-of-tree module builds with the shared make
// jobserver against the cached test kernel (testdata/kernel/config-test on
// Debian's linux-source-6.12):
//
//   - shared: all modules at once, one jobserver of nproc slots; wall time
//     against the ideal (total CPU time of the builds / cores);
//   - sequential: one module after another, each with -j$(nproc) (a
//     jobserver of nproc slots used by one make);
//   - overhead: modbuild.Run with an empty module list on a kernel cache hit
//     (cache key, copying the kernel into the output, manifest).
//
// Each measurement runs -n times (default 3); the median is reported.
// Modules: fs/fat (fat, vfat, msdos), fs/isofs, fs/minix and fs/ext2 from
// the kernel source built out of tree, Debian's v4l2loopback DKMS package,
// and the two test modules of testdata/modules.
//
//	go run ./bench/build [-n 3] [-jobs N]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/archive"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

func main() {
	n := flag.Int("n", 3, "runs per measurement")
	jobs := flag.Int("jobs", runtime.NumCPU(), "jobs")
	cache := flag.String("cache", "/var/cache/wsl-modules-ci", "test cache dir")
	flag.Parse()
	if err := run(*n, *jobs, *cache); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n, jobs int, cache string) error {
	ctx := context.Background()
	root, _ := os.Getwd()
	b := &bench{ctx: ctx, jobs: jobs, tarball: "/usr/src/linux-source-6.12.tar.xz"}
	b.ko = kbuild.KernelOptions{Source: b.tarball, ConfigFile: filepath.Join(root, "testdata/kernel/config-test"),
		Arch: "x86_64", CacheDir: filepath.Join(cache, "kernel-cache"), Progress: progress.New(os.Stderr)}
	var err error
	b.k, err = kbuild.BuildKernel(ctx, b.ko)
	if err != nil {
		return err
	}
	src := filepath.Join(cache, "linux-source-6.12")
	if _, err := os.Stat(filepath.Join(src, "Makefile")); err != nil {
		if _, err := archive.ExtractFile(ctx, b.tarball, src, archive.Options{StripComponents: 1}); err != nil {
			return err
		}
	}
	v4l, _ := filepath.Glob("/usr/src/v4l2loopback-*")
	if len(v4l) == 0 {
		return fmt.Errorf("v4l2loopback-dkms is not installed")
	}
	repo, err := os.MkdirTemp("", "bench-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(repo)
	if b.list, err = prepareModules(repo, root, src, v4l[len(v4l)-1]); err != nil {
		return err
	}
	fmt.Printf("kernel %s (cache hit %v, entry %s); %d modules; %d jobs on %d cores\n",
		b.k.Meta.Release, b.k.CacheHit, progress.Bytes(b.k.Meta.Bytes), len(b.list.Modules), jobs, runtime.NumCPU())

	var shared, ideal, adjIdeal, seq, over []float64
	for i := 0; i < n; i++ {
		w, cpu, err := b.buildAll(b.list)
		if err != nil {
			return err
		}
		shared = append(shared, w.Seconds())
		ideal = append(ideal, cpu.Seconds()/float64(jobs))
		adj := cpu.Seconds() / max(b.lastAvail, 0.25)
		adjIdeal = append(adjIdeal, adj)
		fmt.Printf("run %d: shared jobserver wall %.1fs, CPU %.1fs, ideal %.1fs, ratio %.2f; other processes left %.2f cores: contention-adjusted ideal %.1fs, ratio %.2f\n",
			i+1, w.Seconds(), cpu.Seconds(), cpu.Seconds()/float64(jobs), w.Seconds()/(cpu.Seconds()/float64(jobs)), b.lastAvail, adj, w.Seconds()/adj)

		total, err := b.sequential()
		if err != nil {
			return err
		}
		seq = append(seq, total.Seconds())
		fmt.Printf("run %d: sequential -j%d wall %.1fs\n", i+1, jobs, total.Seconds())

		o, err := b.overhead()
		if err != nil {
			return err
		}
		over = append(over, o.Seconds())
		fmt.Printf("run %d: cache-hit overhead %.2fs\n", i+1, over[len(over)-1])
	}
	ms, mi, mq, mo := median(shared), median(ideal), median(seq), median(over)
	fmt.Printf("\nmedian of %d: shared %.1fs, ideal %.1fs => %.2fx ideal (target <= 1.15)\n", n, ms, mi, ms/mi)
	fmt.Printf("median of %d: contention-adjusted ideal %.1fs => %.2fx\n", n, median(adjIdeal), ms/median(adjIdeal))
	fmt.Printf("median of %d: sequential -j%d %.1fs => shared is %.2fx faster\n", n, jobs, mq, mq/ms)
	fmt.Printf("median of %d: kernel cache hit overhead (key, copy, manifest) %.2fs (target < 10s)\n", n, mo)
	return nil
}

// bench is the state of one benchmark run: the built test kernel and the
// module list of the benchmark repository.
type bench struct {
	ctx     context.Context
	jobs    int
	tarball string
	ko      kbuild.KernelOptions
	k       *kbuild.Kernel
	list    *modlist.List
	// lastAvail is the number of cores the last measured build had to
	// itself: the cores minus the CPU time other processes on the machine
	// used during it (from /proc/stat), per second of wall time.
	lastAvail float64
}

// benchList is the module list of the benchmark repository.
const benchList = `modules:
  - {name: fat, path: fat}
  - {name: isofs, path: isofs}
  - {name: minix, path: minix, make: ["CONFIG_MINIX_FS=m"]}
  - {name: ext2, path: ext2, make: ["CONFIG_EXT2_FS=m"]}
  - {name: v4l2loopback, path: v4l2loopback}
  - {name: provider, path: provider}
  - {name: consumer, path: consumer}
`

// prepareModules fills repo with the benchmark's modules (from the kernel
// source src, the v4l2loopback DKMS source v4l and root's testdata) and
// their module list, and returns the loaded list.
func prepareModules(repo, root, src, v4l string) (*modlist.List, error) {
	copies := map[string]string{
		"fat": filepath.Join(src, "fs/fat"), "isofs": filepath.Join(src, "fs/isofs"),
		"minix": filepath.Join(src, "fs/minix"), "ext2": filepath.Join(src, "fs/ext2"),
		"provider": filepath.Join(root, "testdata/modules/provider"),
		"consumer": filepath.Join(root, "testdata/modules/consumer"),
	}
	if err := buildtest.PrepareV4L2Loopback(v4l, filepath.Join(repo, "v4l2loopback")); err != nil {
		return nil, err
	}
	for name, from := range copies {
		if err := atomicfile.CopyTree(context.Background(), from, filepath.Join(repo, name), atomicfile.CopyOptions{}); err != nil {
			return nil, err
		}
	}
	lp := filepath.Join(repo, modlist.FileName)
	if err := os.WriteFile(lp, []byte(benchList), 0o644); err != nil {
		return nil, err
	}
	return modlist.Load(lp)
}

// buildAll builds the modules of l at once with the shared jobserver and
// returns the wall time and the builds' CPU time; it sets b.lastAvail.
func (b *bench) buildAll(l *modlist.List) (time.Duration, time.Duration, error) {
	work, err := os.MkdirTemp("", "bench-work-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(work)
	mdir := filepath.Join(work, "lib")
	before := childCPU()
	busy0 := machineBusy()
	start := time.Now()
	res, err := modbuild.BuildModules(b.ctx, modbuild.ModulesOptions{Kernel: b.k, List: l, WorkDir: filepath.Join(work, "w"),
		ModulesDir: mdir, LogDir: filepath.Join(work, "logs"), Jobs: b.jobs})
	wall := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	for _, r := range res {
		if r.Status != "ok" {
			return 0, 0, fmt.Errorf("module %s: %s: %s %v", r.Name, r.Status, r.Error, r.Tail)
		}
	}
	cpu := childCPU() - before
	others := machineBusy() - busy0 - cpu
	b.lastAvail = float64(b.jobs)
	if others > 0 {
		b.lastAvail = float64(b.jobs) - others.Seconds()/wall.Seconds()
	}
	return wall, cpu, nil
}

// sequential builds one module at a time, each with all jobs, and
// returns the total wall time. Dependencies (consumer after provider)
// hold because the list order is kept; consumer is built with provider
// alongside, in one list.
func (b *bench) sequential() (time.Duration, error) {
	list := b.list
	var total time.Duration
	for j := 0; j < len(list.Modules); j++ {
		one := *list
		one.Modules = list.Modules[j : j+1]
		if list.Modules[j].Name == "consumer" {
			continue
		}
		if list.Modules[j].Name == "provider" {
			one.Modules = nil
			for _, m := range list.Modules {
				if m.Name == "provider" || m.Name == "consumer" {
					one.Modules = append(one.Modules, m)
				}
			}
		}
		w, _, err := b.buildAll(&one)
		if err != nil {
			return 0, err
		}
		total += w
	}
	return total, nil
}

// overhead times modbuild.Run with an empty module list on a kernel cache
// hit.
func (b *bench) overhead() (time.Duration, error) {
	out, err := os.MkdirTemp("", "bench-out-")
	if err != nil {
		return 0, err
	}
	empty := *b.list
	empty.Modules = nil
	start := time.Now()
	if _, err := modbuild.Run(b.ctx, modbuild.Options{KernelSource: b.tarball, ConfigFile: b.ko.ConfigFile, List: &empty,
		Out: filepath.Join(out, "o"), CacheDir: b.ko.CacheDir, Jobs: b.jobs}); err != nil {
		return 0, err
	}
	d := time.Since(start)
	os.RemoveAll(out)
	return d, nil
}

// childCPU is the user+system time of all waited-for child processes.
func childCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(v []float64) float64 {
	s := append([]float64{}, v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// machineBusy is the CPU time all processes on the machine have used
// (user+nice+system+irq+softirq+steal from /proc/stat).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}
