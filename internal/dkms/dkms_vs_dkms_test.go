package dkms

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// fakeKernel is a kernel source dir for directive tests: include/, a
// .config and a Makefile that records external-module builds (M=) and
// "builds" the modules listed in $(M)/mods.list.
const fakeKernelMakefile = `modules all:
	@echo "kernel-make M=$(M) KERNELRELEASE=$(KERNELRELEASE) goals=$(MAKECMDGOALS) CC=$(origin CC)" >> $(REC)
	@for m in $$(cat $(M)/mods.list); do mkdir -p $$(dirname $(M)/$$m); touch $(M)/$$m; done
clean:
	@echo "kernel-clean M=$(M)" >> $(REC)
`

// pkgMakefile records its invocation; "all" builds mods.list, "fail"
// fails.
const pkgMakefile = `all first second:
	@echo "pkg-make goals=$(MAKECMDGOALS) KERNELRELEASE=$(KERNELRELEASE) X=$(X) CC=$(origin CC) ver=$$(cat ver.txt)" >> $(REC)
	@for m in $$(cat mods.list); do mkdir -p $$(dirname $$m); touch $$m; done
fail:
	@echo "pkg-make goals=$(MAKECMDGOALS)" >> $(REC)
	@false
clean:
	@echo "pkg-clean" >> $(REC)
`

const recScript = `#!/bin/sh
echo "$(basename "$0") args=$* CC=${CC-unset} cwd=$(pwd)" >> "$REC"
`

var patchV2 = "--- a/ver.txt\n+++ b/ver.txt\n@@ -1 +1 @@\n-1\n+2\n"

