package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Result statuses.
const (
	StatusPublished = "published"
	StatusUpToDate  = "up to date"
	StatusDryRun    = "dry run"
)

// StaleDraftAge is the default age after which a draft of another build
// counts as abandoned and is deleted; a younger one may be another run's,
// still uploading, and is left alone.
const StaleDraftAge = 24 * time.Hour

// Options configure Publish.
type Options struct {
	// Repo is the target repository, "owner/name".
	Repo string
	// Dir is the dist directory (see PrepareDist).
	Dir string
	// Prefix is the release tag prefix (default DefaultPrefix).
	Prefix string
	// DryRun makes no API request: it prints what would be published.
	DryRun bool
	// Out receives the dry-run listing and the final summary (may be nil).
	Out io.Writer
	// Progress receives steps, uploads and retries.
	Progress *progress.Reporter
	// Target is the commitish the release tag is created at when
	// published (default: the repository's default branch).
	Target string
	// VerifyLimit: assets smaller than this are downloaded back to check
	// their sha256 (default VerifyLimit, 16 MiB).
	VerifyLimit int64
	// StaleDraftAge: drafts of the family that are not this build and are
	// older than this are deleted (default StaleDraftAge).
	StaleDraftAge time.Duration
	// Now is the clock for draft ages (default time.Now).
	Now func() time.Time
}

// Result describes what Publish did.
type Result struct {
	// Status is StatusPublished, StatusUpToDate or StatusDryRun.
	Status string
	// Tag and Name of the release (for a dry run, the base tag: a later
	// revision is chosen at publish time if needed).
	Tag, Name string
	ReleaseID int64
	URL       string
	// Hash is the manifest hash recorded in the release body.
	Hash   string
	Assets []Asset
	// Previous is the newest earlier published revision, when a changed
	// build was published under a new revision tag.
	Previous string
	// MakeLatest is the make_latest value the release was published with
	// ("true" when it is the highest release of the family that holds
	// the repository's Latest, else "false").
	MakeLatest string
}

// plan is what a dist directory publishes.
type plan struct {
	m    *manifest.Manifest
	base string
	hash string
	// assetsID is the sha256 of the planned SHA256SUMS: two plans with the
	// same assetsID publish the same bytes.
	assetsID string
	notes    string
	assets   []Asset
	kernel   string
	arm64    bool
	maxRevs  int
}

const (
	markerPrefix       = "<!-- wsl-modules-action manifest-hash: "
	assetsMarkerPrefix = "<!-- wsl-modules-action assets-sha256: "
)

var (
	markerRE       = regexp.MustCompile(`<!-- wsl-modules-action manifest-hash: ([0-9a-f]{64}) -->`)
	assetsMarkerRE = regexp.MustCompile(`<!-- wsl-modules-action assets-sha256: ([0-9a-f]{64}) -->`)
)

// HashFromBody returns the manifest hash recorded in a release body.
func HashFromBody(body string) string {
	if m := markerRE.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// AssetsFromBody returns the assets identity (sha256 of SHA256SUMS)
// recorded in a release body ("" for bodies written before it was).
func AssetsFromBody(body string) string {
	if m := assetsMarkerRE.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// body is the release body: the notes, then hidden markers with the
// manifest hash (which decides "up to date") and the assets identity
// (which decides whether a draft holds this very build).
func body(notes, hash, assetsID string) string {
	s := strings.TrimRight(notes, "\n") + "\n\n" + markerPrefix + hash + " -->\n"
	if assetsID != "" {
		s += assetsMarkerPrefix + assetsID + " -->\n"
	}
	return s
}

func releaseName(m *manifest.Manifest, rev int) string {
	s := m.Kernel.Tag
	var extra []string
	if isARM64(m.Kernel.Arch) {
		extra = append(extra, "arm64")
	}
	if rev > 1 {
		extra = append(extra, fmt.Sprintf("r%d", rev))
	}
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, ", ") + ")"
	}
	return s
}

