package dkms

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// TestReadConfV4L2Loopback reads Debian's real v4l2loopback dkms.conf, whose
// BUILD_EXCLUSIVE_KERNEL is set inside shell if-blocks that source the
// kernel's .config.
func TestReadConfV4L2Loopback(t *testing.T) {
	src := testenv.DKMSSource(t, "v4l2loopback")
	kdir := t.TempDir()
	v := Vars{KernelVer: "6.12.117-microsoft-standard-WSL2", KernelSourceDir: kdir, Arch: "x86_64", DKMSTree: "/t", SourceTree: "/s"}

	// With CONFIG_VIDEO_DEV=m the package builds.
	testenv.WriteFiles(t, kdir, map[string]string{".config": "CONFIG_VIDEO_DEV=m\n"})
	c, err := ReadConf(context.Background(), filepath.Join(src, "dkms.conf"), v)
	if err != nil {
		t.Fatal(err)
	}
	if c.PackageName != "v4l2loopback" || !strings.HasPrefix(c.PackageVersion, "0.") {
		t.Errorf("package %q %q", c.PackageName, c.PackageVersion)
	}
	if c.MakeCommand != "make KERNEL_DIR="+kdir+" all" {
		t.Errorf("make command %q ($kernel_source_dir not substituted?)", c.MakeCommand)
	}
	want := []Module{{BuiltName: "v4l2loopback", DestName: "v4l2loopback", DestLocation: "/extra", Strip: true}}
	if !reflect.DeepEqual(c.Modules, want) {
		t.Errorf("modules %+v", c.Modules)
	}
	if c.Excluded != "" {
		t.Errorf("excluded with VIDEO_DEV=m: %s", c.Excluded)
	}

	// Without it, dkms.conf sets BUILD_EXCLUSIVE_KERNEL to a string that
	// can never match: excluded, as with DKMS.
	testenv.WriteFiles(t, kdir, map[string]string{".config": "# CONFIG_VIDEO_DEV is not set\n"})
	c, err = ReadConf(context.Background(), filepath.Join(src, "dkms.conf"), v)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.Excluded, `BUILD_EXCLUSIVE_KERNEL="REQUIRES CONFIG_VIDEO_DEV" does not match`) ||
		!strings.Contains(c.ExcludedMessage(), "includes a BUILD_EXCLUSIVE directive which does not match this kernel/arch/config") {
		t.Errorf("not excluded without VIDEO_DEV: %q", c.ExcludedMessage())
	}
}

