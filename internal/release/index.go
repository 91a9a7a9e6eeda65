package release

import (
	"cmp"
	"context"
	"fmt"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/kver"
)

// Index is the releases of a target repository that the naming rule
// (TagName, RevisionTag) recognises, listed once: it answers what was
// already released (track all-new), whether a build is up to date, and
// which drafts and revisions a publish finds.
type Index struct {
	// Repo and Prefix are what List was given.
	Repo, Prefix string
	// Entries are the recognised releases read so far, drafts included,
	// in the order GitHub lists them (newest first).
	Entries []Entry

	c           *githubapi.Client
	owner, name string
	next        int // next page to read; 0 when all were read
}

// Entry is one recognised release.
type Entry struct {
	Info    TagInfo
	Release *github.RepositoryRelease
}

// List starts an index of repo's releases named with prefix ("" means
// DefaultPrefix): it reads the first page (100 releases, newest first);
// the methods read further pages only when their answer needs them, so a
// run with nothing new costs one request.
func List(ctx context.Context, c *githubapi.Client, repo, prefix string) (*Index, error) {
	owner, name, err := githubapi.SplitRepo(repo)
	if err != nil {
		return nil, fmt.Errorf("release: target %w", err)
	}
	x := &Index{Repo: repo, Prefix: prefix, c: c, owner: owner, name: name, next: 1}
	if err := x.readPage(ctx); err != nil {
		return nil, err
	}
	return x, nil
}

// readPage reads the next page of releases.
func (x *Index) readPage(ctx context.Context) error {
	rels, resp, err := x.c.Repositories.ListReleases(ctx, x.owner, x.name, &github.ListOptions{PerPage: 100, Page: x.next})
	if err != nil {
		return fmt.Errorf("release: listing releases of %s: %w", x.Repo, err)
	}
	for _, r := range rels {
		if info, ok := ParseTagName(r.GetTagName(), x.Prefix); ok {
			x.Entries = append(x.Entries, Entry{Info: info, Release: r})
		}
	}
	x.next = resp.NextPage
	return nil
}

// readAll reads the pages not read yet.
func (x *Index) readAll(ctx context.Context) error {
	for x.next != 0 {
		if err := x.readPage(ctx); err != nil {
			return err
		}
	}
	return nil
}

// NewestKernel returns the newest kernel tag with a published (non-draft)
// release for arch, any revision, and that release's tag; "" if none.
// Releases are listed newest first, so it reads pages only until one
// holds a release of ours for arch.
func (x *Index) NewestKernel(ctx context.Context, arch string) (kernelTag, releaseTag string, err error) {
	for {
		var best kver.Version
		for _, e := range x.Entries {
			if e.Release.GetDraft() || !e.Info.MatchesArch(arch) {
				continue
			}
			v, ok := kver.Parse(e.Info.KernelTag)
			if ok && (kernelTag == "" || v.Compare(best) > 0) {
				best, kernelTag, releaseTag = v, e.Info.KernelTag, e.Release.GetTagName()
			}
		}
		if kernelTag != "" || x.next == 0 {
			return kernelTag, releaseTag, nil
		}
		if err := x.readPage(ctx); err != nil {
			return "", "", err
		}
	}
}

// Family is the releases of one (kernel tag, arch).
type Family struct {
	// Published are the published revisions and Drafts the drafts, both
	// newest first as listed.
	Published, Drafts []*github.RepositoryRelease
	// Newest is the published release with the highest revision, MaxRev
	// that revision (0 when nothing is published).
	Newest *github.RepositoryRelease
	MaxRev int
}

// Family returns the releases of kernelTag for arch (reading every page).
func (x *Index) Family(ctx context.Context, kernelTag, arch string) (Family, error) {
	var f Family
	if err := x.readAll(ctx); err != nil {
		return f, err
	}
	for _, e := range x.Entries {
		if e.Info.KernelTag != kernelTag || !e.Info.MatchesArch(arch) {
			continue
		}
		if e.Release.GetDraft() {
			f.Drafts = append(f.Drafts, e.Release)
			continue
		}
		f.Published = append(f.Published, e.Release)
		if e.Info.Revision > f.MaxRev {
			f.MaxRev, f.Newest = e.Info.Revision, e.Release
		}
	}
	return f, nil
}

// compareInfo orders releases of one arch by kernel version, then
// revision: the higher one is the newer build of the newer kernel.
func compareInfo(a, b TagInfo) int {
	va, _ := kver.Parse(a.KernelTag)
	vb, _ := kver.Parse(b.KernelTag)
	if c := va.Compare(vb); c != 0 {
		return c
	}
	return cmp.Compare(a.Revision, b.Revision)
}

// Highest returns the published, non-prerelease release of arch with the
// highest kernel version and, for that kernel, the highest revision
// (reading every page); nil if arch has none. It is the release that
// should be the arch's "Latest" (see LatestArch).
func (x *Index) Highest(ctx context.Context, arch string) (*Entry, error) {
	if err := x.readAll(ctx); err != nil {
		return nil, err
	}
	var best *Entry
	for i := range x.Entries {
		e := &x.Entries[i]
		if e.Release.GetDraft() || e.Release.GetPrerelease() || !e.Info.MatchesArch(arch) {
			continue
		}
		if best == nil || compareInfo(e.Info, best.Info) > 0 {
			best = e
		}
	}
	return best, nil
}

// LatestArch returns the arch whose releases hold the repository's single
// "Latest" (GitHub has one per repository, not one per arch): x86_64,
// unless the repository has no published x86_64 release of ours, then
// arm64. publishing is the arch of a release about to be published, which
// counts as published ("" for none; then a repository without any x86_64
// release answers arm64). So /releases/latest/download/bzImage
// keeps working once an x86_64 release exists, and a repository that only
// publishes arm64 still gets a Latest.
func (x *Index) LatestArch(ctx context.Context, publishing string) (string, error) {
	if publishing != "" && !isARM64(publishing) {
		return "x86_64", nil
	}
	h, err := x.Highest(ctx, "x86_64")
	if err != nil {
		return "", err
	}
	if h != nil {
		return "x86_64", nil
	}
	return "arm64", nil
}