// directiveCases are small packages, each exercising directives; the
// mods.list file says what the make "builds".
var directiveCases = map[string]map[string]string{
	"full": {"dkms.conf": `PACKAGE_NAME=full
PACKAGE_VERSION=1.0
MAKE[0]="make all X=zero"
MAKE[1]="make all X=\$kernelver"
MAKE_MATCH[1]="^6\.[[:digit:]]+\."
CLEAN="make clean"
BUILT_MODULE_NAME[0]=a
BUILT_MODULE_LOCATION[0]=src
DEST_MODULE_LOCATION[0]=/extra
STRIP[0]=no
BUILT_MODULE_NAME[1]=b
DEST_MODULE_NAME[1]=bee
DEST_MODULE_LOCATION[1]=/updates
PATCH[0]=v2.patch
PATCH_MATCH[0]="^6\.12"
PATCH[1]=never.patch
PATCH_MATCH[1]="^4\."
PRE_BUILD="pre.sh one   two"
POST_BUILD="post.sh"
`, "Makefile": pkgMakefile, "mods.list": "src/a.ko b.ko\n", "ver.txt": "1\n", "patches/v2.patch": patchV2,
		"pre.sh": recScript, "post.sh": recScript},
	"default-make": {"dkms.conf": "PACKAGE_NAME=defmake\nPACKAGE_VERSION=2\nDEST_MODULE_LOCATION=/kernel/drivers/misc\n",
		"mods.list": "defmake.ko\n", "x.c": ""},
	"excluded-config": {"dkms.conf": "PACKAGE_NAME=exc\nPACKAGE_VERSION=1\nBUILD_EXCLUSIVE_CONFIG=\"CONFIG_ACPI CONFIG_NOPE\"\nDEST_MODULE_LOCATION=/extra\n",
		"mods.list": "exc.ko\n", "x.c": ""},
	"excluded-kernel": {"dkms.conf": "PACKAGE_NAME=exk\nPACKAGE_VERSION=1\nBUILD_EXCLUSIVE_KERNEL=\"^5\\.\"\nDEST_MODULE_LOCATION=/extra\n",
		"mods.list": "exk.ko\n", "x.c": ""},
	"missing-module": {"dkms.conf": "PACKAGE_NAME=miss\nPACKAGE_VERSION=1\nMAKE=\"make all ; true\"\nBUILT_MODULE_NAME[0]=a\nBUILT_MODULE_NAME[1]=gone\nDEST_MODULE_LOCATION[0]=/extra\nDEST_MODULE_LOCATION[1]=/extra\n",
		"Makefile": pkgMakefile, "mods.list": "a.ko\n", "ver.txt": "1\n"},
	"make-fails": {"dkms.conf": "PACKAGE_NAME=mf\nPACKAGE_VERSION=1\nMAKE=\"make fail\"\nCLEAN=\"make clean\"\nDEST_MODULE_LOCATION=/extra\n",
		"Makefile": pkgMakefile, "mods.list": "", "ver.txt": "1\n"},
	"bad-conf": {"dkms.conf": "PACKAGE_NAME=bad\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME=bad\n", "x.c": ""},
	"missing-patch": {"dkms.conf": "PACKAGE_NAME=mp\nPACKAGE_VERSION=1\nPATCH[0]=nope.patch\nDEST_MODULE_LOCATION=/extra\n",
		"mods.list": "mp.ko\n", "x.c": ""},
	"multi-make": {"dkms.conf": "PACKAGE_NAME=multi\nPACKAGE_VERSION=1\nMAKE=\"make first && make second X=2\"\nCLEAN=\"make clean\"\nBUILT_MODULE_NAME=a\nDEST_MODULE_LOCATION=/extra\n",
		"Makefile": pkgMakefile, "mods.list": "a.ko\n", "ver.txt": "1\n"},
	"patch-fails": {"dkms.conf": "PACKAGE_NAME=pf\nPACKAGE_VERSION=1\nPATCH[0]=v2.patch\nDEST_MODULE_LOCATION=/extra\n",
		"mods.list": "pf.ko\n", "ver.txt": "3\n", "patches/v2.patch": patchV2},
	"excluded-arch": {"dkms.conf": `PACKAGE_NAME=exa
PACKAGE_VERSION=1
DEST_MODULE_LOCATION=/extra
if ! grep -q "^CONFIG_I2C=[ym]$" "$kernel_source_dir/.config" 2>/dev/null ; then
  echo "I2C disabled in this kernel, not building module." >&2
  BUILD_EXCLUSIVE_ARCH="^do_not_build$"
fi
`, "mods.list": "exa.ko\n", "x.c": ""},
	"pre-build-fails": {"dkms.conf": "PACKAGE_NAME=pbf\nPACKAGE_VERSION=1\nPRE_BUILD=\"pre.sh\"\nDEST_MODULE_LOCATION=/extra\n",
		"mods.list": "pbf.ko\n", "pre.sh": recScript + "exit 3\n"},
	"pre-build-not-executable": {"dkms.conf": "PACKAGE_NAME=pbx\nPACKAGE_VERSION=1\nPRE_BUILD=\"pre.txt\"\nDEST_MODULE_LOCATION=/extra\n",
		"mods.list": "pbx.ko\n", "pre.txt": recScript},
}

// TestDirectivesAsDKMS builds each directiveCases package with Debian's
// dkms build and with Build, in private trees against a fake kernel dir,
// and compares what happened: the outcome (DKMS's exit status: 0, 77
// excluded, 5/6 patch, 7 missing module, 8 bad conf, 10 make failed), the
// commands run with their arguments and environment as the fake Makefiles
// and scripts recorded them, and the modules built.
func TestDirectivesAsDKMS(t *testing.T) {
	dkmsBin := testenv.Tool(t, "dkms")
	base := t.TempDir()
	kdir := filepath.Join(base, "kernel")
	testenv.WriteFiles(t, kdir, map[string]string{"Makefile": fakeKernelMakefile, ".config": "CONFIG_ACPI=y\nCONFIG_CC_VERSION_TEXT=\"gcc (Debian 12.2.0-14) 12.2.0\"\n", "include/.keep": ""})
	const kver = "6.12.99-fake-WSL2"
	names := make([]string, 0, len(directiveCases))
	for n := range directiveCases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			pkg := filepath.Join(base, "pkg", name)
			testenv.WriteFiles(t, pkg, directiveCases[name])
			theirs := runDKMS(t, dkmsBin, pkg, kdir, kver, filepath.Join(base, "dkms", name))
			ours := runOurs(t, pkg, kdir, kver, filepath.Join(base, "ours", name))
			if theirs.status != ours.status {
				t.Fatalf("DKMS status %d, ours %d (%s)\nDKMS output:\n%s", theirs.status, ours.status, ours.err, theirs.out)
			}
			if theirs.status == 0 && len(theirs.rec) > 0 && strings.Contains(theirs.rec[len(theirs.rec)-1], "clean") {
				// DKMS cleans once more after the build (clean_build) and
				// removes the build directory; Build keeps it for installing.
				theirs.rec = theirs.rec[:len(theirs.rec)-1]
			}
			if strings.Join(theirs.rec, "\n") != strings.Join(ours.rec, "\n") {
				t.Errorf("commands differ\nDKMS:\n  %s\nours:\n  %s", strings.Join(theirs.rec, "\n  "), strings.Join(ours.rec, "\n  "))
			}
			if strings.Join(theirs.mods, " ") != strings.Join(ours.mods, " ") {
				t.Errorf("modules: DKMS %v, ours %v", theirs.mods, ours.mods)
			}
		})
	}
}

