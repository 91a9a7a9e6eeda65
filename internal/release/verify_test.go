package release

import (
	"strings"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
)

// deleteOnce deletes asset name of the first release matching pick, once,
// from the fake's AfterRequest hook of the first request on route (the
// hook runs before the client sees the response).
func deleteOnce(t *testing.T, r *rig, route, name string, pick func(githubfake.Release) bool) *bool {
	c, err := githubapi.New(githubapi.Options{Getenv: r.fake.Getenv(nil)})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	done := new(bool)
	r.fake.AfterRequest = func(q githubfake.Request) {
		if q.Route != route || q.Status >= 300 {
			return
		}
		for _, rel := range r.fake.Releases(target) {
			if !pick(rel) {
				continue
			}
			for _, a := range rel.Assets {
				if a.Name == name {
					once.Do(func() {
						_, err := c.Repositories.DeleteReleaseAsset(ctx, "me", "wsl-modules", a.ID)
						*done = err == nil
					})
				}
			}
		}
	}
	return done
}

// An asset that disappears from the draft after the upload (someone else
// deleted it) is noticed just before publishing: nothing is published.
func TestPublishChecksDraftFirst(t *testing.T) {
	r := newRig(t, true)
	dir := smallDist(t, distSpec{})
	done := deleteOnce(t, r, githubfake.RouteUpload, "bzImage", func(rel githubfake.Release) bool {
		return rel.Draft && len(rel.Assets) == r.wantAssets
	})
	_, err := r.publish(t, dir)
	if !*done {
		t.Fatal("the hook deleted nothing")
	}
	if err == nil || !strings.Contains(err.Error(), "0 copies of bzImage") || !strings.Contains(err.Error(), "not publishing") {
		t.Fatalf("err = %v", err)
	}
	for _, rel := range r.fake.Releases(target) {
		if !rel.Draft {
			t.Errorf("%s was published", rel.Tag)
		}
	}
	r.check(t)
}

// A release that lacks an asset right after publishing is reported as a
// failure, and (without immutable releases) turned back into a draft.
func TestPublishVerifiesAfterPublishing(t *testing.T) {
	r := newRig(t, false)
	dir := smallDist(t, distSpec{})
	done := deleteOnce(t, r, githubfake.RouteUpdateRelease, VHDXFile, func(rel githubfake.Release) bool { return !rel.Draft })
	_, err := r.publish(t, dir)
	if !*done {
		t.Fatal("the hook deleted nothing")
	}
	if err == nil || !strings.Contains(err.Error(), "does not hold this build") || !strings.Contains(err.Error(), "0 copies of modules.vhdx") ||
		!strings.Contains(err.Error(), "turned back into a draft") {
		t.Fatalf("err = %v", err)
	}
	rels := r.fake.Releases(target)
	if len(rels) != 1 || !rels[0].Draft {
		t.Errorf("releases after the failed verification: %+v", rels)
	}
	// The rig saw the public release lacking an asset (so it does see
	// such states).
	r.mu.Lock()
	n := len(r.violations)
	r.violations = nil
	r.mu.Unlock()
	if n == 0 {
		t.Error("the rig did not see the incomplete public release")
	}
	r.check(t)
}
