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
	tarball := "/usr/src/linux-source-6.12.tar.xz"
	ko := kbuild.KernelOptions{Source: tarball, ConfigFile: filepath.Join(root, "testdata/kernel/config-test"),
		Arch: "x86_64", CacheDir: filepath.Join(cache, "kernel-cache"), Progress: progress.New(os.Stderr)}
	k, err := kbuild.BuildKernel(ctx, ko)
	if err != nil {
		return err
	}
	src := filepath.Join(cache, "linux-source-6.12")
	if _, err := os.Stat(filepath.Join(src, "Makefile")); err != nil {
		if _, err := archive.ExtractFile(ctx, tarball, src, archive.Options{StripComponents: 1}); err != nil {
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
	copies := map[string]string{
		"fat": filepath.Join(src, "fs/fat"), "isofs": filepath.Join(src, "fs/isofs"),
		"minix": filepath.Join(src, "fs/minix"), "ext2": filepath.Join(src, "fs/ext2"),
		"provider": filepath.Join(root, "testdata/modules/provider"),
		"consumer": filepath.Join(root, "testdata/modules/consumer"),
	}
	if err := buildtest.PrepareV4L2Loopback(v4l[len(v4l)-1], filepath.Join(repo, "v4l2loopback")); err != nil {
		return err
	}
	for name, from := range copies {
		if err := atomicfile.CopyTree(context.Background(), from, filepath.Join(repo, name), atomicfile.CopyOptions{}); err != nil {
			return err
		}
	}
	yml := `modules:
  - {name: fat, path: fat}
  - {name: isofs, path: isofs}
  - {name: minix, path: minix, make: ["CONFIG_MINIX_FS=m"]}
  - {name: ext2, path: ext2, make: ["CONFIG_EXT2_FS=m"]}
  - {name: v4l2loopback, path: v4l2loopback}
  - {name: provider, path: provider}
  - {name: consumer, path: consumer}
`
	lp := filepath.Join(repo, modlist.FileName)
	if err := os.WriteFile(lp, []byte(yml), 0o644); err != nil {
		return err
	}
	list, err := modlist.Load(lp)
	if err != nil {
		return err
	}
	fmt.Printf("kernel %s (cache hit %v, entry %s); %d modules; %d jobs on %d cores\n",
		k.Meta.Release, k.CacheHit, progress.Bytes(k.Meta.Bytes), len(list.Modules), jobs, runtime.NumCPU())

	// lastAvail is the number of cores the last measured build had to
	// itself: the cores minus the CPU time other processes on the machine
	// used during it (from /proc/stat), per second of wall time.
	var lastAvail float64
	buildAll := func(l *modlist.List) (time.Duration, time.Duration, error) {
		work, err := os.MkdirTemp("", "bench-work-")
		if err != nil {
			return 0, 0, err
		}
		defer os.RemoveAll(work)
		mdir := filepath.Join(work, "lib")
		before := childCPU()
		busy0 := machineBusy()
		start := time.Now()
		res, err := modbuild.BuildModules(ctx, modbuild.ModulesOptions{Kernel: k, List: l, WorkDir: filepath.Join(work, "w"),
			ModulesDir: mdir, LogDir: filepath.Join(work, "logs"), Jobs: jobs})
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
		lastAvail = float64(jobs)
		if others > 0 {
			lastAvail = float64(jobs) - others.Seconds()/wall.Seconds()
		}
		return wall, cpu, nil
	}

	var shared, ideal, adjIdeal, seq, over []float64
	for i := 0; i < n; i++ {
		w, cpu, err := buildAll(list)
		if err != nil {
			return err
		}
		shared = append(shared, w.Seconds())
		ideal = append(ideal, cpu.Seconds()/float64(jobs))
		adj := cpu.Seconds() / max(lastAvail, 0.25)
		adjIdeal = append(adjIdeal, adj)
		fmt.Printf("run %d: shared jobserver wall %.1fs, CPU %.1fs, ideal %.1fs, ratio %.2f; other processes left %.2f cores: contention-adjusted ideal %.1fs, ratio %.2f\n",
			i+1, w.Seconds(), cpu.Seconds(), cpu.Seconds()/float64(jobs), w.Seconds()/(cpu.Seconds()/float64(jobs)), lastAvail, adj, w.Seconds()/adj)

		// Sequential: one module at a time, each with all jobs. Dependencies
		// (consumer after provider) hold because the list order is kept;
		// consumer is built with provider alongside, in one list.
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
			w, _, err := buildAll(&one)
			if err != nil {
				return err
			}
			total += w
		}
		seq = append(seq, total.Seconds())
		fmt.Printf("run %d: sequential -j%d wall %.1fs\n", i+1, jobs, total.Seconds())

		out, err := os.MkdirTemp("", "bench-out-")
		if err != nil {
			return err
		}
		empty := *list
		empty.Modules = nil
		start := time.Now()
		if _, err := modbuild.Run(ctx, modbuild.Options{KernelSource: tarball, ConfigFile: ko.ConfigFile, List: &empty,
			Out: filepath.Join(out, "o"), CacheDir: ko.CacheDir, Jobs: jobs}); err != nil {
			return err
		}
		over = append(over, time.Since(start).Seconds())
		os.RemoveAll(out)
		fmt.Printf("run %d: cache-hit overhead %.2fs\n", i+1, over[len(over)-1])
	}
	ms, mi, mq, mo := median(shared), median(ideal), median(seq), median(over)
	fmt.Printf("\nmedian of %d: shared %.1fs, ideal %.1fs => %.2fx ideal (target <= 1.15)\n", n, ms, mi, ms/mi)
	fmt.Printf("median of %d: contention-adjusted ideal %.1fs => %.2fx\n", n, median(adjIdeal), ms/median(adjIdeal))
	fmt.Printf("median of %d: sequential -j%d %.1fs => shared is %.2fx faster\n", n, jobs, mq, mq/ms)
	fmt.Printf("median of %d: kernel cache hit overhead (key, copy, manifest) %.2fs (target < 10s)\n", n, mo)
	return nil
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
