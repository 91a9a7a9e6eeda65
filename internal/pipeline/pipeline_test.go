package pipeline

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/compilelog"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

func TestParseShard(t *testing.T) {
	for _, s := range []string{"1/1", "2/3", " 3/3 "} {
		if _, _, err := ParseShard(s); err != nil {
			t.Errorf("ParseShard(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "1", "0/2", "3/2", "a/b", "1/0", "-1/2", "1/2/3"} {
		if _, _, err := ParseShard(s); err == nil || !strings.Contains(err.Error(), "want i/n") {
			t.Errorf("ParseShard(%q) = %v, want an error naming the form", s, err)
		}
	}
}

func TestShardModules(t *testing.T) {
	list, err := modlist.Parse("wsl-modules.yml", []byte(`modules:
  - {name: a, path: a}
  - {name: consumer, path: c, depends: [provider]}
  - {name: b, path: b}
  - {name: provider, path: p}
  - {name: c, path: x}
  - {name: top, path: t, depends: [consumer]}
`))
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 4; n++ {
		seen := map[int]int{}
		for i := 1; i <= n; i++ {
			for _, j := range ShardModules(list, i, n) {
				if _, dup := seen[j]; dup {
					t.Errorf("n=%d: module %d in two shards", n, j)
				}
				seen[j] = i
			}
		}
		if len(seen) != len(list.Modules) {
			t.Errorf("n=%d: %d of %d modules assigned", n, len(seen), len(list.Modules))
		}
		// consumer (1), provider (3) and top (5) are connected.
		if seen[1] != seen[3] || seen[1] != seen[5] {
			t.Errorf("n=%d: dependent modules split: %v", n, seen)
		}
	}
	// Groups in list order to the least loaded shard: a -> 1, the
	// consumer group (3 modules) -> 2, then b and c -> 1.
	if got := ShardModules(list, 1, 2); !reflect.DeepEqual(got, []int{0, 2, 4}) {
		t.Errorf("shard 1/2 = %v", got)
	}
}

func TestDerivedTag(t *testing.T) {
	for rel, want := range map[string]string{
		"6.6.87.2-microsoft-standard-WSL2":  "linux-msft-wsl-6.6.87.2",
		"6.12.117-microsoft-standard-WSL2":  "linux-msft-wsl-6.12.117.0",
		"6.18-rc1":                          "linux-msft-wsl-6.18.0.0",
		"5.15.167.4-microsoft-standard-WSL": "linux-msft-wsl-5.15.167.4",
	} {
		if got := derivedTag(rel); got != want {
			t.Errorf("derivedTag(%q) = %q, want %q", rel, got, want)
		}
	}
}

func TestOptionErrors(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "wsl-modules.yml")
	if err := os.WriteFile(list, []byte("modules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := Options{ModulesFile: list, WorkDir: filepath.Join(dir, "w"), CacheDir: filepath.Join(dir, "c"), KernelSource: dir}
	for name, c := range map[string]struct {
		mod  func(o *Options)
		want string
	}{
		"stage":        {func(o *Options) { o.Stage = "deploy" }, `stage "deploy"`},
		"layout":       {func(o *Options) { o.Layout = "deep" }, `layout "deep"`},
		"headers":      {func(o *Options) { o.Headers = "all" }, `headers "all"`},
		"uapi flat":    {func(o *Options) { o.Headers = "uapi" }, "headers uapi needs layout nested"},
		"shard":        {func(o *Options) { o.Shard = "3/2" }, `shard "3/2"`},
		"track":        {func(o *Options) { o.Track = "6.x" }, "track"},
		"prefix":       {func(o *Options) { o.ReleasePrefix = "a b" }, "release prefix"},
		"arch":         {func(o *Options) { o.Arch = "riscv" }, `arch "riscv"`},
		"no list":      {func(o *Options) { o.ModulesFile = filepath.Join(dir, "missing.yml") }, "missing.yml"},
		"config":       {func(o *Options) { o.ConfigFile = filepath.Join(dir, "nope") }, "config"},
		"kernel repo":  {func(o *Options) { o.KernelRepo = "noslash" }, "kernel repo"},
		"bad source":   {func(o *Options) { o.KernelSource = filepath.Join(dir, "not-there") }, "not a directory, a tarball or a kernel tag"},
		"publish tag":  {func(o *Options) { o.Publish = true }, "needs its kernel tag"},
		"bad kern tag": {func(o *Options) { o.KernelTag = "v6.6" }, `kernel tag "v6.6"`},
	} {
		o := base
		c.mod(&o)
		_, err := Run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, c.want)
		}
	}
	if _, err := os.Stat(base.WorkDir); err == nil {
		t.Errorf("a refused run created the work dir")
	}
}

// testList writes a workspace with the test modules (provider, consumer,
// Debian's v4l2loopback DKMS package and, with broken, a module that does
// not compile) and its module list.
func testList(t *testing.T, broken bool) string {
	t.Helper()
	ws := t.TempDir()
	for _, m := range []string{"provider", "consumer", "broken"} {
		if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules", m), filepath.Join(ws, "modules", m), atomicfile.CopyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := buildtest.PrepareV4L2Loopback(testenv.DKMSSource(t, "v4l2loopback"), filepath.Join(ws, "modules", "v4l2loopback")); err != nil {
		t.Fatal(err)
	}
	list := `modules:
  - {name: provider, path: modules/provider}
  - {name: consumer, path: modules/consumer, depends: [provider]}
  - {name: v4l2loopback, path: modules/v4l2loopback}
`
	if broken {
		list += "  - {name: broken, path: modules/broken}\n"
	}
	p := filepath.Join(ws, "wsl-modules.yml")
	if err := os.WriteFile(p, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// localOptions builds from the test kernel's source tarball, given as a
// local file: the same inputs as buildtest's test kernel, so it is a cache
// hit.
func localOptions(t *testing.T, list, work string) Options {
	buildtest.TestKernel(t)
	return Options{ModulesFile: list, KernelSource: buildtest.GitHubTarball(t),
		CacheDir: buildtest.CacheDir(), WorkDir: work, KeepGoing: true,
		Progress: progress.New(tlog{t}), Out: tlog{t}}
}

// TestStageSplitEqualsAll runs the pipeline in one go, then as separate
// stages (kernel, two module shards, package) in the same work dir path,
// and checks that both give the same bzImage and modules.vhdx. It also
// checks the assembled tree with kmod's modprobe, the failed module's
// compiler error annotation, and that a re-run resumes without building.
func TestStageSplitEqualsAll(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules")
	}
	testenv.Tool(t, "modprobe")
	ctx := context.Background()
	list := testList(t, true)
	work := filepath.Join(t.TempDir(), "work")

	var reports []ModuleReport
	o := localOptions(t, list, work)
	o.Hooks.Module = func(r ModuleReport) { reports = append(reports, r) }
	var stages []string
	o.Hooks.Stage = func(k, s string) func(error) {
		stages = append(stages, s)
		return func(error) {}
	}
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	all := res.Last()
	if all == nil || all.VHDX == "" || all.Manifest == nil || all.Manifest.Image == nil {
		t.Fatalf("no dist: %+v", all)
	}
	if want := []string{"kernel", "modules", "assemble", "image", "release"}; !reflect.DeepEqual(stages, want) {
		t.Errorf("stages %v, want %v", stages, want)
	}
	status := map[string]string{}
	for _, m := range all.Manifest.Modules {
		status[m.Name] = m.Status
	}
	// With keep-going the failed module is left out and recorded as
	// skipped, so the dist can be published.
	if want := map[string]string{"provider": "ok", "consumer": "ok", "v4l2loopback": "ok", "broken": "skipped"}; !reflect.DeepEqual(status, want) {
		t.Errorf("module status %v, want %v", status, want)
	}

	// The failed module's compiler errors point at its source file in
	// the workspace, on the line that has the undefined names.
	var brokenRep *ModuleReport
	for i := range reports {
		if reports[i].Name == "broken" {
			brokenRep = &reports[i]
		}
	}
	if brokenRep == nil {
		t.Fatal("no report for module broken")
	}
	src := filepath.Join(filepath.Dir(list), "modules", "broken", "broken.c")
	wantLine := lineOf(t, src, "this_function_does_not_exist")
	f, err := os.Open(brokenRep.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	errs := compilelog.CompileErrors(f, brokenRep.BuildDir, brokenRep.SourceDir, 10)
	f.Close()
	if len(errs) == 0 {
		t.Fatalf("no compiler errors found in %s", brokenRep.LogPath)
	}
	found := false
	for _, e := range errs {
		if e.File != src || e.Column == 0 {
			t.Errorf("annotation %+v, want it in %s with a column", e, src)
		}
		found = found || e.Line == wantLine && strings.Contains(e.Message, "this_function_does_not_exist")
	}
	if !found {
		t.Errorf("no annotation at %s:%d for this_function_does_not_exist: %+v", src, wantLine, errs)
	}

	// kmod's modprobe resolves the dependency in the assembled tree.
	staging := filepath.Join(all.BuildDir, "staging")
	out, err := exec.Command("modprobe", "-d", staging, "-S", all.Release, "--show-depends", "wslt_consumer").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "extra/provider/wslt_provider.ko") || !strings.Contains(string(out), "extra/consumer/wslt_consumer.ko") {
		t.Errorf("modprobe --show-depends wslt_consumer: %v\n%s", err, out)
	}

	// Resume: without dist/, a re-run writes it again from build/ and
	// builds nothing.
	bm := filepath.Join(all.BuildDir, manifest.FileName)
	st1, _ := os.Stat(bm)
	if err := os.RemoveAll(all.DistDir); err != nil {
		t.Fatal(err)
	}
	reports, stages = nil, nil
	res2, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(bm)
	if !st1.ModTime().Equal(st2.ModTime()) || len(reports) != 0 {
		t.Errorf("re-run rebuilt: build manifest %v -> %v, %d module builds", st1.ModTime(), st2.ModTime(), len(reports))
	}
	if got := res2.Last().Manifest.Image.SHA256; got != all.Manifest.Image.SHA256 {
		t.Errorf("resumed image sha256 %s, first run %s", got, all.Manifest.Image.SHA256)
	}
	wantVHDX, wantKernel := fileSum(t, all.VHDX), fileSum(t, all.KernelImage)

	// The same build as separate stages, in the same work dir path (the
	// module build paths end up in the objects).
	if err := os.Rename(work, work+".all"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ stage, shard string }{{StageKernel, ""}, {StageModules, "2/2"}, {StageModules, "1/2"}, {StagePackage, ""}} {
		so := localOptions(t, list, work)
		so.Stage, so.Shard = step.stage, step.shard
		if step.stage == StagePackage {
			// The package stage alone: nothing was assembled yet.
			if _, err := os.Stat(filepath.Join(work, LocalName, "build")); err == nil {
				t.Fatalf("build/ exists before the package stage")
			}
		}
		if _, err := Run(ctx, so); err != nil {
			t.Fatalf("stage %s %s: %v", step.stage, step.shard, err)
		}
	}
	split := filepath.Join(work, LocalName, "dist")
	if got := fileSum(t, filepath.Join(split, "modules.vhdx")); got != wantVHDX {
		t.Errorf("modules.vhdx of the split run %s, of the single run %s", got, wantVHDX)
	}
	if got := fileSum(t, filepath.Join(split, "bzImage")); got != wantKernel {
		t.Errorf("bzImage of the split run %s, of the single run %s", got, wantKernel)
	}

	// The package stage refuses an incomplete split.
	if err := os.RemoveAll(filepath.Join(work, LocalName, "build")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(work, LocalName, "shards", "1-of-2")); err != nil {
		t.Fatal(err)
	}
	po := localOptions(t, list, work)
	po.Stage = StagePackage
	if _, err := Run(ctx, po); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("package with shard 1/2 missing: %v", err)
	}
}

func lineOf(t *testing.T, file, needle string) int {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if strings.Contains(sc.Text(), needle) {
			return n
		}
	}
	t.Fatalf("%s: no %q", file, needle)
	return 0
}

func fileSum(t *testing.T, p string) string {
	s, err := digest.File(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
