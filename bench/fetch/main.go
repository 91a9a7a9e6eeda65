// Command fetch-bench compares `wsl-modules-action fetch` (download through
// the GitHub API with a 302 to the bytes host, gzip + tar unpacked while
// streaming, atomic) with the reference `tar -xzf` of the same tarball
// from local disk, on the repacked Debian linux-source-6.12 kernel tarball
// (the githubfake fixture). Each is run 3 times; the medians of wall time
// and peak RSS and their ratios are printed.
//
//	go build -o /tmp/wma ./cmd/action && go run ./bench/fetch -bin /tmp/wma -tarball FILE
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
)

const tag = "linux-msft-wsl-6.12.0.1"

type sample struct {
	wall time.Duration
	rss  int64 // KiB
}

func measure(cmd *exec.Cmd) (sample, error) {
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return sample{}, fmt.Errorf("%v: %w", cmd.Args, err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return sample{time.Since(start), ru.Maxrss}, nil
}

func median(s []sample) sample {
	w := append([]sample(nil), s...)
	sort.Slice(w, func(i, j int) bool { return w[i].wall < w[j].wall })
	r := append([]sample(nil), s...)
	sort.Slice(r, func(i, j int) bool { return r[i].rss < r[j].rss })
	return sample{w[len(w)/2].wall, r[len(r)/2].rss}
}

func main() {
	bin := flag.String("bin", "/tmp/wma", "wsl-modules-action binary")
	tarball := flag.String("tarball", "", "kernel tarball (githubfake fixture)")
	runs := flag.Int("runs", 3, "runs of each")
	flag.Parse()
	if *tarball == "" {
		fmt.Fprintln(os.Stderr, "fetch-bench: -tarball is required")
		os.Exit(2)
	}
	fake := githubfake.New(githubfake.Options{})
	defer fake.Close()
	fake.AddTags("microsoft/WSL2-Linux-Kernel", githubfake.Tag{Name: tag})
	fake.SetTarball("microsoft/WSL2-Linux-Kernel", tag, *tarball)
	work, err := os.MkdirTemp("", "fetch-bench-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(work)
	var ours, ref []sample
	for i := 0; i < *runs; i++ {
		dest := filepath.Join(work, "ours")
		cmd := exec.Command(*bin, "fetch", "--tag", tag, "--out", dest)
		cmd.Env = append(os.Environ(), "GITHUB_API_URL="+fake.APIURL(), "GITHUB_SERVER_URL="+fake.ServerURL(), "GITHUB_TOKEN=")
		s, err := measure(cmd)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ours = append(ours, s)
		os.RemoveAll(dest)

		dest = filepath.Join(work, "tar")
		os.MkdirAll(dest, 0o755)
		s, err = measure(exec.Command("tar", "-xzf", *tarball, "-C", dest, "--strip-components=1"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ref = append(ref, s)
		os.RemoveAll(dest)
		fmt.Fprintf(os.Stderr, "run %d: fetch %s %d KiB, tar %s %d KiB\n", i+1, ours[i].wall.Round(time.Millisecond), ours[i].rss, ref[i].wall.Round(time.Millisecond), ref[i].rss)
	}
	o, r := median(ours), median(ref)
	st, _ := os.Stat(*tarball)
	fmt.Printf("input: %s (%d bytes)\n", *tarball, st.Size())
	fmt.Printf("fetch (API + 302 + stream unpack): median wall %s, peak RSS %d KiB\n", o.wall.Round(time.Millisecond), o.rss)
	fmt.Printf("tar -xzf (local file):             median wall %s, peak RSS %d KiB\n", r.wall.Round(time.Millisecond), r.rss)
	fmt.Printf("ratio fetch/tar: wall %.2f, RSS %.2f\n", o.wall.Seconds()/r.wall.Seconds(), float64(o.rss)/float64(r.rss))
}
