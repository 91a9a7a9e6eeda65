package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
)

// TestPlanKernelRepo: a tag of another kernel repository (a fork using
// Microsoft's tag names) is another build: other hash, other cache key,
// and not up to date against the release of the default repository's
// build of that tag.
func TestPlanKernelRepo(t *testing.T) {
	const token, target, tag = "tok", "me/wsl-modules", "linux-msft-wsl-6.6.87.2"
	fake := githubfake.NewT(t, githubfake.Options{Token: token})
	fake.AddTags(target) // the target repository exists, without releases
	dir := t.TempDir()
	list := filepath.Join(dir, "wsl-modules.yml")
	if err := os.WriteFile(list, []byte("modules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plan := func(repo string) *Result {
		t.Helper()
		res, err := Run(context.Background(), Options{ModulesFile: list, KernelSource: tag, KernelRepo: repo,
			Stage: StagePlan, Publish: true, TargetRepo: target, Token: token, Getenv: fake.Getenv(nil),
			WorkDir: filepath.Join(dir, "work"), CacheDir: filepath.Join(dir, "cache")})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	def := plan(fetch.DefaultRepo)
	if !def.Built() {
		t.Fatal("nothing to build before any release")
	}
	hash := def.Last().Hash
	fake.AddRelease(target, githubfake.Release{Tag: release.TagName(tag, "x86_64", ""), Name: tag,
		Body: "notes\n\n<!-- wsl-modules-action manifest-hash: " + hash + " -->\n"})
	if res := plan(""); res.Built() || res.Last().Hash != hash {
		t.Errorf("default repository after its release: built %v, hash %s (want up to date, %s)", res.Built(), res.Last().Hash, hash)
	}
	fork := plan("someone/WSL2-Linux-Kernel")
	if !fork.Built() || fork.Last().Hash == hash {
		t.Errorf("fork with the same tag: built %v, hash %s (want a build with another hash than %s)", fork.Built(), fork.Last().Hash, hash)
	}
	if fork.Plan.CacheKey == def.Plan.CacheKey {
		t.Errorf("fork and default repository share the cache key %s", def.Plan.CacheKey)
	}
	// The kernel record of the work dir is per repository too.
	r := &runner{o: Options{SourceDateEpoch: 0}}
	if r.kernelInputs(def.Plan.jobs[0]) == r.kernelInputs(fork.Plan.jobs[0]) {
		t.Error("fork and default repository have the same kernel inputs (kernel.json)")
	}
}
