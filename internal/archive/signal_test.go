package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperDestEnv names the destination for the extraction helper process.
const helperDestEnv = "WSLMOD_ARCHIVE_HELPER_DEST"

// TestExtractHelperProcess is not a test: run by TestSIGTERMMidExtract
// as a child, it unpacks stdin into $WSLMOD_ARCHIVE_HELPER_DEST the way
// cmd/action does (a context cancelled by SIGTERM and SIGINT).
func TestExtractHelperProcess(t *testing.T) {
	dest := os.Getenv(helperDestEnv)
	if dest == "" {
		t.Skip("helper process for TestSIGTERMMidExtract")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err := Extract(ctx, os.Stdin, dest, Options{Name: "stdin"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// TestSIGTERMMidExtract sends SIGTERM to a process unpacking a large
// entry that keeps arriving, and checks that it stops at once (not at the
// end of the entry) and leaves no temporary directory behind.
func TestSIGTERMMidExtract(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "out")
	cmd := exec.Command(os.Args[0], "-test.run=^TestExtractHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperDestEnv+"="+dest)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// One 8 GiB entry, fed without end until the pipe breaks.
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		tw := tar.NewWriter(stdin)
		if err := tw.WriteHeader(&tar.Header{Name: "top/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 8 << 30}); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte("kernel!\n"), 8<<10)
		for start := time.Now(); time.Since(start) < 60*time.Second; {
			if _, err := tw.Write(chunk); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	tmp := waitForTemp(t, base)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err = <-waitErr:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-waitErr
		t.Fatalf("still unpacking 10s after SIGTERM")
	}
	stdin.Close()
	<-feedDone
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(stderr.String(), "context canceled") {
		t.Fatalf("helper: %v (want exit 3 with a cancelled context); stderr:\n%s", err, stderr.String())
	}
	t.Logf("stopped %s after SIGTERM", time.Since(sent).Round(time.Millisecond))
	left, _ := os.ReadDir(base)
	for _, e := range left {
		t.Errorf("left behind after SIGTERM: %s (temp dir was %s)", e.Name(), filepath.Base(tmp))
	}
}

// waitForTemp waits until the helper's temporary directory holds part of
// the entry, and returns the directory.
func waitForTemp(t *testing.T, base string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		m, _ := filepath.Glob(filepath.Join(base, ".out.tmp-*"))
		if len(m) == 1 {
			if fi, err := os.Stat(filepath.Join(m[0], "top", "big")); err == nil && fi.Size() > 1<<20 {
				return m[0]
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the helper never started unpacking")
	return ""
}
