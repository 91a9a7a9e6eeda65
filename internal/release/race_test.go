package release

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
)

// racePublish runs one Publish per dir concurrently (started together),
// each with its own client, and returns their results in order.
func racePublish(t *testing.T, r *rig, dirs ...string) ([]*Result, []error) {
	t.Helper()
	clients := make([]*githubapi.Client, len(dirs))
	for i, d := range dirs {
		r.expect(t, d)
		clients[i] = newRigClient(t, r)
	}
	res, errs := make([]*Result, len(dirs)), make([]error, len(dirs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res[i], errs[i] = r.publishWith(clients[i], dirs[i])
		}()
	}
	close(start)
	wg.Wait()
	return res, errs
}

// published returns the public releases carrying manifest hash h.
func published(r *rig, h string) []githubfake.Release {
	var out []githubfake.Release
	for _, rel := range r.fake.Releases(target) {
		if !rel.Draft && HashFromBody(rel.Body) == h {
			out = append(out, rel)
		}
	}
	return out
}

// Two publishes of different builds of the same tag and arch, at the same
// time, many times over (with and without immutable releases): both
// succeed, each build is published exactly once and completely (the
// other as the next revision, which is the latest), and no state of the
// repository ever shows a public release lacking an asset.
func TestConcurrentPublishesOfDifferentBuilds(t *testing.T) {
	for i := 0; i < 24; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			r := newRig(t, i%2 == 0)
			a := smallDist(t, distSpec{modRef: "a"})
			b := smallDist(t, distSpec{modRef: "b"})
			res, errs := racePublish(t, r, a, b)
			tags := map[string]bool{}
			for j, dir := range []string{a, b} {
				if errs[j] != nil {
					t.Fatalf("publish %d: %v\n%s", j, errs[j], r.out)
				}
				if res[j].Status != StatusPublished {
					t.Errorf("publish %d: status %s", j, res[j].Status)
				}
				tags[res[j].Tag] = true
				rels := published(r, res[j].Hash)
				if len(rels) != 1 {
					t.Fatalf("build %d: %d public releases, want 1", j, len(rels))
				}
				assertRelease(t, r.fake, rels[0], dir)
			}
			if !tags["wsl-modules-6.6.87.2"] || !tags["wsl-modules-6.6.87.2-r2"] {
				t.Errorf("tags %v, want the base tag and -r2", tags)
			}
			for _, rel := range r.fake.Releases(target) {
				if rel.Draft {
					t.Errorf("draft %d (%s) left behind", rel.ID, rel.Tag)
				}
			}
			if l, _ := r.fake.Latest(target); l.Tag != "wsl-modules-6.6.87.2-r2" {
				t.Errorf("latest %s, want the higher revision", l.Tag)
			}
			r.check(t)
		})
	}
}

// Two publishes of the same inputs at the same time, byte-identical or
// not (a rebuild that differs): the build is published once, both runs
// succeed (one may find it published by the other: up to date), and no
// public release ever lacks an asset.
func TestConcurrentPublishesOfOneBuild(t *testing.T) {
	for i := 0; i < 24; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			r := newRig(t, i%2 == 0)
			a := smallDist(t, distSpec{})
			b := a
			if i%4 >= 2 {
				b = smallDist(t, distSpec{salt: "rebuilt"})
			}
			res, errs := racePublish(t, r, a, b)
			for j := range res {
				if errs[j] != nil {
					t.Fatalf("publish %d: %v\n%s", j, errs[j], r.out)
				}
			}
			if res[0].Hash != res[1].Hash {
				t.Fatal("the two dists have different manifest hashes")
			}
			rels := published(r, res[0].Hash)
			if len(rels) != 1 || res[0].Tag != rels[0].Tag || res[1].Tag != rels[0].Tag {
				t.Fatalf("%d public releases of the build; results %s %s, %s %s", len(rels), res[0].Status, res[0].Tag, res[1].Status, res[1].Tag)
			}
			r.check(t)
		})
	}
}

// A recent draft of another build (another run, still uploading) is
// neither reused nor deleted; a stale one is deleted.
func TestDraftsOfOtherBuilds(t *testing.T) {
	r := newRig(t, true)
	other := r.fake.AddRelease(target, githubfake.Release{Tag: "wsl-modules-6.6.87.2", Draft: true,
		Body: body("another build", fmt.Sprintf("%064d", 1), fmt.Sprintf("%064d", 2))})
	dir := smallDist(t, distSpec{})
	r.expect(t, dir)
	res, err := Publish(ctx, r.c, Options{Repo: target, Dir: dir, Out: r.out, Progress: r.progress()})
	if err != nil {
		t.Fatal(err)
	}
	var kept bool
	for _, rel := range r.fake.Releases(target) {
		if rel.ID == other.ID {
			kept = rel.Draft && len(rel.Assets) == 0 && rel.Body == other.Body
		}
	}
	if !kept || res.ReleaseID == other.ID {
		t.Errorf("the other build's recent draft was reused or changed (kept %v, published %d)", kept, res.ReleaseID)
	}
	// A day later it is stale: the next publish of the family deletes it.
	dir2 := smallDist(t, distSpec{modRef: "v2"})
	r.expect(t, dir2)
	later := func() time.Time { return time.Now().Add(StaleDraftAge + time.Hour) }
	if _, err := Publish(ctx, r.c, Options{Repo: target, Dir: dir2, Out: r.out, Progress: r.progress(), Now: later}); err != nil {
		t.Fatal(err)
	}
	for _, rel := range r.fake.Releases(target) {
		if rel.ID == other.ID {
			t.Error("the stale draft was not deleted")
		}
	}
	r.check(t)
}