// TestReadConfDirectives: DKMS's reading of arrays and their defaults,
// MAKE_MATCH[] and PATCH_MATCH[] (bash regular expressions), STRIP[]
// inheritance, DEST_MODULE_NAME, the second evaluation of values (blanks
// collapse, \$ expands), the DKMS variables, CC=clang for clang kernels
// and the exclusions.
func TestReadConfDirectives(t *testing.T) {
	dir, kdir := t.TempDir(), t.TempDir()
	testenv.WriteFiles(t, kdir, map[string]string{".config": "CONFIG_ACPI=y\nCONFIG_I2C=m\nCONFIG_CC_IS_CLANG=y\n" +
		"CONFIG_CC_VERSION_TEXT=\"bash (fake) 1.0\"\n"})
	testenv.WriteFiles(t, dir, map[string]string{"dkms.conf": `PACKAGE_NAME="demo"
PACKAGE_VERSION="1.2"
MAKE[0]="make   -C $kernel_source_dir    M=\$PWD KVER=$kernelver ARCH_=$arch T=$dkms_tree S=$source_tree MOD=$module"
MAKE[1]="make new"
MAKE_MATCH[1]="^6\.[[:digit:]]+\."
MAKE[2]="make old"
MAKE_MATCH[2]="^5\."
BUILT_MODULE_NAME[0]="demo_core"
BUILT_MODULE_LOCATION[0]="src"
DEST_MODULE_LOCATION[0]="/kernel/drivers/misc"
STRIP[0]="no"
BUILT_MODULE_NAME[1]="demo_extra"
BUILT_MODULE_LOCATION[1]="src/extra/"
DEST_MODULE_NAME[1]="demo-extra"
DEST_MODULE_LOCATION[1]="/updates/dkms"
BUILT_MODULE_NAME[2]="demo_third"
DEST_MODULE_LOCATION[2]="/extra"
STRIP[2]="yes"
BUILD_EXCLUSIVE_ARCH="x86_64|aarch64"
BUILD_EXCLUSIVE_CONFIG="CONFIG_ACPI CONFIG_I2C !CONFIG_BROKEN"
BUILD_EXCLUSIVE_KERNEL_MIN="6.1"
PATCH[0]="fix.patch"
PATCH[1]="old.patch"
PATCH_MATCH[1]="^5\."
PATCH[2]="new.patch"
PATCH_MATCH[2]="^6\.12"
PRE_BUILD="configure.sh --with-kernel=$kernel_source_dir"
`})
	v := Vars{KernelVer: "6.12.117-microsoft-standard-WSL2", KernelSourceDir: kdir, Arch: "x86_64", DKMSTree: "/t", SourceTree: "/s"}
	c, err := ReadConf(context.Background(), filepath.Join(dir, "dkms.conf"), v)
	if err != nil {
		t.Fatal(err)
	}
	if c.MakeCommand != "make new CC=clang" {
		t.Errorf("make command %q: want MAKE[1] (MAKE_MATCH[1]) with CC=clang", c.MakeCommand)
	}
	want := []Module{
		{BuiltName: "demo_core", BuiltLocation: "src/", DestName: "demo_core", DestLocation: "/kernel/drivers/misc", Strip: false},
		{BuiltName: "demo_extra", BuiltLocation: "src/extra/", DestName: "demo-extra", DestLocation: "/updates/dkms", Strip: false},
		{BuiltName: "demo_third", DestName: "demo_third", DestLocation: "/extra", Strip: true},
	}
	if !reflect.DeepEqual(c.Modules, want) {
		t.Errorf("modules\n%+v\nwant\n%+v", c.Modules, want)
	}
	if !reflect.DeepEqual(c.Patches, []string{"fix.patch", "new.patch"}) {
		t.Errorf("patches %v", c.Patches)
	}
	if c.Excluded != "" || c.PreBuild != "configure.sh --with-kernel="+kdir || c.PreBuildCC != "bash" {
		t.Errorf("excluded %q, pre_build %q, CC %q", c.Excluded, c.PreBuild, c.PreBuildCC)
	}
	if len(c.Notes) != 1 || !strings.Contains(c.Notes[0], "BUILD_EXCLUSIVE_KERNEL_MIN") {
		t.Errorf("notes %q", c.Notes)
	}

	// Without MAKE_MATCH, MAKE[0]: the DKMS variables are substituted, the
	// blanks collapse and \$PWD expands when the value is read back (in
	// the directory of dkms.conf here).
	conf, _ := os.ReadFile(filepath.Join(dir, "dkms.conf"))
	noMatch := strings.Replace(string(conf), `MAKE_MATCH[1]="^6\.[[:digit:]]+\."`, "", 1)
	testenv.WriteFiles(t, dir, map[string]string{"dkms.conf": noMatch})
	c, err = ReadConf(context.Background(), filepath.Join(dir, "dkms.conf"), v)
	if err != nil {
		t.Fatal(err)
	}
	wantMake := "make -C " + kdir + " M=" + dir + " KVER=6.12.117-microsoft-standard-WSL2 ARCH_=x86_64 T=/t S=/s MOD=demo CC=clang"
	if c.MakeCommand != wantMake {
		t.Errorf("make command\n%q\nwant\n%q", c.MakeCommand, wantMake)
	}
}

// TestReadConfExclusions: BUILD_EXCLUSIVE_ARCH (a bash regular
// expression), _CONFIG (y or m required, ! for not set) and
// _KERNEL_MIN (DKMS's version order).
func TestReadConfExclusions(t *testing.T) {
	dir, kdir := t.TempDir(), t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{"dkms.conf": `PACKAGE_NAME="demo"
PACKAGE_VERSION="1.2"
DEST_MODULE_LOCATION[0]="/extra"
BUILD_EXCLUSIVE_ARCH="x86_64|aarch64"
BUILD_EXCLUSIVE_CONFIG="CONFIG_ACPI CONFIG_I2C !CONFIG_BROKEN"
BUILD_EXCLUSIVE_KERNEL_MIN="6.1"
`})
	for _, tc := range []struct {
		v    Vars
		conf string
		want string
	}{
		{Vars{KernelVer: "6.12.1", Arch: "aarch64"}, "CONFIG_ACPI=y\nCONFIG_I2C=m\n", ""},
		{Vars{KernelVer: "6.12.1", Arch: "riscv64"}, "CONFIG_ACPI=y\nCONFIG_I2C=y\n", `BUILD_EXCLUSIVE_ARCH="x86_64|aarch64" does not match the arch`},
		{Vars{KernelVer: "5.15.1", Arch: "x86_64"}, "CONFIG_ACPI=y\nCONFIG_I2C=y\n", `BUILD_EXCLUSIVE_KERNEL_MIN="6.1" is newer than 5.15.1`},
		{Vars{KernelVer: "6.12.1", Arch: "x86_64"}, "CONFIG_ACPI=y\nCONFIG_I2C=m\nCONFIG_BROKEN=y\n", "BUILD_EXCLUSIVE_CONFIG !CONFIG_BROKEN: CONFIG_BROKEN is set"},
		{Vars{KernelVer: "6.12.1", Arch: "x86_64"}, "CONFIG_ACPI=y\n# CONFIG_I2C is not set\n", "BUILD_EXCLUSIVE_CONFIG CONFIG_I2C: it is not set to y or m"},
	} {
		tc.v.KernelSourceDir = kdir
		testenv.WriteFiles(t, kdir, map[string]string{".config": tc.conf})
		c, err := ReadConf(context.Background(), filepath.Join(dir, "dkms.conf"), tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if (tc.want == "") != (c.Excluded == "") || !strings.Contains(c.Excluded, tc.want) {
			t.Errorf("%+v: excluded %q, want %q", tc.v, c.Excluded, tc.want)
		}
	}
}

