package symcrc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// preparedTree is a kernel tree prepared the stock-mode way: Debian's
// linux-source-6.12 (buildtest.SourceDir) with a config, and
// "make O=obj olddefconfig modules_prepare LOCALVERSION=" (no vmlinux).
type preparedTree struct {
	src, obj string
	makeArgs []string
}

// preparedFormat is part of the cache key of prepared trees.
const preparedFormat = 1

// archArgs returns the make arguments of a test architecture.
func archArgs(t testing.TB, arch string) []string {
	switch arch {
	case "x86_64":
		return []string{"ARCH=x86_64", "LOCALVERSION="}
	case "arm64":
		testenv.Tool(t, buildtest.CrossCompileArm64+"gcc")
		return []string{"ARCH=arm64", "CROSS_COMPILE=" + buildtest.CrossCompileArm64, "LOCALVERSION="}
	}
	t.Fatalf("no test arch %q", arch)
	return nil
}

// prepared returns the tree for config (the content of a .config) and
// arch, cached in testenv.CacheDir()/symcrc-prepared/<key> (key: source
// tarball, config, make arguments, compiler) under a file lock, so
// concurrent test processes prepare it once. The first call takes from
// half a minute (the test config) to a few minutes (a distribution-size
// config) on 2 cores. Tests must not write into it.
func prepared(t testing.TB, arch string, config []byte) preparedTree {
	t.Helper()
	src := buildtest.SourceDir(t)
	args := archArgs(t, arch)
	key := preparedKey(t, args, config)
	base := filepath.Join(testenv.CacheDir(), "symcrc-prepared")
	tree := preparedTree{src: src, obj: filepath.Join(base, key, "obj"), makeArgs: args}
	done := filepath.Join(base, key, "done")
	if _, err := os.Stat(done); err == nil {
		return tree
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	unlock := testenv.Lock(t, filepath.Join(base, key+".lock"))
	defer unlock()
	if _, err := os.Stat(done); err == nil {
		return tree
	}
	// A half-prepared tree from a killed run is redone from scratch.
	if err := os.RemoveAll(filepath.Join(base, key)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(tree.obj, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree.obj, ".config"), config, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	logf, err := os.Create(filepath.Join(base, key, "prepare.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	if err := tree.make(context.Background(), logf, "olddefconfig", "modules_prepare"); err != nil {
		t.Fatalf("preparing %s: %v (log: %s)", tree.obj, err, logf.Name())
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("prepared %s for %s in %s", tree.obj, arch, time.Since(start).Round(time.Second))
	return tree
}

// make runs make -j<cores> in the source tree with O=obj and the tree's
// arguments.
func (p preparedTree) make(ctx context.Context, log io.Writer, goals ...string) error {
	return p.makeJobs(ctx, log, runtime.NumCPU(), goals...)
}

func (p preparedTree) makeJobs(ctx context.Context, log io.Writer, jobs int, goals ...string) error {
	args := append([]string{"-C", p.src, "O=" + p.obj, fmt.Sprintf("-j%d", jobs)}, p.makeArgs...)
	cmd := exec.CommandContext(ctx, "make", append(args, goals...)...)
	cmd.Env = testMakeEnv()
	cmd.Stdout, cmd.Stderr = log, log
	return cmd.Run()
}

// testMakeEnv is the environment of the tests' own makes.
func testMakeEnv() []string {
	return append(safeenv.Environ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARCH", "CROSS_COMPILE", "LOCALVERSION",
		"KBUILD_OUTPUT", "KBUILD_EXTMOD", "O", "M", "LC_ALL"), "LC_ALL=C")
}

// preparedKey digests the inputs of a prepared tree.
func preparedKey(t testing.TB, args []string, config []byte) string {
	tarball, err := digest.File(testenv.KernelSourceTarball(t))
	if err != nil {
		t.Fatal(err)
	}
	cross := ""
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "CROSS_COMPILE="); ok {
			cross = v
		}
	}
	cc, err := exec.Command(cross+"gcc", "--version").Output()
	if err != nil {
		t.Fatalf("%sgcc --version: %v", cross, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "symcrc prepared tree %d\n%s\n%s\n%s\n", preparedFormat, tarball, strings.Join(args, " "),
		bytes.SplitN(cc, []byte("\n"), 2)[0])
	h.Write(config)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// options returns the proof options for the tree.
func (p preparedTree) options(t testing.TB, log io.Writer) Options {
	return Options{Src: p.src, Obj: p.obj, MakeArgs: p.makeArgs, Jobs: 2,
		CacheDir: filepath.Join(testenv.CacheDir(), "symcrc-index"), Log: log}
}

// release returns the tree's kernel release (include/config/kernel.release).
func (p preparedTree) release(t testing.TB) string {
	b, err := os.ReadFile(filepath.Join(p.obj, "include", "config", "kernel.release"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
