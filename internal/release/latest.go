package release

import (
	"context"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
)

// makeLatest decides the make_latest value for publishing revision rev:
// "true" only if the arch's family holds the repository's Latest
// (Index.LatestArch) and the release will be its highest (kernel
// version, then revision); else "false", so a track: 6.6 run, a
// backfilled older tag or a revision of an older kernel leaves Latest
// with the newer kernel.
func (pub *publisher) makeLatest(ctx context.Context, x *Index, rev int) (string, error) {
	arch := pub.arch()
	la, err := x.LatestArch(ctx, arch)
	if err != nil {
		return "", err
	}
	if la != arch {
		return "false", nil
	}
	h, err := x.Highest(ctx, arch)
	if err != nil {
		return "", err
	}
	me := TagInfo{KernelTag: pub.p.kernel, ARM64: pub.p.arm64, Revision: rev}
	if h == nil || compareInfo(me, h.Info) > 0 {
		return "true", nil
	}
	return "false", nil
}

// fixLatest runs after publishing: if the repository's latest release is
// not the highest release of the family that holds Latest (a concurrent
// publish of another kernel decided from an older listing, or an older
// version of this tool sent make_latest true), it marks that release
// latest. The latest release is read before the listing, so a release
// published in between is either seen by the listing or publishes (and
// repairs) after it. Failures are reported, not returned: the release
// itself is published and verified.
func (pub *publisher) fixLatest(ctx context.Context) {
	latest, _, err := pub.c.Repositories.GetLatestRelease(ctx, pub.owner, pub.name)
	if err != nil && !githubapi.IsNotFound(err) {
		pub.log.Printf("release: warning: reading the latest release: %v", err)
		return
	}
	x, err := List(ctx, pub.c, pub.o.Repo, pub.o.Prefix)
	if err != nil {
		pub.log.Printf("release: warning: checking the latest release: %v", err)
		return
	}
	la, err := x.LatestArch(ctx, "")
	if err != nil {
		pub.log.Printf("release: warning: checking the latest release: %v", err)
		return
	}
	h, err := x.Highest(ctx, la)
	if err != nil || h == nil {
		if err != nil {
			pub.log.Printf("release: warning: checking the latest release: %v", err)
		}
		return
	}
	if latest != nil && latest.GetID() == h.Release.GetID() {
		return
	}
	pub.log.Printf("release: marking %s as the latest release (the highest %s release; GitHub's latest was %s)",
		h.Release.GetTagName(), la, latest.GetTagName())
	if _, _, err := pub.c.Repositories.EditRelease(ctx, pub.owner, pub.name, h.Release.GetID(),
		&github.RepositoryRelease{MakeLatest: github.String("true")}); err != nil {
		pub.log.Printf("release: warning: marking %s as the latest release: %v", h.Release.GetTagName(), err)
	}
}
