package release

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-github/v66/github"
)

// errNotDraft: the release to publish is no longer a draft.
var errNotDraft = errors.New("no longer a draft")

// remoteRelease is a release as read back, with its assets' digests.
type remoteRelease struct {
	ID      int64         `json:"id"`
	TagName string        `json:"tag_name"`
	Body    string        `json:"body"`
	Draft   bool          `json:"draft"`
	Assets  []remoteAsset `json:"assets"`
}

func (pub *publisher) getRelease(ctx context.Context, id int64) (*remoteRelease, error) {
	req, err := pub.c.NewRequest(http.MethodGet, fmt.Sprintf("repos/%s/%s/releases/%d", pub.owner, pub.name, id), nil)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	var rel remoteRelease
	if _, err := pub.c.Do(ctx, req, &rel); err != nil {
		return nil, fmt.Errorf("release: reading release %d: %w", id, err)
	}
	return &rel, nil
}

// checkDraft is the check just before publishing: the release is still a
// draft of this very build, and holds exactly one complete copy of every
// planned asset, each with GitHub's sha256 digest equal to the planned
// one. Its error wraps errNotDraft when the release was published (or
// deleted and replaced) meanwhile.
func (pub *publisher) checkDraft(ctx context.Context, id int64) error {
	rel, err := pub.getRelease(ctx, id)
	if err != nil {
		return err
	}
	if !rel.Draft {
		return fmt.Errorf("release: draft %d (%s): %w", id, rel.TagName, errNotDraft)
	}
	if !pub.isThisBuild(rel.Body) {
		return fmt.Errorf("release: draft %d changed meanwhile: it now carries manifest hash %s, assets %s; not publishing it",
			id, short(HashFromBody(rel.Body)), short(AssetsFromBody(rel.Body)))
	}
	assets, err := pub.listAssets(ctx, id)
	if err != nil {
		return err
	}
	if err := pub.checkAssets(assets); err != nil {
		return fmt.Errorf("release: draft %d: %w; not publishing it", id, err)
	}
	return nil
}

// checkAssets checks a release's assets are exactly the planned ones,
// each uploaded once with the planned size and sha256 digest. An asset
// without a digest (a GitHub that does not report them) passes only if
// this run uploaded and verified it.
func (pub *publisher) checkAssets(assets []remoteAsset) error {
	planned := map[string]Asset{}
	for _, a := range pub.p.assets {
		planned[a.Name] = a
	}
	seen := map[string]int{}
	var problems []string
	for _, r := range assets {
		seen[r.Name]++
		a, ok := planned[r.Name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("unexpected asset %s", r.Name))
		case r.State != "uploaded" || r.Size != a.Size:
			problems = append(problems, fmt.Sprintf("%s is %s with %d bytes, want uploaded with %d", r.Name, r.State, r.Size, a.Size))
		case r.Digest == "" && !pub.mine[r.ID]:
			problems = append(problems, fmt.Sprintf("%s has no digest and was not uploaded by this run", r.Name))
		case r.Digest != "" && r.Digest != "sha256:"+a.SHA256:
			problems = append(problems, fmt.Sprintf("%s has digest %s, want sha256:%s", r.Name, r.Digest, a.SHA256))
		}
	}
	for _, a := range pub.p.assets {
		if seen[a.Name] != 1 {
			problems = append(problems, fmt.Sprintf("%d copies of %s, want 1", seen[a.Name], a.Name))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// verifyPublished reads the published release back: it must be public
// under its tag, carry this build's markers and exactly the planned
// assets. If not, it is turned back into a draft where GitHub allows it
// (not for immutable releases), and the error says what is wrong.
func (pub *publisher) verifyPublished(ctx context.Context, published *github.RepositoryRelease) error {
	id, tag := published.GetID(), published.GetTagName()
	rel, err := pub.getRelease(ctx, id)
	if err != nil {
		return err
	}
	var problem error
	switch {
	case rel.Draft:
		problem = errors.New("it is still a draft")
	case rel.TagName != tag:
		problem = fmt.Errorf("its tag is %s", rel.TagName)
	case !pub.isThisBuild(rel.Body):
		problem = fmt.Errorf("its body carries manifest hash %s, assets %s", short(HashFromBody(rel.Body)), short(AssetsFromBody(rel.Body)))
	default:
		assets, err := pub.listAssets(ctx, id)
		if err != nil {
			return err
		}
		problem = pub.checkAssets(assets)
	}
	if problem == nil {
		return nil
	}
	hidden := ""
	if _, _, err := pub.c.Repositories.EditRelease(ctx, pub.owner, pub.name, id, &github.RepositoryRelease{Draft: github.Bool(true)}); err == nil {
		hidden = "; it was turned back into a draft"
	}
	return fmt.Errorf("release: published %s (release %d) does not hold this build: %v%s", tag, id, problem, hidden)
}
