package modbuild_test

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// demoPackage is a DKMS package in the canonical layout (MAKE[0] builds
// in ${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build, as Debian's
// acpi-call does) using PATCH_MATCH[], STRIP[], BUILT_MODULE_LOCATION[],
// DEST_MODULE_NAME[], DEST_MODULE_LOCATION[] and POST_BUILD.
var demoPackage = map[string]string{
	"dkms.conf": `PACKAGE_NAME="dkmsdemo"
PACKAGE_VERSION="1.0"
MAKE[0]="make -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build/src"
CLEAN="make -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build/src clean"
BUILT_MODULE_NAME[0]="demo_core"
BUILT_MODULE_LOCATION[0]="src"
DEST_MODULE_LOCATION[0]="/kernel/drivers/misc"
STRIP[0]="no"
BUILT_MODULE_NAME[1]="demo_extra"
BUILT_MODULE_LOCATION[1]="src/"
DEST_MODULE_NAME[1]="demo_renamed"
DEST_MODULE_LOCATION[1]="/updates/dkms"
STRIP[1]="yes"
PATCH[0]="value.patch"
PATCH_MATCH[0]="^6\."
PATCH[1]="never.patch"
PATCH_MATCH[1]="^2\."
POST_BUILD="post.sh"
`,
	"src/Kbuild": "obj-m := demo_core.o demo_extra.o\nccflags-y += -g\n",
	"src/demo_core.c": `#include <linux/module.h>
MODULE_INFO(demo_value, "1");
MODULE_LICENSE("GPL");
`,
	"src/demo_extra.c": "#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n",
	"patches/value.patch": `--- a/src/demo_core.c
+++ b/src/demo_core.c
@@ -1,3 +1,3 @@
 #include <linux/module.h>
-MODULE_INFO(demo_value, "1");
+MODULE_INFO(demo_value, "2");
 MODULE_LICENSE("GPL");
`,
	"patches/never.patch": "this is not a patch; PATCH_MATCH keeps it out\n",
	"post.sh":             "#!/bin/sh\ntouch post-build-ran\n",
}

// TestDKMSLayout builds DKMS packages through a module list against the
// test kernel: the canonical layout builds, with the patch its
// PATCH_MATCH selects applied to the build copy only, modules installed
// under their DEST_MODULE_NAME in extra/ or updates/, STRIP[0]=no
// honoured; an excluded package is skipped with DKMS's message; a missing
// BUILT_MODULE fails with DKMS's message.
func TestDKMSLayout(t *testing.T) {
	k := buildtest.TestKernel(t)
	dir := t.TempDir()
	testenv.WriteFiles(t, filepath.Join(dir, "pkgs", "dkmsdemo"), demoPackage)
	testenv.WriteFiles(t, filepath.Join(dir, "pkgs", "excluded"), map[string]string{
		"dkms.conf": "PACKAGE_NAME=excluded\nPACKAGE_VERSION=2\nBUILD_EXCLUSIVE_CONFIG=\"CONFIG_ACPI\"\nDEST_MODULE_LOCATION=/extra\n",
		"Kbuild":    "obj-m := excluded.o\n", "excluded.c": "#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n"})
	testenv.WriteFiles(t, filepath.Join(dir, "pkgs", "wrongname"), map[string]string{
		"dkms.conf": "PACKAGE_NAME=wrongname\nPACKAGE_VERSION=3\nBUILT_MODULE_NAME=nosuch\nDEST_MODULE_LOCATION=/extra\n",
		"Kbuild":    "obj-m := built.o\n", "built.c": "#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n"})
	yml := "modules:\n  - {name: dkmsdemo, path: pkgs/dkmsdemo}\n  - {name: excluded, path: pkgs/excluded}\n  - {name: wrongname, path: pkgs/wrongname}\n"
	l := buildtest.ModuleList(t, dir, yml)
	mdir := filepath.Join(dir, "lib", "modules", k.Meta.Release)
	work := filepath.Join(dir, "work")
	res, err := modbuild.BuildModules(context.Background(), modbuild.ModulesOptions{Kernel: k, List: l, WorkDir: work,
		ModulesDir: mdir, LogDir: filepath.Join(dir, "logs"), Progress: progress.New(testenv.LogWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*modbuild.ModuleResult{}
	for _, r := range res {
		byName[r.Name] = r
	}

	demo := byName["dkmsdemo"]
	if demo.Status != manifest.StatusOK || demo.Version != "1.0" ||
		strings.Join(demo.Files, " ") != "extra/dkmsdemo/demo_core.ko updates/dkmsdemo/demo_renamed.ko" {
		log, _ := os.ReadFile(demo.LogPath)
		t.Fatalf("dkmsdemo: %s %q %v %s\n%s", demo.Status, demo.Version, demo.Files, demo.Error, log)
	}
	modinfo := testenv.Tool(t, "modinfo")
	if v := toolOut(t, modinfo, "-F", "demo_value", filepath.Join(mdir, "extra/dkmsdemo/demo_core.ko")); v != "2" {
		t.Errorf("demo_value %q: value.patch not applied", v)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "pkgs", "dkmsdemo", "src", "demo_core.c")); !strings.Contains(string(b), `"1"`) {
		t.Errorf("the patch reached the user's source")
	}
	if !hasDebugInfo(t, filepath.Join(mdir, "extra/dkmsdemo/demo_core.ko")) {
		t.Errorf("demo_core.ko (STRIP[0]=no) was stripped")
	}
	if hasDebugInfo(t, filepath.Join(mdir, "updates/dkmsdemo/demo_renamed.ko")) {
		t.Errorf("demo_renamed.ko (STRIP[1]=yes) kept its debug info")
	}
	build := filepath.Join(work, ".dkms", "dkmsdemo", "tree", "dkmsdemo", "1.0", "build")
	if _, err := os.Stat(filepath.Join(build, "post-build-ran")); err != nil {
		t.Errorf("POST_BUILD did not run in the build directory: %v", err)
	}
	if got := modbuild.BuildDir(work, "dkmsdemo"); got != build {
		t.Errorf("BuildDir(dkmsdemo) = %s, want %s", got, build)
	}
	if got, want := modbuild.BuildDir(work, "nodkms"), filepath.Join(work, "nodkms"); got != want {
		t.Errorf("BuildDir(nodkms) = %s, want %s", got, want)
	}
	log, _ := os.ReadFile(demo.LogPath)
	if want := "==> dkms: make KERNELRELEASE=" + k.Meta.Release + " -C " + k.DevelDir() + " M=" + build + "/src"; !strings.Contains(string(log), want) {
		t.Errorf("log lacks %q:\n%s", want, log)
	}

	if e := byName["excluded"]; e.Status != manifest.StatusSkipped ||
		!strings.Contains(e.Error, "The dkms.conf for module excluded includes a BUILD_EXCLUSIVE directive which does not match this kernel/arch/config (BUILD_EXCLUSIVE_CONFIG CONFIG_ACPI: it is not set to y or m)") {
		t.Errorf("excluded: %s %q", e.Status, e.Error)
	}
	if w := byName["wrongname"]; w.Status != manifest.StatusFailed ||
		!strings.Contains(w.Error, "dkms: Build of nosuch.ko failed for: "+k.Meta.Release+" (x86_64)") {
		t.Errorf("wrongname: %s %q", w.Status, w.Error)
	}
}

func hasDebugInfo(t *testing.T, path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Section(".debug_info") != nil
}
