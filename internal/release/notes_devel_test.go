package release

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

func develManifest(layout, headers, arch string) *manifest.Manifest {
	return &manifest.Manifest{Schema: 1, Layout: layout, Headers: headers,
		Kernel: manifest.Kernel{Tag: ktag, Release: "6.6.87.2-microsoft-standard-WSL2", Arch: arch,
			Compiler: "gcc (GCC) 13.2.0", Source: manifest.Source{Kind: "github-tarball", Repo: "microsoft/WSL2-Linux-Kernel"}},
		Image: &manifest.Image{File: VHDXFile, Size: 80 << 20, HeadersBytes: 48012309}}
}

// TestNotesDevelSection checks the section on building modules inside WSL
// appears exactly when the image carries the devel tree, and says where.
func TestNotesDevelSection(t *testing.T) {
	const heading = "## Building modules inside WSL"
	for _, c := range []struct {
		layout, headers, arch string
		want, not             []string
	}{
		{"flat", "devel", "x86_64", []string{heading, "at `build/` in the image", "built for x86_64",
			"mounts it at `/lib/modules/6.6.87.2-microsoft-standard-WSL2/build`",
			"make -C /lib/modules/$(uname -r)/build M=$PWD modules", "dkms build v4l2loopback/<version> -k $(uname -r)",
			"(" + progress.Bytes(48012309) + ")", "built with gcc (GCC) 13.2.0", "GLIBC_2.xx", "lost at `wsl --shutdown`"},
			[]string{"linux-headers"}},
		{"nested", "devel", "arm64", []string{heading, "at `6.6.87.2-microsoft-standard-WSL2/modules/build/` in the image",
			"UAPI headers in `6.6.87.2-microsoft-standard-WSL2/linux-headers/`", "built for aarch64", "build/Module.symvers"}, nil},
		{"nested", "uapi", "x86_64", nil, []string{heading, "M=$PWD"}},
		{"flat", "none", "x86_64", nil, []string{heading, "M=$PWD"}},
		{"flat", "", "x86_64", nil, []string{heading, "M=$PWD"}},
	} {
		m := develManifest(c.layout, c.headers, c.arch)
		notes := Notes(m, "wsl-modules-6.6.87.2", "abc  modules.vhdx\n")
		for _, w := range c.want {
			if !strings.Contains(notes, w) {
				t.Errorf("%s/%s/%s: notes lack %q:\n%s", c.layout, c.headers, c.arch, w, notes)
			}
		}
		for _, w := range c.not {
			if strings.Contains(notes, w) {
				t.Errorf("%s/%s/%s: notes have %q:\n%s", c.layout, c.headers, c.arch, w, notes)
			}
		}
		// The section sits before the checksums, which stay last.
		if i, j := strings.Index(notes, heading), strings.Index(notes, "## Checksums"); j < 0 || i > j {
			t.Errorf("%s/%s: section order: %d, checksums %d", c.layout, c.headers, i, j)
		}
	}
	// Without image info (dry run before the image), no size is claimed.
	m := develManifest("flat", "devel", "x86_64")
	m.Image = nil
	if n := Notes(m, "t", ""); !strings.Contains(n, "build tree at `build/`") {
		t.Errorf("no image: %s", n)
	}
}

// TestNotesDevelCommandBuilds runs the make command the notes give, with
// /lib/modules/$(uname -r)/build being the test kernel's devel tree, on
// the testdata provider module: it must produce the module.
func TestNotesDevelCommandBuilds(t *testing.T) {
	testenv.Tool(t, "make")
	testenv.Tool(t, "gcc")
	k := buildtest.TestKernel(t)
	m := develManifest("flat", "devel", "x86_64")
	m.Kernel.Release = k.Meta.Release
	notes := Notes(m, "t", "")
	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(notes)
	if block == nil {
		t.Fatalf("no sh block in the notes:\n%s", notes)
	}
	var makeLine string
	for _, l := range strings.Split(block[1], "\n") {
		if strings.HasPrefix(l, "make ") {
			makeLine = l
		}
	}
	if makeLine == "" {
		t.Fatalf("no make command in:\n%s", block[1])
	}
	src := filepath.Join(t.TempDir(), "provider")
	if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules", "provider"), src, atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	line := strings.ReplaceAll(makeLine, "/lib/modules/$(uname -r)/build", k.DevelDir())
	if line == makeLine {
		t.Fatalf("make command does not use /lib/modules/$(uname -r)/build: %s", makeLine)
	}
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "PWD="+src)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	if _, err := os.Stat(filepath.Join(src, "wslt_provider.ko")); err != nil {
		t.Fatalf("the notes' command built no module: %v", err)
	}
}
