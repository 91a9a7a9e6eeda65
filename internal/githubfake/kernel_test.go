package githubfake_test

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
)

// TestKernelTarball checks the repacked fixture (the one the test kernel
// is built from, so a cold run repacks once) against the Debian source
// with the tar command: same entries, renamed top directory, extra file
// present.
func TestKernelTarball(t *testing.T) {
	p := buildtest.GitHubTarball(t)
	count := func(args ...string) (n int, names map[string]bool) {
		t.Helper()
		cmd := exec.Command("tar", args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		names = map[string]bool{}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			n++
			if strings.Count(strings.TrimSuffix(sc.Text(), "/"), "/") <= 2 {
				names[sc.Text()] = true
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("tar %v: %v", args, err)
		}
		return n, names
	}
	srcN, _ := count("-tJf", "/usr/src/linux-source-6.12.tar.xz")
	gotN, names := count("-tzf", p)
	if gotN != srcN+1 {
		t.Errorf("repacked tarball has %d entries, source has %d (+1 extra expected)", gotN, srcN)
	}
	top := githubfake.KernelTopDir(buildtest.Tag) + "/"
	for _, want := range []string{top, top + "Makefile", top + "Microsoft/config-wsl"} {
		if !names[want] {
			t.Errorf("repacked tarball lacks %s", want)
		}
	}
	for n := range names {
		if !strings.HasPrefix(n, top) {
			t.Errorf("entry %s outside %s", n, top)
			break
		}
	}
}
