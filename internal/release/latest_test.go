package release

import (
	"testing"

	"github.com/google/go-github/v66/github"
)

// TestLatestSequence publishes an out-of-order sequence of runs (newer
// kernels, a backfilled older tag, revisions of older kernels, arm64
// releases) and checks after each that the repository's latest release,
// as the fake decides it from the make_latest values sent, is the
// highest x86_64 kernel (then revision).
func TestLatestSequence(t *testing.T) {
	r := newRig(t, true)
	steps := []struct {
		tag, arch, modRef string
		wantTag           string // the release published
		wantMakeLatest    string
		wantLatest        string // the repository's latest afterwards
	}{
		{"linux-msft-wsl-6.6.87.2", "", "a", "wsl-modules-6.6.87.2", "true", "wsl-modules-6.6.87.2"},
		{"linux-msft-wsl-6.6.114.1", "", "a", "wsl-modules-6.6.114.1", "true", "wsl-modules-6.6.114.1"},
		// A backfilled older tag.
		{"linux-msft-wsl-6.6.87.1", "", "a", "wsl-modules-6.6.87.1", "false", "wsl-modules-6.6.114.1"},
		// A revision of an older kernel (changed module list).
		{"linux-msft-wsl-6.6.87.2", "", "b", "wsl-modules-6.6.87.2-r2", "false", "wsl-modules-6.6.114.1"},
		// arm64 releases are their own family; x86_64 holds Latest.
		{"linux-msft-wsl-6.18.35.2", "arm64", "a", "wsl-modules-6.18.35.2-arm64", "false", "wsl-modules-6.6.114.1"},
		{"linux-msft-wsl-6.18.35.2", "", "a", "wsl-modules-6.18.35.2", "true", "wsl-modules-6.18.35.2"},
		// track: 6.6 with a changed module list.
		{"linux-msft-wsl-6.6.114.1", "", "b", "wsl-modules-6.6.114.1-r2", "false", "wsl-modules-6.18.35.2"},
		// A revision of the highest kernel takes Latest.
		{"linux-msft-wsl-6.18.35.2", "", "b", "wsl-modules-6.18.35.2-r2", "true", "wsl-modules-6.18.35.2-r2"},
		{"linux-msft-wsl-6.18.35.2", "arm64", "b", "wsl-modules-6.18.35.2-arm64-r2", "false", "wsl-modules-6.18.35.2-r2"},
	}
	for _, s := range steps {
		res, err := r.publish(t, smallDist(t, distSpec{tag: s.tag, arch: s.arch, modRef: s.modRef}))
		if err != nil {
			t.Fatalf("%s %s %s: %v", s.tag, s.arch, s.modRef, err)
		}
		latest, _ := r.fake.Latest(target)
		if res.Tag != s.wantTag || res.MakeLatest != s.wantMakeLatest || latest.Tag != s.wantLatest {
			t.Errorf("%s %s %s: published %s with make_latest %s, latest %s; want %s, %s, %s",
				s.tag, s.arch, s.modRef, res.Tag, res.MakeLatest, latest.Tag, s.wantTag, s.wantMakeLatest, s.wantLatest)
		}
		for _, rel := range r.fake.Releases(target) {
			if rel.Tag == res.Tag && rel.Latest != s.wantMakeLatest {
				t.Errorf("%s: the fake recorded make_latest %q", rel.Tag, rel.Latest)
			}
		}
	}

	// An older version of this tool (or a person) made an old release
	// latest; the next publish, of another old kernel, repairs it.
	var old int64
	for _, rel := range r.fake.Releases(target) {
		if rel.Tag == "wsl-modules-6.6.87.1" {
			old = rel.ID
		}
	}
	if _, _, err := r.c.Repositories.EditRelease(ctx, "me", "wsl-modules", old, &github.RepositoryRelease{MakeLatest: github.String("true")}); err != nil {
		t.Fatal(err)
	}
	if l, _ := r.fake.Latest(target); l.ID != old {
		t.Fatalf("latest %s, want the old release", l.Tag)
	}
	res, err := r.publish(t, smallDist(t, distSpec{tag: "linux-msft-wsl-6.6.87.2", modRef: "c"}))
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := r.fake.Latest(target); res.Tag != "wsl-modules-6.6.87.2-r3" || res.MakeLatest != "false" || l.Tag != "wsl-modules-6.18.35.2-r2" || !l.IsLatest {
		t.Errorf("repair: published %s (make_latest %s), latest %s", res.Tag, res.MakeLatest, l.Tag)
	}
	r.check(t)
}

// In a repository with arm64 releases only, the arm64 family holds
// Latest; once an x86_64 release exists, x86_64 does.
func TestLatestARM64Only(t *testing.T) {
	r := newRig(t, false)
	for _, s := range []struct{ tag, arch, wantLatest string }{
		{"linux-msft-wsl-6.6.87.2", "arm64", "wsl-modules-6.6.87.2-arm64"},
		{"linux-msft-wsl-6.18.35.2", "arm64", "wsl-modules-6.18.35.2-arm64"},
		{"linux-msft-wsl-6.6.114.1", "arm64", "wsl-modules-6.18.35.2-arm64"},
		{"linux-msft-wsl-6.6.87.2", "x86_64", "wsl-modules-6.6.87.2"},
		{"linux-msft-wsl-6.18.40.1", "arm64", "wsl-modules-6.6.87.2"},
	} {
		if _, err := r.publish(t, smallDist(t, distSpec{tag: s.tag, arch: s.arch})); err != nil {
			t.Fatal(err)
		}
		if l, ok := r.fake.Latest(target); !ok || l.Tag != s.wantLatest {
			t.Errorf("after %s %s: latest %s, want %s", s.tag, s.arch, l.Tag, s.wantLatest)
		}
	}
	r.check(t)
}
