// Package fetch answers which kernel tags to build and fetches sources:
// the tags of the WSL kernel repository (parsed and ordered by version),
// the selection of tags for a `track` setting, the kernel tarball of a tag
// (streamed and unpacked while downloading, atomically), and module
// sources (git ref, URL with sha256, local path), each pinned in a
// manifest.Source.
package fetch

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/kver"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// DefaultRepo is the WSL kernel repository.
const DefaultRepo = "microsoft/WSL2-Linux-Kernel"

// Tag is a parsed kernel tag.
type Tag struct {
	Name    string
	Version kver.Version
	// Commit is the commit the tag points to, when the listing says it.
	Commit string
}

// sortTags orders tags by version, oldest first.
func sortTags(tags []Tag) {
	sort.SliceStable(tags, func(i, j int) bool { return tags[i].Version.Compare(tags[j].Version) < 0 })
}

// parseTags keeps the tags that parse, sorted by version, and reports the
// others on log.
func parseTags(names, commits []string, repo string, log *progress.Reporter) []Tag {
	var out []Tag
	skipped := 0
	for i, n := range names {
		v, ok := kver.Parse(n)
		if !ok {
			skipped++
			log.Printf("debug: %s: ignoring tag %q (not linux-msft-wsl-<a>.<b>.<c>.<d>)", repo, n)
			continue
		}
		out = append(out, Tag{Name: n, Version: v, Commit: commits[i]})
	}
	sortTags(out)
	return out
}

// ListTags lists the kernel tags of repo ("owner/name") through the
// paginated tags endpoint (100 per page), sorted by version, oldest first.
// Tags that do not parse are ignored and reported on log.
func ListTags(ctx context.Context, c *githubapi.Client, repo string, log *progress.Reporter) ([]Tag, error) {
	owner, name, err := githubapi.SplitRepo(repo)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	var names, commits []string
	opts := &github.ListOptions{PerPage: 100}
	for {
		page, resp, err := c.Repositories.ListTags(ctx, owner, name, opts)
		if err != nil {
			return nil, fmt.Errorf("fetch: listing tags of %s: %w", repo, err)
		}
		for _, t := range page {
			names = append(names, t.GetName())
			commits = append(commits, t.GetCommit().GetSHA())
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	return parseTags(names, commits, repo, log), nil
}

// ListTagRefs lists the kernel tags of repo with one request, through the
// git matching-refs endpoint (refs/tags/linux-msft-wsl-*, which GitHub
// does not paginate), sorted by version. Commit is the ref's object, which
// is the tag object rather than the commit for annotated tags.
func ListTagRefs(ctx context.Context, c *githubapi.Client, repo string, log *progress.Reporter) ([]Tag, error) {
	owner, name, err := githubapi.SplitRepo(repo)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	refs, _, err := c.Git.ListMatchingRefs(ctx, owner, name, &github.ReferenceListOptions{Ref: "tags/" + kver.TagPrefix})
	if err != nil {
		return nil, fmt.Errorf("fetch: listing tag refs of %s: %w", repo, err)
	}
	var names, commits []string
	for _, r := range refs {
		n, ok := strings.CutPrefix(r.GetRef(), "refs/tags/")
		if !ok {
			continue
		}
		names = append(names, n)
		sha := ""
		if r.GetObject().GetType() == "commit" {
			sha = r.GetObject().GetSHA()
		}
		commits = append(commits, sha)
	}
	return parseTags(names, commits, repo, log), nil
}