func makePlan(o Options) (*plan, error) {
	if err := CheckPrefix(o.Prefix); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	m, mpath, err := readDistManifest(o.Dir)
	if err != nil {
		return nil, err
	}
	if _, ok := ParseTagName(TagName(m.Kernel.Tag, m.Kernel.Arch, o.Prefix), o.Prefix); !ok {
		return nil, fmt.Errorf("release: %s: kernel.tag %q is not linux-msft-wsl-<a>.<b>.<c>.<d>", mpath, m.Kernel.Tag)
	}
	if failed := m.Failed(); len(failed) > 0 {
		return nil, fmt.Errorf("release: %d module(s) failed to build (first: %s: %s); not publishing", len(failed), failed[0].Name, failed[0].Error)
	}
	if missing := unsourcedModules(m); len(missing) > 0 && !o.DryRun {
		return nil, fmt.Errorf("release: %s: path module(s) %s have no source archive (PrepareOptions.ModuleSources): "+
			"a release must carry the source of every GPL module it ships; not publishing", mpath, strings.Join(missing, ", "))
	}
	assets, err := collectAssets(o.Dir, m, true)
	if err != nil {
		return nil, err
	}
	if err := checkSums(o.Dir, assets); err != nil {
		return nil, err
	}
	sums, err := os.ReadFile(filepath.Join(o.Dir, SumsFile))
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	notes, err := os.ReadFile(filepath.Join(o.Dir, NotesFile))
	if err != nil {
		return nil, fmt.Errorf("release: %w (run PrepareDist first)", err)
	}
	id := sha256.Sum256(sums)
	return &plan{m: m, base: TagName(m.Kernel.Tag, m.Kernel.Arch, o.Prefix), hash: m.Hash(), assetsID: hex.EncodeToString(id[:]),
		notes: string(notes), assets: assets, kernel: m.Kernel.Tag, arm64: isARM64(m.Kernel.Arch), maxRevs: 5}, nil
}

// unsourcedModules lists the included path: modules whose source is not
// attached (Module.SourceArchive unset): they exist nowhere else.
func unsourcedModules(m *manifest.Manifest) []string {
	var out []string
	for _, x := range m.Modules {
		if x.Status == manifest.StatusOK && x.Source.Kind == "path" && x.SourceArchive == "" {
			out = append(out, x.Name)
		}
	}
	return out
}