// TestReadConfBad: what DKMS refuses as "Bad conf file", with its
// messages, and names that would leave the build directories.
func TestReadConfBad(t *testing.T) {
	v := Vars{KernelVer: "6.12.1", Arch: "x86_64", KernelSourceDir: t.TempDir()}
	for _, tc := range []struct{ conf, want string }{
		{`PACKAGE_NAME=x
PACKAGE_VERSION=1
BUILT_MODULE_NAME[0]=a`, "dkms.conf: Error! No 'DEST_MODULE_LOCATION' directive specified for record #0."},
		{`PACKAGE_NAME=x
PACKAGE_VERSION=1`, "dkms.conf: Error! No 'DEST_MODULE_LOCATION' directive specified."},
		{`PACKAGE_VERSION=1
DEST_MODULE_LOCATION=/extra`, "dkms.conf: Error! No 'PACKAGE_NAME' directive specified."},
		{`PACKAGE_NAME=x
PACKAGE_VERSION=1
BUILT_MODULE_NAME[0]=a.ko
DEST_MODULE_LOCATION[0]=/extra`, "'BUILT_MODULE_NAME' directive ends in '.o' or '.ko' in record #0."},
		{`PACKAGE_NAME=x
PACKAGE_VERSION=1
BUILT_MODULE_NAME[0]=a
BUILT_MODULE_NAME[1]=b
DEST_MODULE_LOCATION[0]=/extra
DEST_MODULE_LOCATION[1]=/lib`, "Directive 'DEST_MODULE_LOCATION' does not begin with '/kernel', '/updates', or '/extra' in record #1."},
		{`PACKAGE_NAME=x
PACKAGE_VERSION=1
BUILT_MODULE_NAME[0]=a
BUILT_MODULE_NAME[1]=b
DEST_MODULE_LOCATION[0]=/extra`, "No 'DEST_MODULE_LOCATION' directive specified for record #1."},
		{`PACKAGE_NAME=../x
PACKAGE_VERSION=1
DEST_MODULE_LOCATION=/extra`, `PACKAGE_NAME="../x" is not a plain name`},
		{`PACKAGE_NAME=x
PACKAGE_VERSION=1
DEST_MODULE_NAME=../../evil
DEST_MODULE_LOCATION=/extra`, `DEST_MODULE_NAME[0]="../../evil" must be a file name`},
		{`PACKAGE_NAME=x
PACKAGE_VERSION=1
BUILT_MODULE_LOCATION=../../..
DEST_MODULE_LOCATION=/extra`, `BUILT_MODULE_LOCATION[0]="../../../" must be relative to the build directory`},
	} {
		dir := t.TempDir()
		testenv.WriteFiles(t, dir, map[string]string{"dkms.conf": tc.conf + "\n"})
		_, err := ReadConf(context.Background(), filepath.Join(dir, "dkms.conf"), v)
		if !errors.Is(err, ErrBadConf) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\nerror %v\nwant %q", tc.conf, err, tc.want)
		}
	}
}

func TestVer(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"5.15.1", "6.1"}, {"6.1", "6.12.118-microsoft-standard-WSL2"}, {"6.9.12", "6.12"}, {"2.6.39", "3.9"},
	} {
		if !(Ver(tc.a) < Ver(tc.b)) {
			t.Errorf("Ver(%q)=%q not < Ver(%q)=%q", tc.a, Ver(tc.a), tc.b, Ver(tc.b))
		}
	}
	if got := Ver("6.12.118-rc1 x"); got != "006.012.118-rc001x" {
		t.Errorf("Ver = %q", got)
	}
}
