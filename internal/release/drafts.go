package release

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
)

// isThisBuild reports whether a release body carries this plan's manifest
// hash and assets identity: a draft of this very build, which this run
// may fill (a concurrent run of the same build uploads the same bytes).
func (pub *publisher) isThisBuild(bodyText string) bool {
	return HashFromBody(bodyText) == pub.p.hash && AssetsFromBody(bodyText) == pub.p.assetsID
}

// draft returns the draft to fill: the newest draft of this very build
// in the family (updated to tag and name), or a new one. Drafts of other
// builds (or extra ones of this build) are deleted only once older than
// StaleDraftAge: a younger one may belong to a run still uploading into
// it, and deleting or reusing it would break that run's release.
func (pub *publisher) draft(ctx context.Context, fam *Family, tag, name string) (*github.RepositoryRelease, error) {
	reuse := pub.thisBuildDraft(fam)
	if err := pub.cleanDrafts(ctx, fam, reuse); err != nil {
		return nil, err
	}
	if reuse != nil {
		return pub.reuseDraft(ctx, reuse, tag, name)
	}
	bodyText := body(pub.p.notes, pub.p.hash, pub.p.assetsID)
	in := &github.RepositoryRelease{TagName: github.String(tag), Name: github.String(name), Body: github.String(bodyText), Draft: github.Bool(true)}
	if pub.o.Target != "" {
		in.TargetCommitish = github.String(pub.o.Target)
	}
	for attempt := 1; ; attempt++ {
		d, _, err := pub.c.Repositories.CreateRelease(ctx, pub.owner, pub.name, in)
		if err == nil {
			return d, nil
		}
		if attempt >= pub.c.MaxAttempts() || !retryable(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("release: creating draft %s: %w", tag, err)
		}
		wait := pub.c.Backoff(attempt + 1)
		pub.log.Printf("release: creating draft %s: %v; retrying in %s", tag, err, wait)
		if err := pub.c.Sleep(ctx, wait); err != nil {
			return nil, err
		}
		// The failed request may have created the draft after all.
		_, fam2, ferr := pub.family(ctx)
		if ferr != nil {
			return nil, ferr
		}
		if d := pub.thisBuildDraft(fam2); d != nil {
			return pub.reuseDraft(ctx, d, tag, name)
		}
	}
}

// thisBuildDraft returns the newest draft of this very build, or nil.
func (pub *publisher) thisBuildDraft(fam *Family) *github.RepositoryRelease {
	for _, d := range fam.Drafts {
		if pub.isThisBuild(d.GetBody()) {
			return d
		}
	}
	return nil
}

// cleanDrafts deletes the family's stale drafts other than keep.
func (pub *publisher) cleanDrafts(ctx context.Context, fam *Family, keep *github.RepositoryRelease) error {
	now := pub.o.Now()
	for _, d := range fam.Drafts {
		if d == keep {
			continue
		}
		age := now.Sub(d.GetCreatedAt().Time)
		what := "another build"
		if pub.isThisBuild(d.GetBody()) {
			what = "an extra draft of this build"
		}
		if age < pub.o.StaleDraftAge {
			pub.log.Printf("release: leaving draft %d (%s, %s, manifest hash %s, created %s ago): it may be another run's, still uploading",
				d.GetID(), d.GetTagName(), what, short(HashFromBody(d.GetBody())), age.Round(time.Second))
			continue
		}
		pub.log.Printf("release: deleting stale draft %d (%s, %s, created %s ago)", d.GetID(), d.GetTagName(), what, age.Round(time.Second))
		if _, err := pub.c.Repositories.DeleteRelease(ctx, pub.owner, pub.name, d.GetID()); err != nil && !githubapi.IsNotFound(err) {
			return fmt.Errorf("release: deleting stale draft %d: %w", d.GetID(), err)
		}
	}
	return nil
}

// reuseDraft updates a leftover draft of this build to tag and name.
func (pub *publisher) reuseDraft(ctx context.Context, d *github.RepositoryRelease, tag, name string) (*github.RepositoryRelease, error) {
	bodyText := body(pub.p.notes, pub.p.hash, pub.p.assetsID)
	pub.log.Printf("release: reusing leftover draft %d (%s) of this build", d.GetID(), d.GetTagName())
	if d.GetTagName() == tag && d.GetName() == name && d.GetBody() == bodyText {
		return d, nil
	}
	upd, _, err := pub.c.Repositories.EditRelease(ctx, pub.owner, pub.name, d.GetID(), &github.RepositoryRelease{
		TagName: github.String(tag), Name: github.String(name), Body: github.String(bodyText), Draft: github.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("release: updating draft %d: %w", d.GetID(), err)
	}
	return upd, nil
}