// Publish publishes the dist directory as a release of o.Repo: nothing if
// the newest published release for the kernel tag and arch has the same
// manifest hash ("up to date"); else a draft of this very build (a
// leftover one is reused; other builds' drafts are left to their runs)
// gets every asset (broken or different same-named ones replaced), each
// verified; just before publishing, the draft is checked to still be a
// draft holding exactly the planned assets (GitHub's sha256 digests), and
// after publishing the release is read back and verified. A published
// release is never changed: a different build of an already published
// kernel tag becomes a new revision, <tag>-r<N>. Only the highest release
// of the family that holds the repository's Latest (see
// Index.LatestArch) is published with make_latest true.
func Publish(ctx context.Context, c *githubapi.Client, o Options) (*Result, error) {
	p, err := makePlan(o)
	if err != nil {
		return nil, err
	}
	if o.VerifyLimit <= 0 {
		o.VerifyLimit = VerifyLimit
	}
	if o.StaleDraftAge <= 0 {
		o.StaleDraftAge = StaleDraftAge
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	res := &Result{Tag: p.base, Name: releaseName(p.m, 1), Hash: p.hash, Assets: p.assets}
	if o.DryRun {
		res.Status = StatusDryRun
		printPlan(o.Out, o, p, res)
		return res, nil
	}
	if c == nil {
		return nil, errors.New("release: no GitHub client")
	}
	if !c.HasToken() {
		return nil, errors.New("release: publishing needs a token (GITHUB_TOKEN, INPUT_TOKEN or --token)")
	}
	owner, name, err := githubapi.SplitRepo(o.Repo)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	pub := &publisher{c: c, o: o, p: p, owner: owner, name: name, log: o.Progress, mine: map[int64]bool{}}
	return pub.run(ctx, res)
}

func printPlan(w io.Writer, o Options, p *plan, res *Result) {
	if w == nil {
		return
	}
	fmt.Fprintf(w, "dry run: would publish to %s (nothing was sent)\n", orNone(o.Repo))
	fmt.Fprintf(w, "  tag:   %s (or %s-r<N> if a different build of it is already published)\n", res.Tag, res.Tag)
	fmt.Fprintf(w, "  name:  %s\n", res.Name)
	fmt.Fprintf(w, "  manifest hash: %s\n", p.hash)
	fmt.Fprintf(w, "  latest: only if it is the highest kernel of the %s releases\n", latestFamilyText(p.arm64))
	fmt.Fprintf(w, "  notes: %s\n", filepath.Join(o.Dir, NotesFile))
	if missing := unsourcedModules(p.m); len(missing) > 0 {
		fmt.Fprintf(w, "  warning: publishing would be refused: path module(s) %s have no source archive\n", strings.Join(missing, ", "))
	}
	fmt.Fprintf(w, "  assets:\n")
	for _, a := range p.assets {
		fmt.Fprintf(w, "    %-24s %10s  sha256 %s\n", a.Name, progress.Bytes(a.Size), a.SHA256)
	}
}

func latestFamilyText(arm64 bool) string {
	if arm64 {
		return "arm64 (and only while the repository has no x86_64 release)"
	}
	return "x86_64"
}

func orNone(s string) string {
	if s == "" {
		return "(no repository given)"
	}
	return s
}

type publisher struct {
	c           *githubapi.Client
	o           Options
	p           *plan
	owner, name string
	log         *progress.Reporter
	// mine holds the IDs of the assets this run uploaded and verified.
	mine map[int64]bool
}

// arch is the arch being published, as the index names it.
func (pub *publisher) arch() string {
	if pub.p.arm64 {
		return "arm64"
	}
	return "x86_64"
}

// family lists the releases (read afresh) and the family of the kernel
// tag and arch being published.
func (pub *publisher) family(ctx context.Context) (*Index, *Family, error) {
	x, err := List(ctx, pub.c, pub.o.Repo, pub.o.Prefix)
	if err != nil {
		return nil, nil, err
	}
	f, err := x.Family(ctx, pub.p.kernel, pub.arch())
	if err != nil {
		return nil, nil, err
	}
	return x, &f, nil
}

func (pub *publisher) run(ctx context.Context, res *Result) (*Result, error) {
	done := pub.log.Step("publish %s to %s", pub.p.base, pub.o.Repo)
	defer done()
	x, fam, err := pub.family(ctx)
	if err != nil {
		return nil, err
	}
	if fam.Newest != nil && HashFromBody(fam.Newest.GetBody()) == pub.p.hash {
		return pub.upToDate(res, fam.Newest), nil
	}
	rev := 1
	if fam.Newest != nil {
		rev = fam.MaxRev + 1
		res.Previous = fam.Newest.GetTagName()
		pub.log.Printf("release: %s is published with a different build (manifest hash %s); publishing revision %s",
			fam.Newest.GetTagName(), short(HashFromBody(fam.Newest.GetBody())), RevisionTag(pub.p.base, rev))
	}
	draft, err := pub.draft(ctx, fam, RevisionTag(pub.p.base, rev), releaseName(pub.p.m, rev))
	if err != nil {
		return nil, err
	}
	if err := pub.uploadAll(ctx, draft.GetID()); err != nil {
		err = pub.stillDraft(ctx, draft.GetID(), err)
		if same := pub.publishedMeanwhile(ctx, err); same != nil {
			return pub.upToDate(res, same), nil
		}
		return nil, err
	}
	published, same, err := pub.publish(ctx, x, draft.GetID(), rev, res)
	if err != nil {
		return nil, err
	}
	if same != nil {
		return pub.upToDate(res, same), nil
	}
	if err := pub.verifyPublished(ctx, published); err != nil {
		return nil, err
	}
	pub.fixLatest(ctx)
	res.Status, res.Tag, res.Name = StatusPublished, published.GetTagName(), published.GetName()
	res.ReleaseID, res.URL = published.GetID(), published.GetHTMLURL()
	pub.summary(res)
	return res, nil
}

func (pub *publisher) upToDate(res *Result, rel *github.RepositoryRelease) *Result {
	res.Status, res.Tag, res.Name = StatusUpToDate, rel.GetTagName(), rel.GetName()
	res.ReleaseID, res.URL, res.Previous = rel.GetID(), rel.GetHTMLURL(), ""
	pub.summary(res)
	return res
}

// publish turns the draft into the release rev (the next free revision
// if its tag is taken), each attempt after checking the draft. It returns
// the published release, or (when a concurrent run published this build
// first) that run's release as same.
func (pub *publisher) publish(ctx context.Context, x *Index, id int64, rev int, res *Result) (published, same *github.RepositoryRelease, err error) {
	bodyText := body(pub.p.notes, pub.p.hash, pub.p.assetsID)
	for i := 0; ; i++ {
		tag, name := RevisionTag(pub.p.base, rev), releaseName(pub.p.m, rev)
		if err := pub.checkDraft(ctx, id); err != nil {
			if same := pub.publishedMeanwhile(ctx, err); same != nil {
				return nil, same, nil
			}
			return nil, nil, err
		}
		latest, err := pub.makeLatest(ctx, x, rev)
		if err != nil {
			return nil, nil, err
		}
		edit := &github.RepositoryRelease{TagName: github.String(tag), Name: github.String(name), Body: github.String(bodyText),
			Draft: github.Bool(false), MakeLatest: github.String(latest)}
		if pub.o.Target != "" {
			edit.TargetCommitish = github.String(pub.o.Target)
		}
		published, _, err = pub.c.Repositories.EditRelease(ctx, pub.owner, pub.name, id, edit)
		if err == nil {
			res.MakeLatest = latest
			return published, nil, nil
		}
		// The tag is taken: a release published meanwhile (by a run of
		// another build, or of this one), or a tag used by an immutable
		// release that was deleted. Use the next revision.
		if !githubapi.IsValidation(err, "") || i >= pub.p.maxRevs {
			return nil, nil, fmt.Errorf("release: publishing %s: %w", tag, err)
		}
		x2, fam, ferr := pub.family(ctx)
		if ferr != nil {
			return nil, nil, ferr
		}
		if fam.Newest != nil && HashFromBody(fam.Newest.GetBody()) == pub.p.hash {
			pub.log.Printf("release: %s was published meanwhile with this build; leaving draft %d (a later publish deletes it once stale)",
				fam.Newest.GetTagName(), id)
			return nil, fam.Newest, nil
		}
		x, rev = x2, max(rev+1, fam.MaxRev+1)
		if fam.Newest != nil {
			res.Previous = fam.Newest.GetTagName()
		}
		pub.log.Printf("release: cannot publish as %s (%v); trying %s", tag, err, RevisionTag(pub.p.base, rev))
	}
}

// publishedMeanwhile returns the family's newest published release if
// err says the draft was published meanwhile (errNotDraft) and that
// release holds this build's inputs: another run of this build published
// it first.
func (pub *publisher) publishedMeanwhile(ctx context.Context, err error) *github.RepositoryRelease {
	if !errors.Is(err, errNotDraft) {
		return nil
	}
	_, fam, ferr := pub.family(ctx)
	if ferr != nil || fam.Newest == nil || HashFromBody(fam.Newest.GetBody()) != pub.p.hash {
		return nil
	}
	pub.log.Printf("release: %v; %s holds this build, published by another run", err, fam.Newest.GetTagName())
	return fam.Newest
}

func (pub *publisher) summary(res *Result) {
	if pub.o.Out == nil {
		return
	}
	switch res.Status {
	case StatusUpToDate:
		fmt.Fprintf(pub.o.Out, "up to date: %s (%s) already has this build (manifest hash %s)\n", res.Tag, res.URL, short(res.Hash))
	default:
		fmt.Fprintf(pub.o.Out, "published %s: %s\n", res.Tag, res.URL)
		if res.Previous != "" {
			fmt.Fprintf(pub.o.Out, "  supersedes %s (a different build of the same kernel tag)\n", res.Previous)
		}
		for _, a := range res.Assets {
			fmt.Fprintf(pub.o.Out, "  %-24s %10s  sha256 %s\n", a.Name, progress.Bytes(a.Size), a.SHA256)
		}
	}
}
