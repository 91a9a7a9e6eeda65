// Command depmod-bench times our depmod (the action binary's "depmod"
// subcommand) against kmod's depmod -b on the same module tree and
// machine, and reports the median wall time, the peak RSS, the ratios and
// the output sizes. It also checks that both outputs are byte-identical.
//
//	go run ./bench/depmod [-runs 3] [-tree BASEDIR -release RELEASE] [-action BINARY]
//
// The default tree is the Debian linux-image module tree prepared by
// scripts/setup.sh. Both tools run as separate processes, after one
// discarded warm-up run each, alternating, so the page cache is warm for
// both.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// outputs are the files both tools write.
var outputs = []string{
	"modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep",
	"modules.symbols", "modules.symbols.bin", "modules.builtin.bin", "modules.builtin.alias.bin", "modules.devname",
}

type sample struct {
	wall time.Duration
	rss  int64 // KiB
}

func main() {
	runs := flag.Int("runs", 3, "measured runs per tool (median reported)")
	tree := flag.String("tree", "", "base directory holding lib/modules/RELEASE (default: the Debian test tree)")
	release := flag.String("release", "", "kernel release (default: the only one under -tree)")
	action := flag.String("action", "", "wsl-modules-action binary (default: go build ./cmd/action)")
	flag.Parse()
	if err := run(*runs, *tree, *release, *action); err != nil {
		fmt.Fprintln(os.Stderr, "depmod-bench:", err)
		os.Exit(1)
	}
}

func run(runs int, tree, release, action string) error {
	if tree == "" {
		tree = filepath.Join(testenv.CacheDir(), "debian-image")
	}
	if release == "" {
		ents, err := os.ReadDir(filepath.Join(tree, "lib", "modules"))
		if err != nil || len(ents) != 1 {
			return fmt.Errorf("cannot pick the release under %s (use -release)", tree)
		}
		release = ents[0].Name()
	}
	work, err := os.MkdirTemp("", "depmod-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if action == "" {
		action = filepath.Join(work, "wsl-modules-action")
		cmd := exec.Command("go", "build", "-o", action, "./cmd/action")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/action (run from the repository root): %w", err)
		}
	}
	kmod, err := exec.LookPath("depmod")
	if err != nil {
		kmod = "/usr/sbin/depmod"
	}
	conf := filepath.Join(work, "conf")
	os.MkdirAll(conf, 0o755)
	src := filepath.Join(tree, "lib", "modules", release)
	refBase, ourBase := filepath.Join(work, "kmod"), filepath.Join(work, "ours")
	nmod := 0
	for _, b := range []string{refBase, ourBase} {
		if nmod, err = linkTree(src, filepath.Join(b, "lib", "modules", release)); err != nil {
			return err
		}
	}
	kmodArgs := []string{kmod, "-b", refBase, "-C", conf, release}
	ourArgs := []string{action, "depmod", "-b", ourBase, release}

	var ks, os_ []sample
	for i := 0; i <= runs; i++ {
		k, err := measure(kmodArgs)
		if err != nil {
			return err
		}
		o, err := measure(ourArgs)
		if err != nil {
			return err
		}
		if i > 0 { // the first round warms the page cache
			ks, os_ = append(ks, k), append(os_, o)
		}
	}
	km, om := median(ks), median(os_)

	var total int64
	identical := true
	for _, f := range outputs {
		a, err1 := os.ReadFile(filepath.Join(refBase, "lib", "modules", release, f))
		b, err2 := os.ReadFile(filepath.Join(ourBase, "lib", "modules", release, f))
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			identical = false
			fmt.Printf("DIFFERENT: %s\n", f)
		}
		total += int64(len(b))
	}
	fmt.Printf("tree: %s (%d modules), %d runs each after a warm-up, %d CPUs\n", src, nmod, runs, numCPU())
	fmt.Printf("%-22s %10s %12s\n", "", "wall (med)", "peak RSS")
	fmt.Printf("%-22s %10s %9d KiB\n", "kmod depmod -b", round(km.wall), maxRSS(ks))
	fmt.Printf("%-22s %10s %9d KiB\n", "ours (action depmod)", round(om.wall), maxRSS(os_))
	fmt.Printf("ratio ours/kmod: wall %.2fx (target <= 1.0x), peak RSS %.2fx (target <= 2x)\n",
		float64(om.wall)/float64(km.wall), float64(maxRSS(os_))/float64(maxRSS(ks)))
	fmt.Printf("all wall times: kmod %s; ours %s\n", walls(ks), walls(os_))
	fmt.Printf("outputs: %d files, %d bytes, byte-identical to kmod's: %v\n", len(outputs), total, identical)
	if !identical {
		return fmt.Errorf("outputs differ")
	}
	return nil
}

// measure runs argv and returns its wall time and peak RSS.
func measure(argv []string) (sample, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out.String())
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var rss int64
	if ru != nil {
		rss = ru.Maxrss
	}
	return sample{wall: wall, rss: rss}, nil
}

func median(s []sample) sample {
	c := append([]sample(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i].wall < c[j].wall })
	return c[len(c)/2]
}

func maxRSS(s []sample) int64 {
	var m int64
	for _, x := range s {
		m = max(m, x.rss)
	}
	return m
}

func walls(s []sample) string {
	var p []string
	for _, x := range s {
		p = append(p, round(x.wall).String())
	}
	return strings.Join(p, " ")
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\nprocessor")) + 1
}

// linkTree hard-links the module files and depmod inputs of src into dst
// and returns the number of modules.
func linkTree(src, dst string) (int, error) {
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if r == "build" || r == "source" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, r), 0o755)
		}
		name := d.Name()
		if !d.Type().IsRegular() || strings.HasPrefix(name, "modules.") &&
			name != "modules.order" && name != "modules.builtin" && name != "modules.builtin.modinfo" {
			return nil
		}
		if strings.Contains(name, ".ko") {
			n++
		}
		if err := os.Link(p, filepath.Join(dst, r)); err != nil {
			b, rerr := os.ReadFile(p)
			if rerr != nil {
				return rerr
			}
			return os.WriteFile(filepath.Join(dst, r), b, 0o644)
		}
		return nil
	})
	return n, err
}
