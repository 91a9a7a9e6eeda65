package jobserver

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestJobserverLimitsTotalJobs runs several real GNU makes, each with many
// independent jobs, through one jobserver and checks from the jobs' own
// start/end records that no more than Jobs ran at once in total, and that
// the makes did run jobs in parallel (so the jobserver is really used).
func TestJobserverLimitsTotalJobs(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	const jobs, makes, perMake = 3, 3, 8
	dir := t.TempDir()
	rec := filepath.Join(dir, "record")
	var mk strings.Builder
	var targets []string
	for i := 0; i < perMake; i++ {
		targets = append(targets, fmt.Sprintf("t%d", i))
	}
	fmt.Fprintf(&mk, "all: %s\n", strings.Join(targets, " "))
	for _, tg := range targets {
		// Each job appends "+ <ns>" and "- <ns>" records with a monotonic
		// clock from the same kernel (date +%%s%%N).
		fmt.Fprintf(&mk, "%s:\n\t@echo \"+ $$(date +%%s%%N)\" >> %s; sleep 0.2; echo \"- $$(date +%%s%%N)\" >> %s\n", tg, rec, rec)
	}
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	js, err := New(jobs)
	if err != nil {
		t.Fatal(err)
	}
	defer js.Close()
	var wg sync.WaitGroup
	errs := make([]error, makes)
	for i := 0; i < makes; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("make", "-C", dir, "all")
			cmd.Env = os.Environ()
			out := &strings.Builder{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := js.Run(context.Background(), cmd); err != nil {
				errs[i] = fmt.Errorf("%v: %s", err, out)
			} else if strings.Contains(out.String(), "jobserver unavailable") || strings.Contains(out.String(), "warning") {
				errs[i] = fmt.Errorf("make complained: %s", out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(rec)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type ev struct {
		t     int64
		delta int
	}
	var evs []ev
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		kind, ts, _ := strings.Cut(sc.Text(), " ")
		n, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			t.Fatalf("bad record %q", sc.Text())
		}
		d := 1
		if kind == "-" {
			d = -1
		}
		evs = append(evs, ev{n, d})
	}
	if len(evs) != 2*makes*perMake {
		t.Fatalf("%d records, want %d", len(evs), 2*makes*perMake)
	}
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].t != evs[j].t {
			return evs[i].t < evs[j].t
		}
		return evs[i].delta < evs[j].delta // ends before starts at equal times
	})
	cur, max := 0, 0
	for _, e := range evs {
		cur += e.delta
		if cur > max {
			max = cur
		}
	}
	t.Logf("max concurrent jobs %d (limit %d)", max, jobs)
	if max > jobs {
		t.Errorf("%d jobs ran at once, limit %d", max, jobs)
	}
	if max < 2 {
		t.Errorf("jobs never ran in parallel (max %d): the makes did not use the jobserver", max)
	}
	// All tokens are back.
	for i := 0; i < jobs; i++ {
		if err := js.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestJobserverAcquireCancel(t *testing.T) {
	js, err := New(1)
	if err != nil {
		t.Fatal(err)
	}
	defer js.Close()
	if err := js.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := js.Acquire(ctx); err == nil {
		t.Fatal("Acquire with no token and a cancelled context succeeded")
	}
}

// TestRunGroupStrayChild: a command that leaves a background child
// holding its output (through a pipe, as a MultiWriter log is) returns
// once the command exits and its output is drained for pipeDrain, with
// its output and exit status, and the stray child is killed.
func TestRunGroupStrayChild(t *testing.T) {
	old := pipeDrain
	pipeDrain = 300 * time.Millisecond
	defer func() { pipeDrain = old }()
	pidFile := filepath.Join(t.TempDir(), "pid")
	for _, c := range []struct {
		script string
		fail   bool
	}{{"sleep 600 & echo $! > " + pidFile + "; echo built", false}, {"sleep 600 & echo $! > " + pidFile + "; echo built; exit 3", true}} {
		var out bytes.Buffer
		cmd := exec.Command("sh", "-c", c.script)
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&out), io.MultiWriter(&out)
		start := time.Now()
		err := RunGroup(context.Background(), cmd)
		if (err != nil) != c.fail || !strings.Contains(out.String(), "built") {
			t.Errorf("%q: %v, output %q", c.script, err, out.String())
		}
		if el := time.Since(start); el > time.Minute {
			t.Errorf("%q: returned after %s", c.script, el)
		}
		b, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		// The child is killed (a zombie until init reaps it, then gone).
		gone := false
		for i := 0; i < 50 && !gone; i++ {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			gone = err != nil || strings.Contains(string(st), ") Z ")
			time.Sleep(20 * time.Millisecond)
		}
		if pid == 0 || !gone {
			t.Errorf("%q: stray child %d still runs", c.script, pid)
		}
	}
}
