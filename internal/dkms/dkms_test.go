package dkms

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// TestDKMSConfV4L2Loopback reads Debian's real v4l2loopback dkms.conf, whose
// BUILD_EXCLUSIVE_KERNEL is set inside shell if-blocks that source the
// kernel's .config.
func TestDKMSConfV4L2Loopback(t *testing.T) {
	src := testenv.DKMSSource(t, "v4l2loopback")
	kdir := t.TempDir()
	v := Vars{KernelVer: "6.12.117-microsoft-standard-WSL2", KernelSourceDir: kdir, Arch: "x86_64"}

	// With CONFIG_VIDEO_DEV=m the package builds.
	if err := os.WriteFile(filepath.Join(kdir, ".config"), []byte("CONFIG_VIDEO_DEV=m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := ReadConf(context.Background(), src, v)
	if err != nil {
		t.Fatal(err)
	}
	if c.PackageName != "v4l2loopback" || !strings.HasPrefix(c.PackageVersion, "0.") {
		t.Errorf("package %q %q", c.PackageName, c.PackageVersion)
	}
	if c.Make != "make KERNEL_DIR="+kdir+" all" {
		t.Errorf("MAKE[0] = %q ($kernel_source_dir not substituted?)", c.Make)
	}
	ko, dest := c.Modules()
	if !reflect.DeepEqual(ko, []string{"v4l2loopback.ko"}) || !reflect.DeepEqual(dest, []string{"extra"}) {
		t.Errorf("modules %v %v", ko, dest)
	}
	if why, _ := c.Excluded(v, nil); why != "" {
		t.Errorf("excluded with VIDEO_DEV=m: %s", why)
	}

	// Without it, dkms.conf sets BUILD_EXCLUSIVE_KERNEL to a string that
	// can never match: excluded, as with DKMS.
	if err := os.WriteFile(filepath.Join(kdir, ".config"), []byte("# CONFIG_VIDEO_DEV is not set\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = ReadConf(context.Background(), src, v)
	if err != nil {
		t.Fatal(err)
	}
	if why, _ := c.Excluded(v, nil); !strings.Contains(why, "REQUIRES CONFIG_VIDEO_DEV") {
		t.Errorf("not excluded without VIDEO_DEV: %q", why)
	}
}

func TestDKMSConfArraysAndPatches(t *testing.T) {
	dir := t.TempDir()
	conf := `PACKAGE_NAME="demo"
PACKAGE_VERSION="1.2"
MAKE[0]="make -C $kernel_source_dir M=\$PWD/src KVER=$kernelver"
BUILT_MODULE_NAME[0]="demo_core"
BUILT_MODULE_LOCATION[0]="src/"
DEST_MODULE_LOCATION[0]="/kernel/drivers/misc"
BUILT_MODULE_NAME[1]="demo_extra"
BUILT_MODULE_LOCATION[1]="src/extra"
DEST_MODULE_LOCATION[1]="/updates/dkms"
BUILD_EXCLUSIVE_ARCH="x86_64|aarch64"
BUILD_EXCLUSIVE_KERNEL="^6\.(6|12)\."
PATCH[0]="fix.patch"
PATCH[1]="old.patch"
PATCH_MATCH[1]="^5\."
`
	os.WriteFile(filepath.Join(dir, "dkms.conf"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(dir, "hello.c"), []byte("int x = 1;\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "patches"), 0o755)
	os.WriteFile(filepath.Join(dir, "patches", "fix.patch"), []byte("--- a/hello.c\n+++ b/hello.c\n@@ -1 +1 @@\n-int x = 1;\n+int x = 2;\n"), 0o644)
	v := Vars{KernelVer: "6.12.117-microsoft-standard-WSL2", KernelSourceDir: "/kd", Arch: "x86_64"}
	c, err := ReadConf(context.Background(), dir, v)
	if err != nil {
		t.Fatal(err)
	}
	if c.Make != "make -C /kd M=$PWD/src KVER=6.12.117-microsoft-standard-WSL2" {
		t.Errorf("MAKE[0] = %q", c.Make)
	}
	ko, dest := c.Modules()
	if !reflect.DeepEqual(ko, []string{"src/demo_core.ko", "src/extra/demo_extra.ko"}) || !reflect.DeepEqual(dest, []string{"extra", "updates"}) {
		t.Errorf("modules %v %v", ko, dest)
	}
	if why, err := c.Excluded(v, nil); why != "" || err != nil {
		t.Errorf("excluded: %q %v", why, err)
	}
	for _, bad := range []Vars{{KernelVer: "6.1.0", Arch: "x86_64"}, {KernelVer: v.KernelVer, Arch: "riscv64"}} {
		if why, _ := c.Excluded(bad, nil); why == "" {
			t.Errorf("%+v not excluded", bad)
		}
	}
	log, _ := os.Create(filepath.Join(t.TempDir(), "log"))
	defer log.Close()
	applied, err := c.ApplyPatches(context.Background(), dir, v, log)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(applied, []string{"fix.patch"}) {
		t.Errorf("applied %v (old.patch has PATCH_MATCH ^5.)", applied)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "hello.c")); string(b) != "int x = 2;\n" {
		t.Errorf("patch not applied: %q", b)
	}

	os.WriteFile(filepath.Join(dir, "dkms.conf"), []byte("BUILT_MODULE_NAME[0]=\"../evil\"\n"), 0o644)
	if _, err := ReadConf(context.Background(), dir, v); err == nil || !strings.Contains(err.Error(), "dkms.conf: BUILT_MODULE_NAME[0]") {
		t.Errorf("bad name: %v", err)
	}
}
