package pipeline

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
)

// flakyList writes a workspace with the provider test module and a module
// "flaky" that includes a header outside its tree, by absolute path: it
// fails to build until fixFlaky writes the header, and fixing it changes
// no input (the module tree's digest stays the same), like a failure of
// the build machine rather than of the module.
func flakyList(t *testing.T) (list string, fixFlaky func()) {
	t.Helper()
	ws := t.TempDir()
	if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules", "provider"), filepath.Join(ws, "modules", "provider"), atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	header := filepath.Join(t.TempDir(), "flaky.h")
	files := map[string]string{
		"modules/flaky/Kbuild": "obj-m := wslt_flaky.o\nwslt_flaky-y := flaky.o\n",
		"modules/flaky/flaky.c": `// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include "` + header + `"

static int __init wslt_flaky_init(void)
{
	return WSLT_FLAKY_RET;
}

module_init(wslt_flaky_init);
MODULE_LICENSE("GPL");
`,
		"wsl-modules.yml": `modules:
  - {name: provider, path: modules/provider}
  - {name: flaky, path: modules/flaky}
`,
	}
	for name, text := range files {
		p := filepath.Join(ws, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(ws, "wsl-modules.yml"), func() {
		t.Helper()
		if err := os.WriteFile(header, []byte("#define WSLT_FLAKY_RET 0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func moduleStatus(mods []ModuleReport) map[string]string {
	st := map[string]string{}
	for _, m := range mods {
		st[m.Name] = m.Status
	}
	return st
}

// TestFailedShardRebuilt: a modules shard with a failed module (kept by
// keep-going) is built again by the next modules stage, not reused.
func TestFailedShardRebuilt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules")
	}
	ctx := context.Background()
	list, fix := flakyList(t)
	o := localOptions(t, list, filepath.Join(t.TempDir(), "work"))
	o.Stage = StageModules
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if st := moduleStatus(res.Last().Modules); st["flaky"] != manifest.StatusFailed || st["provider"] != manifest.StatusOK {
		t.Fatalf("first run: module status %v, want flaky failed, provider ok", st)
	}
	var steps int64
	for _, m := range res.Last().Modules {
		if m.Name == "provider" {
			steps = m.Steps
		}
	}
	if steps < 3 { // at least CC, MODPOST and LD of the module
		t.Errorf("provider: %d kbuild steps recorded", steps)
	}
	fix()
	// The rebuild counts toward the steps of the previous build.
	var log strings.Builder
	o.Progress = progress.New(io.MultiWriter(&log, tlog{t}))
	res, err = Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if st := moduleStatus(res.Last().Modules); st["flaky"] != manifest.StatusOK {
		t.Errorf("after the fix: module status %v, want flaky ok (the failed shard was reused)", st)
	}
	if want := fmt.Sprintf("; %d expected from the previous build of this module)", steps); !strings.Contains(log.String(), "module provider: make: ") || !strings.Contains(log.String(), want) {
		t.Errorf("the rebuild's log has no %q line:\n%s", want, log.String())
	}
	rec, err := readShard(shardDir(&kernelJob{dir: res.Last().Dir}, 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	if rec.failed() {
		t.Error("shard.json still records a failed module")
	}
}

// TestCancelledModulesLeaveNoShard: a modules stage cancelled while its
// modules build (BuildModules then reports them as failed) fails and
// writes no shard, which a later run would take as complete.
func TestCancelledModulesLeaveNoShard(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	list, fix := flakyList(t)
	fix()
	work := filepath.Join(t.TempDir(), "work")
	o := localOptions(t, list, work)
	o.Stage = StageModules
	o.Hooks.Stage = func(_, stage string) func(error) {
		if stage == "modules" {
			cancel()
		}
		return func(error) {}
	}
	if _, err := Run(ctx, o); err == nil {
		t.Error("a cancelled modules stage succeeded")
	}
	if _, err := os.Stat(filepath.Join(work, LocalName, "shards", "1-of-1")); err == nil {
		t.Error("a cancelled modules stage wrote its shard")
	}
}

// TestKeepGoingOutputNotReusedWithout: build/ and dist/ written by a
// keep-going run that left a failed module out are not reused by a run
// without keep-going, which fails on that module as it should.
func TestKeepGoingOutputNotReusedWithout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules")
	}
	ctx := context.Background()
	list, _ := flakyList(t)
	o := localOptions(t, list, filepath.Join(t.TempDir(), "work"))
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	k := res.Last()
	if k.Manifest == nil || k.Manifest.Image == nil {
		t.Fatalf("keep-going run wrote no dist: %+v", k)
	}
	st := map[string]string{}
	for _, m := range k.Manifest.Modules {
		st[m.Name] = m.Status
	}
	if st["flaky"] != manifest.StatusSkipped {
		t.Fatalf("keep-going run: module status %v, want flaky skipped", st)
	}
	for _, stage := range []string{StageAll, StagePackage} {
		so := o
		so.KeepGoing, so.Stage = false, stage
		if _, err := Run(ctx, so); err == nil || !strings.Contains(err.Error(), "flaky") {
			t.Errorf("stage %s without keep-going over keep-going output: err %v, want the failure of flaky", stage, err)
		}
	}
	// A keep-going run still reuses it.
	if _, err := Run(ctx, o); err != nil {
		t.Errorf("keep-going re-run: %v", err)
	}
}

// TestKeepGoingDistNotReused: a dist/ written by a keep-going run that
// left a failed module out is not reused once the module builds: neither
// by a run without keep-going nor by one with it.
func TestKeepGoingDistNotReused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules")
	}
	ctx := context.Background()
	for _, keepGoing := range []bool{false, true} {
		list, fix := flakyList(t)
		o := localOptions(t, list, filepath.Join(t.TempDir(), "work"))
		res, err := Run(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		k := res.Last()
		// The failure is fixed and build/ removed: the modules stage
		// builds flaky again (its shard recorded a failure) and build/
		// holds it; dist/ is still the one without it.
		fix()
		if err := os.RemoveAll(k.BuildDir); err != nil {
			t.Fatal(err)
		}
		o.KeepGoing = keepGoing
		res, err = Run(ctx, o)
		if err != nil {
			t.Fatalf("keep-going %v: %v", keepGoing, err)
		}
		m, err := manifest.Read(filepath.Join(res.Last().DistDir, manifest.FileName))
		if err != nil {
			t.Fatal(err)
		}
		for _, mm := range m.Modules {
			if mm.Status != manifest.StatusOK {
				t.Errorf("keep-going %v: dist manifest has %s %s: the old dist/ was reused", keepGoing, mm.Name, mm.Status)
			}
		}
	}
}

// TestDistPrefixChange: a dist/ written for another release prefix is not
// reused: its wslconfig.txt and release notes name the folder
// wsl\<prefix><version>.
func TestDistPrefixChange(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules")
	}
	ctx := context.Background()
	list, fix := flakyList(t)
	fix()
	o := localOptions(t, list, filepath.Join(t.TempDir(), "work"))
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	k := res.Last()
	oldTag := release.TagName(k.Manifest.Kernel.Tag, k.Manifest.Kernel.Arch, "")
	newTag := release.TagName(k.Manifest.Kernel.Tag, k.Manifest.Kernel.Arch, "mymods-")
	conf, _ := os.ReadFile(filepath.Join(k.DistDir, release.WSLConfFile))
	if !strings.Contains(string(conf), oldTag) {
		t.Fatalf("wslconfig.txt does not name %s:\n%s", oldTag, conf)
	}
	o.ReleasePrefix = "mymods-"
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{release.WSLConfFile, release.NotesFile} {
		b, err := os.ReadFile(filepath.Join(k.DistDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), oldTag) || !strings.Contains(string(b), newTag) {
			t.Errorf("%s after the prefix change names %s, not %s:\n%s", f, oldTag, newTag, b)
		}
	}
}
