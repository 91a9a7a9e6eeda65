package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

func TestEscapeName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/a.ko":        "kernel/a.ko",
		"mod\u00e9.ko":       "mod\u00e9.ko",
		"a\nb":               `a\nb`,
		"\x1b[31mred":        `\x1b[31mred`,
		"back\\slash":        `back\\slash`,
		"tab\there\r":        `tab\there\r`,
		"del\x7f":            `del\x7f`,
		"c1\u0085":           `c1\u0085`,
		"bidi\u202eok.ko":    `bidi\u202eok.ko`,
		"line\u2028sep":      `line\u2028sep`,
		"bad\xffutf8":        `bad\xffutf8`,
		"":                   "",
		"nul\x00after-start": `nul\x00after-start`,
	} {
		if got := escapeName(in); got != want {
			t.Errorf("escapeName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestImageLsEscapes lists an image (made by mke2fs) whose names and
// symlink targets hold newlines and terminal escape sequences: every entry
// stays on one line and no control character reaches the output.
func TestImageLsEscapes(t *testing.T) {
	src := t.TempDir()
	for _, name := range []string{"evil\nname.ko", "\x1b[2Jclear.ko", "plain.ko"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("target\n/etc/passwd", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "names.img")
	out, err := exec.Command(testenv.Tool(t, "mke2fs"), "-q", "-t", "ext4", "-d", src, img, "4M").CombinedOutput()
	if err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	code, stdout, stderr := runCLI("image", "ls", img)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 5 { // 3 files, link, lost+found
		t.Fatalf("%d lines:\n%s", len(lines), stdout)
	}
	for _, want := range []string{`/evil\nname.ko`, `/\x1b[2Jclear.ko`, `/link -> target\n/etc/passwd`, "/plain.ko"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.ContainsAny(stdout, "\x1b\r") {
		t.Errorf("raw control characters in the output: %q", stdout)
	}
}

// goTool returns the go command that runs this test.
func goTool(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		testenv.Missing(t, "the go command")
	}
	return p
}

// TestImageExtractSIGTERM runs the real binary on an image holding a 2 GiB
// file, sends SIGTERM once extraction is under way (inside that one file)
// and checks that the process exits with an error and leaves neither the
// destination nor a temporary directory behind.
func TestImageExtractSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and a 2 GiB image")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "action")
	if out, err := exec.Command(goTool(t), "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	src := filepath.Join(dir, "src")
	md := filepath.Join(src, "lib/modules/6.6.0")
	if err := os.MkdirAll(md, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(md, "huge.bin")) // sparse: cheap to write
	if err == nil {
		err = f.Truncate(2 << 30)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "big.vhdx")
	if _, err := image.Build(context.Background(), image.Options{ModuleDir: filepath.Join(src, "lib", "modules", "6.6.0"), Release: "6.6.0"}, img, nil); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(src)
	outParent := filepath.Join(dir, "out")
	os.Mkdir(outParent, 0o755)
	cmd := exec.Command(bin, "image", "extract", img, filepath.Join(outParent, "x"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForGrowth(t, outParent, 64<<20)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Until it exits, watch that it stops writing the file: finishing the
	// 2 GiB file first (checking ctx only between entries) is the bug.
	var most int64
	guard := time.After(2 * time.Minute) // a liveness guard, not a timing check
wait:
	for {
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("extract finished successfully despite SIGTERM")
			}
			break wait
		case <-guard:
			cmd.Process.Kill()
			t.Fatal("extract did not exit after SIGTERM")
		case <-time.After(time.Millisecond):
			most = max(most, treeBytes(outParent))
		}
	}
	if most >= 1<<30 {
		t.Errorf("extract wrote %d bytes of the file after SIGTERM at 64 MiB", most)
	}
	if ents, _ := os.ReadDir(outParent); len(ents) != 0 {
		t.Errorf("left behind after SIGTERM: %s (stderr: %s)", ents[0].Name(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "context canceled") {
		t.Errorf("stderr: %s", stderr.String())
	}
}

// waitForGrowth waits until the files below dir hold at least n bytes.
func waitForGrowth(t *testing.T, dir string, n int64) {
	for i := 0; treeBytes(dir) < n; i++ {
		if i > 60_000 {
			t.Fatal("extraction never started")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// treeBytes returns the size of the regular files below dir.
func treeBytes(dir string) int64 {
	var total int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
		return nil
	})
	return total
}

// TestImageSource: --source takes a root or a module directory, by the
// module-dir rule of modtree (the same images either way), and a
// directory that is neither is refused by name with nothing written.
func TestImageSource(t *testing.T) {
	root := t.TempDir()
	md := filepath.Join(root, "lib", "modules", "6.6.0")
	testenv.WriteFile(t, filepath.Join(md, "kernel", "a.ko"), "module a")
	testenv.WriteFile(t, filepath.Join(md, "modules.order"), "kernel/a.ko\n")
	out := t.TempDir()
	var sums []string
	for i, src := range []string{root, md} {
		img := filepath.Join(out, fmt.Sprintf("m%d.vhdx", i))
		code, _, stderr := runCLI("image", "--source", src, "--kernel-release", "6.6.0", "--out", img, "--source-date-epoch", "1")
		if code != 0 {
			t.Fatalf("--source %s: exit %d: %s", src, code, stderr)
		}
		sums = append(sums, testenv.SHA256File(t, img))
	}
	if sums[0] != sums[1] {
		t.Errorf("root and module dir give different images: %v", sums)
	}
	plain := t.TempDir()
	testenv.WriteFile(t, filepath.Join(plain, "README"), "x")
	bad := filepath.Join(out, "bad.vhdx")
	code, _, stderr := runCLI("image", "--source", plain, "--kernel-release", "6.6.0", "--out", bad)
	if code == 0 || !strings.Contains(stderr, plain+": neither a root with lib/modules/<release> nor a module directory") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("an image was written for a bad source")
	}
}