type outcome struct {
	status int      // DKMS's exit status or its equivalent
	rec    []string // recorded commands, root replaced by ROOT
	mods   []string // built modules as dest name (DKMS's module/ dir)
	out    string
	err    error
}

func runDKMS(t *testing.T, dkmsBin, pkg, kdir, kver, root string) outcome {
	conf, err := ReadConf(context.Background(), filepath.Join(pkg, "dkms.conf"), Vars{KernelVer: kver, Arch: "x86_64", KernelSourceDir: kdir})
	name, version := "bad", "1"
	if err == nil {
		name, version = conf.PackageName, conf.PackageVersion
	}
	src := filepath.Join(root, "source", name+"-"+version)
	for _, d := range []string{filepath.Join(root, "source"), filepath.Join(root, "tree")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", pkg+"/", src).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	rec := filepath.Join(root, "rec")
	cmd := exec.Command(dkmsBin, "build", "-m", name, "-v", version, "-k", kver, "-a", "x86_64", "--kernelsourcedir", kdir,
		"--dkmstree", filepath.Join(root, "tree"), "--sourcetree", filepath.Join(root, "source"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "REC="+rec)
	out, err := cmd.CombinedOutput()
	o := outcome{out: string(out)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		o.status = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("dkms: %v", err)
	}
	o.rec = readRec(t, rec, root)
	ents, _ := os.ReadDir(filepath.Join(root, "tree", name, version, kver, "x86_64", "module"))
	for _, e := range ents {
		o.mods = append(o.mods, e.Name())
	}
	return o
}

func runOurs(t *testing.T, pkg, kdir, kver, root string) outcome {
	rec := filepath.Join(root, "rec")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	v := Vars{KernelVer: kver, Arch: "x86_64", KernelSourceDir: kdir, DKMSTree: filepath.Join(root, "tree"), SourceTree: filepath.Join(root, "source")}
	var o outcome
	c, err := ReadConf(context.Background(), filepath.Join(pkg, "dkms.conf"), v)
	switch {
	case errors.Is(err, ErrBadConf):
		o.status = 8
	case err != nil:
		t.Fatal(err)
	case c.Excluded != "":
		o.status = 77
	default:
		var log strings.Builder
		res, err := Build(context.Background(), BuildOptions{Conf: c, Vars: v, Source: pkg, Env: append(Environ(), "REC="+rec), Log: &log})
		o.err = err
		o.status = dkmsStatus(err)
		if res != nil {
			for _, m := range res.Modules {
				o.mods = append(o.mods, m.DestName+".ko")
			}
			sort.Strings(o.mods)
		}
		o.out = log.String()
	}
	o.rec = readRec(t, rec, root)
	return o
}

// dkmsStatus maps Build's errors to dkms build's exit statuses.
func dkmsStatus(err error) int {
	if err == nil {
		return 0
	}
	for _, s := range []struct {
		prefix string
		status int
	}{{"dkms: Patch ", 5}, {"dkms: Application of patch", 6}, {"dkms: Build of ", 7}, {"dkms: Bad return status", 10}} {
		if strings.HasPrefix(err.Error(), s.prefix) {
			return s.status
		}
	}
	return -1
}

func readRec(t *testing.T, path, root string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := strings.ReplaceAll(string(b), root, "ROOT")
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}

func (o outcome) String() string { return fmt.Sprintf("%d %v %v", o.status, o.rec, o.mods) }
