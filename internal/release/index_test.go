package release

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
)

// The index recognises our releases only, answers the newest released
// kernel per arch from the first page (one request over 250 releases,
// listed newest first), and reads every page for a family.
func TestIndex(t *testing.T) {
	fake := githubfake.NewT(t, githubfake.Options{Token: token})
	h2 := strings.Repeat("2", 64)
	// Oldest first: GitHub lists them newest first.
	for i := 1; i <= 230; i++ {
		fake.AddRelease(target, githubfake.Release{Tag: TagName(fmt.Sprintf("linux-msft-wsl-6.6.%d.1", i), "x86_64", "")})
	}
	fake.AddRelease(target, githubfake.Release{Tag: TagName("linux-msft-wsl-6.6.1.1", "x86_64", "") + "-r2", Body: body("r2", h2, "")})
	for _, tag := range []string{"unrelated-v1", "wsl-modules-6.6.x", "other-6.6.87.2"} {
		fake.AddRelease(target, githubfake.Release{Tag: tag})
	}
	fake.AddRelease(target, githubfake.Release{Tag: TagName("linux-msft-wsl-6.18.35.2", "arm64", "")})
	fake.AddRelease(target, githubfake.Release{Tag: TagName("linux-msft-wsl-6.18.40.1", "x86_64", ""), Draft: true})
	for i := 0; i < 15; i++ {
		fake.AddRelease(target, githubfake.Release{Tag: fmt.Sprintf("unrelated-%d", i)})
	}
	c, err := githubapi.New(githubapi.Options{Getenv: fake.Getenv(nil)})
	if err != nil {
		t.Fatal(err)
	}
	fake.ResetRequests()
	x, err := List(ctx, c, target, "")
	if err != nil {
		t.Fatal(err)
	}
	k, rel, err := x.NewestKernel(ctx, "x86_64")
	if err != nil || k != "linux-msft-wsl-6.6.230.1" || rel != "wsl-modules-6.6.230.1" {
		t.Errorf("NewestKernel(x86_64) = %s, %s, %v", k, rel, err)
	}
	if k, _, err := x.NewestKernel(ctx, "arm64"); err != nil || k != "linux-msft-wsl-6.18.35.2" {
		t.Errorf("NewestKernel(arm64) = %s, %v", k, err)
	}
	if n := fake.CountRequests(); n != 1 {
		t.Errorf("%d requests for the newest kernel, want 1", n)
	}
	// The oldest kernel's family is on the last page: revision 2 is its
	// newest, and the draft of another kernel is not in it.
	f, err := x.Family(ctx, "linux-msft-wsl-6.6.1.1", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if f.MaxRev != 2 || f.Newest.GetTagName() != "wsl-modules-6.6.1.1-r2" || len(f.Published) != 2 || len(f.Drafts) != 0 || HashFromBody(f.Newest.GetBody()) != h2 {
		t.Errorf("family of 6.6.1.1: maxrev %d newest %s published %d drafts %d", f.MaxRev, f.Newest.GetTagName(), len(f.Published), len(f.Drafts))
	}
	if n := fake.CountRequests(); n != 3 {
		t.Errorf("%d requests after reading all 250 releases, want 3", n)
	}
	f, _ = x.Family(ctx, "linux-msft-wsl-6.18.40.1", "x86_64")
	if len(f.Drafts) != 1 || f.Newest != nil || f.MaxRev != 0 {
		t.Errorf("draft family: %+v", f)
	}
	if f, _ := x.Family(ctx, "linux-msft-wsl-6.18.35.2", "x86_64"); len(f.Published) != 0 {
		t.Errorf("arm64 release counted for x86_64: %+v", f)
	}
	if n := fake.CountRequests(); n != 3 {
		t.Errorf("%d requests, want no more after everything was read", n)
	}
	if _, err := List(ctx, c, "not-a-repo", ""); err == nil {
		t.Error("List accepted a repository name without owner")
	}
}
