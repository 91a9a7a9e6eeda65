package devel_test

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/devel"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// linkTree makes a hard-linked copy of src (cheap: the test kernel's tree
// is ~46 MiB). Files of the copy must be replaced, never written in place.
func linkTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "build")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		default:
			return os.Link(p, to)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// replace swaps the file rel of a linked tree for new content (nil:
// removes it).
func replace(t *testing.T, dir, rel string, data []byte, mode fs.FileMode) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if data != nil {
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// elfExec is a minimal ELF64 executable header for machine m.
func elfExec(m elf.Machine) []byte {
	var b bytes.Buffer
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(m), Version: 1, Ehsize: 64, Phentsize: 56, Shentsize: 64}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	binary.Write(&b, binary.LittleEndian, h)
	b.Write(make([]byte, 64))
	return b.Bytes()
}

// TestVerifyTestKernelTree checks the real tree of the test kernel and
// cross-checks the host tools' machine and glibc needs with readelf.
func TestVerifyTestKernelTree(t *testing.T) {
	k := buildtest.TestKernel(t)
	readelf := testenv.Tool(t, "readelf")
	rep, err := devel.Verify(k.DevelDir(), devel.Options{Release: k.Meta.Release, Arch: "x86_64", Symvers: k.Symvers(),
		BuildPaths: []string{k.Dir, filepath.Dir(k.Dir)}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Release != k.Meta.Release || rep.Arch != "x86_64" || rep.SrcArch != "x86" {
		t.Errorf("report release %q arch %q srcarch %q", rep.Release, rep.Arch, rep.SrcArch)
	}
	if len(rep.Warnings) > 0 {
		t.Errorf("warnings: %v", rep.Warnings)
	}
	got := map[string]devel.HostTool{}
	for _, h := range rep.HostTools {
		got[h.Path] = h
	}
	// The test kernel has MODVERSIONS (genksyms) and OBJTOOL.
	for _, want := range []string{"scripts/basic/fixdep", "scripts/mod/modpost", "scripts/genksyms/genksyms", "tools/objtool/objtool"} {
		if _, ok := got[want]; !ok {
			t.Errorf("host tool %s not reported (have %v)", want, rep.HostTools)
		}
	}
	glibcRE := regexp.MustCompile(`Name: GLIBC_([0-9.]+)`)
	maxGlibc := ""
	for _, h := range rep.HostTools {
		out, err := exec.Command(readelf, "-h", "-V", filepath.Join(k.DevelDir(), h.Path)).Output()
		if err != nil {
			t.Fatalf("readelf %s: %v", h.Path, err)
		}
		if !strings.Contains(string(out), "Machine:                           Advanced Micro Devices X86-64") {
			t.Errorf("%s: readelf says another machine; we say %s", h.Path, h.Machine)
		}
		if h.Machine != "x86_64" {
			t.Errorf("%s: machine %s", h.Path, h.Machine)
		}
		want := ""
		for _, m := range glibcRE.FindAllStringSubmatch(string(out), -1) {
			if versionLess(want, m[1]) {
				want = m[1]
			}
		}
		if h.GLIBC != want {
			t.Errorf("%s: GLIBC %q, readelf -V says %q", h.Path, h.GLIBC, want)
		}
		if versionLess(maxGlibc, want) {
			maxGlibc = want
		}
	}
	if rep.GLIBC != maxGlibc || maxGlibc == "" {
		t.Errorf("report GLIBC %q, readelf's newest %q", rep.GLIBC, maxGlibc)
	}
	var files, dirs, links int
	var bytes int64
	filepath.WalkDir(k.DevelDir(), func(p string, d fs.DirEntry, err error) error {
		if p == k.DevelDir() {
			return nil
		}
		fi, _ := d.Info()
		switch {
		case d.IsDir():
			dirs++
		case d.Type()&fs.ModeSymlink != 0:
			links++
			target, _ := os.Readlink(p)
			bytes += int64(len(target))
		default:
			files++
			bytes += fi.Size()
		}
		return nil
	})
	if rep.Files != files || rep.Dirs != dirs || rep.Symlinks != links || rep.Bytes != bytes {
		t.Errorf("counts %d/%d/%d/%d, walk %d/%d/%d/%d", rep.Files, rep.Dirs, rep.Symlinks, rep.Bytes, files, dirs, links, bytes)
	}
	t.Logf("%d files, %d dirs, %d symlinks, %.1f MiB; host tools need glibc >= %s", rep.Files, rep.Dirs, rep.Symlinks, mib(rep.Bytes), rep.GLIBC)
}

func versionLess(a, b string) bool {
	if a == "" {
		return b != ""
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x = atoi(as[i])
		}
		if i < len(bs) {
			y = atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestVerifyBadTrees breaks a copy of the real tree in each way Verify
// must catch, and checks the problem names the file and the fault.
func TestVerifyBadTrees(t *testing.T) {
	k := buildtest.TestKernel(t)
	rel := k.Meta.Release
	src := k.DevelDir()
	cases := []struct {
		name   string
		break_ func(t *testing.T, dir string, o *devel.Options)
		// want are "path: message" substrings, each of which some problem
		// must contain.
		want []string
	}{
		{"wrong release", func(t *testing.T, dir string, o *devel.Options) { o.Release = "6.6.87.2-microsoft-standard-WSL2" },
			[]string{`include/config/kernel.release: release "` + rel + `", want "6.6.87.2-microsoft-standard-WSL2"`,
				`include/generated/utsrelease.h: no #define UTS_RELEASE "6.6.87.2-microsoft-standard-WSL2"`}},
		{"no Module.symvers", func(t *testing.T, dir string, o *devel.Options) { replace(t, dir, "Module.symvers", nil, 0) },
			[]string{"Module.symvers: missing"}},
		{"Module.symvers of another build", func(t *testing.T, dir string, o *devel.Options) {
			b := read(t, filepath.Join(dir, "Module.symvers"))
			i := bytes.IndexByte(b, '\t')
			b = append([]byte("0x00c0ffee"), b[i:]...)
			replace(t, dir, "Module.symvers", b, 0o644)
			o.Symvers = k.Symvers()
		}, []string{"Module.symvers: differs from the kernel's " + k.Symvers()}},
		{"corrupt Module.symvers", func(t *testing.T, dir string, o *devel.Options) {
			b := append(read(t, filepath.Join(dir, "Module.symvers")), "0x1234\tonly_two_fields\n"...)
			replace(t, dir, "Module.symvers", b, 0o644)
		}, []string{"Module.symvers: symvers: ", "Module.symvers:" + "", "want at least 4 tab-separated fields, got 2"}},
		{"no fixdep", func(t *testing.T, dir string, o *devel.Options) { replace(t, dir, "scripts/basic/fixdep", nil, 0) },
			[]string{"scripts/basic/fixdep: missing (make would try to build it inside the tree)"}},
		{"no genksyms", func(t *testing.T, dir string, o *devel.Options) { replace(t, dir, "scripts/genksyms/genksyms", nil, 0) },
			[]string{"scripts/genksyms/genksyms: missing"}},
		{"no objtool", func(t *testing.T, dir string, o *devel.Options) { replace(t, dir, "tools/objtool/objtool", nil, 0) },
			[]string{"tools/objtool/objtool: missing"}},
		{"modpost for aarch64", func(t *testing.T, dir string, o *devel.Options) {
			replace(t, dir, "scripts/mod/modpost", elfExec(elf.EM_AARCH64), 0o755)
		}, []string{"scripts/mod/modpost: built for aarch64, but the tree is for x86_64"}},
		{"modpost not executable", func(t *testing.T, dir string, o *devel.Options) {
			replace(t, dir, "scripts/mod/modpost", read(t, filepath.Join(dir, "scripts/mod/modpost")), 0o644)
		}, []string{"scripts/mod/modpost: host program is not executable"}},
		{"modpost a script", func(t *testing.T, dir string, o *devel.Options) {
			replace(t, dir, "scripts/mod/modpost", []byte("#!/bin/sh\nexit 0\n"), 0o755)
		}, []string{"scripts/mod/modpost: not an ELF program"}},
		{"x86_64 tree for an arm64 image", func(t *testing.T, dir string, o *devel.Options) { o.Arch = "arm64" },
			[]string{".config: is a x86_64 config, but the target is arm64", "scripts/basic/fixdep: built for x86_64, but the tree is for aarch64"}},
		{"unknown arch", func(t *testing.T, dir string, o *devel.Options) { o.Arch = "riscv64" },
			[]string{`unknown target architecture "riscv64"`}},
		{"O= wrapper Makefile", func(t *testing.T, dir string, o *devel.Options) {
			replace(t, dir, "Makefile", []byte("# Automatically generated by kbuild\ninclude /build/obj/../src/Makefile\n"), 0o644)
			o.BuildPaths = []string{"/build/src", "/build/obj/"}
		}, []string{"Makefile: not the kernel's top-level Makefile", "Makefile:2: refers to the build machine's /build/obj"}},
		{"build path in a generated header", func(t *testing.T, dir string, o *devel.Options) {
			b := append(read(t, filepath.Join(dir, "include/generated/autoconf.h")), "#define X \"/home/runner/work/obj/x\"\n"...)
			replace(t, dir, "include/generated/autoconf.h", b, 0o644)
			o.BuildPaths = []string{"/home/runner/work/obj"}
		}, []string{"include/generated/autoconf.h:"}},
		{"stale .config", func(t *testing.T, dir string, o *devel.Options) {
			b := bytes.Replace(read(t, filepath.Join(dir, ".config")), []byte("CONFIG_MODVERSIONS=y\n"), []byte("# CONFIG_MODVERSIONS is not set\n"), 1)
			replace(t, dir, ".config", b, 0o644)
		}, []string{".config: does not match include/config/auto.conf", `CONFIG_MODVERSIONS=y in auto.conf, "n" in .config`}},
		{"garbage .config", func(t *testing.T, dir string, o *devel.Options) {
			replace(t, dir, ".config", []byte("CONFIG_A=y\nthis is not kconfig\n"), 0o644)
		}, []string{`.config: line 2: not a CONFIG_ assignment`}},
		{"no auto.conf", func(t *testing.T, dir string, o *devel.Options) { replace(t, dir, "include/config/auto.conf", nil, 0) },
			[]string{"include/config/auto.conf: missing"}},
		{"no generated asm headers", func(t *testing.T, dir string, o *devel.Options) {
			os.RemoveAll(filepath.Join(dir, "arch/x86/include/generated"))
		}, []string{"arch/x86/include/generated: missing"}},
		{"no Makefile.modpost", func(t *testing.T, dir string, o *devel.Options) { replace(t, dir, "scripts/Makefile.modpost", nil, 0) },
			[]string{"scripts/Makefile.modpost: missing"}},
		{"absolute symlink", func(t *testing.T, dir string, o *devel.Options) {
			os.Symlink("/usr/src/linux/include/linux/module.h", filepath.Join(dir, "include/abs.h"))
		}, []string{"include/abs.h: absolute symlink to /usr/src/linux/include/linux/module.h"}},
		{"dangling symlink", func(t *testing.T, dir string, o *devel.Options) {
			os.Symlink("../nonexistent.h", filepath.Join(dir, "include/dangling.h"))
		}, []string{"include/dangling.h: symlink to ../nonexistent.h dangles"}},
		{"symlink out of the tree", func(t *testing.T, dir string, o *devel.Options) {
			os.Symlink("../../../../../../../../etc/passwd", filepath.Join(dir, "include/out.h"))
		}, []string{"include/out.h: symlink to ../../../../../../../../etc/passwd dangles, loops or leaves the tree"}},
		{"symlink loop", func(t *testing.T, dir string, o *devel.Options) {
			os.Symlink("b.h", filepath.Join(dir, "include/a.h"))
			os.Symlink("a.h", filepath.Join(dir, "include/b.h"))
		}, []string{"include/a.h: symlink to b.h dangles, loops", "include/b.h: symlink to a.h"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := linkTree(t, src)
			o := devel.Options{Release: rel}
			c.break_(t, dir, &o)
			rep, err := devel.Verify(dir, o)
			var ve *devel.Error
			if !errors.As(err, &ve) {
				t.Fatalf("Verify: %v, want *devel.Error", err)
			}
			if rep == nil || len(rep.Problems) != len(ve.Problems) {
				t.Fatalf("report %+v", rep)
			}
			for _, w := range c.want {
				found := false
				for _, p := range ve.Problems {
					found = found || strings.Contains(p.String(), w)
				}
				if !found {
					t.Errorf("no problem containing %q in:\n%v", w, err)
				}
				if testing.Verbose() && w == c.want[0] {
					t.Log(err)
				}
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error does not name the tree: %v", err)
			}
		})
	}
	// The untouched copy is fine: the cases above fail for their break.
	if _, err := devel.Verify(linkTree(t, src), devel.Options{Release: rel}); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyBadArguments(t *testing.T) {
	if _, err := devel.Verify(t.TempDir(), devel.Options{}); err == nil || !strings.Contains(err.Error(), "no kernel release") {
		t.Errorf("no release: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if r, err := devel.Verify(missing, devel.Options{Release: "x"}); err == nil || r != nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing dir: %v %v", r, err)
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := devel.Verify(f, devel.Options{Release: "x"}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("file: %v", err)
	}
	// An empty directory is a tree with everything missing.
	_, err := devel.Verify(t.TempDir(), devel.Options{Release: "x"})
	var ve *devel.Error
	if !errors.As(err, &ve) {
		t.Fatalf("empty dir: %v", err)
	}
	for _, w := range []string{"Makefile: missing", ".config: missing", "Module.symvers: missing", "scripts/basic/fixdep: missing"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("empty dir: no %q in %v", w, err)
		}
	}
}
