package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

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
}

// plan is what a dist directory publishes.
type plan struct {
	m       *manifest.Manifest
	base    string
	hash    string
	notes   string
	assets  []Asset
	kernel  string
	arm64   bool
	maxRevs int
}

const markerPrefix = "<!-- wsl-modules-action manifest-hash: "

var markerRE = regexp.MustCompile(`<!-- wsl-modules-action manifest-hash: ([0-9a-f]{64}) -->`)

// HashFromBody returns the manifest hash recorded in a release body.
func HashFromBody(body string) string {
	if m := markerRE.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

func body(notes, hash string) string {
	return strings.TrimRight(notes, "\n") + "\n\n" + markerPrefix + hash + " -->\n"
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
	m, err := manifest.Read(filepath.Join(o.Dir, manifest.FileName))
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if m.Kernel.Tag == "" {
		return nil, fmt.Errorf("release: %s: kernel.tag is empty", filepath.Join(o.Dir, manifest.FileName))
	}
	if _, ok := ParseTagName(TagName(m.Kernel.Tag, m.Kernel.Arch, o.Prefix), o.Prefix); !ok {
		return nil, fmt.Errorf("release: %s: kernel.tag %q is not linux-msft-wsl-<a>.<b>.<c>.<d>", filepath.Join(o.Dir, manifest.FileName), m.Kernel.Tag)
	}
	if failed := m.Failed(); len(failed) > 0 {
		return nil, fmt.Errorf("release: %d module(s) failed to build (first: %s: %s); not publishing", len(failed), failed[0].Name, failed[0].Error)
	}
	assets, err := collectAssets(o.Dir, m, true)
	if err != nil {
		return nil, err
	}
	if err := checkSums(o.Dir, assets); err != nil {
		return nil, err
	}
	notes, err := os.ReadFile(filepath.Join(o.Dir, NotesFile))
	if err != nil {
		return nil, fmt.Errorf("release: %w (run PrepareDist first)", err)
	}
	return &plan{m: m, base: TagName(m.Kernel.Tag, m.Kernel.Arch, o.Prefix), hash: m.Hash(), notes: string(notes),
		assets: assets, kernel: m.Kernel.Tag, arm64: isARM64(m.Kernel.Arch), maxRevs: 5}, nil
}

// Publish publishes the dist directory as a release of o.Repo: nothing if
// the newest published release for the kernel tag and arch has the same
// manifest hash ("up to date"); else a draft (a leftover draft is reused)
// gets every asset (same-named assets replaced, broken uploads deleted and
// retried), each verified, and only then is it published. A published
// release is never changed: a different build of an already published
// kernel tag becomes a new revision, <tag>-r<N>, marked latest.
func Publish(ctx context.Context, c *githubapi.Client, o Options) (*Result, error) {
	p, err := makePlan(o)
	if err != nil {
		return nil, err
	}
	if o.VerifyLimit <= 0 {
		o.VerifyLimit = VerifyLimit
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
	pub := &publisher{c: c, o: o, p: p, owner: owner, name: name, log: o.Progress}
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
	fmt.Fprintf(w, "  notes: %s\n", filepath.Join(o.Dir, NotesFile))
	fmt.Fprintf(w, "  assets:\n")
	for _, a := range p.assets {
		fmt.Fprintf(w, "    %-24s %10s  sha256 %s\n", a.Name, progress.Bytes(a.Size), a.SHA256)
	}
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
}

// family lists the releases of the kernel tag and arch being published.
func (pub *publisher) family(ctx context.Context) (*Family, error) {
	x, err := List(ctx, pub.c, pub.o.Repo, pub.o.Prefix)
	if err != nil {
		return nil, err
	}
	arch := "x86_64"
	if pub.p.arm64 {
		arch = "arm64"
	}
	f, err := x.Family(ctx, pub.p.kernel, arch)
	return &f, err
}

func (pub *publisher) run(ctx context.Context, res *Result) (*Result, error) {
	done := pub.log.Step("publish %s to %s", pub.p.base, pub.o.Repo)
	defer done()
	fam, err := pub.family(ctx)
	if err != nil {
		return nil, err
	}
	rev := 1
	if fam.Newest != nil {
		if HashFromBody(fam.Newest.GetBody()) == pub.p.hash {
			res.Status, res.Tag, res.Name = StatusUpToDate, fam.Newest.GetTagName(), fam.Newest.GetName()
			res.ReleaseID, res.URL = fam.Newest.GetID(), fam.Newest.GetHTMLURL()
			pub.summary(res)
			return res, nil
		}
		rev = fam.MaxRev + 1
		res.Previous = fam.Newest.GetTagName()
		pub.log.Printf("release: %s is published with a different build (manifest hash %s); publishing revision %s",
			fam.Newest.GetTagName(), short(HashFromBody(fam.Newest.GetBody())), RevisionTag(pub.p.base, rev))
	}
	tag := RevisionTag(pub.p.base, rev)
	name := releaseName(pub.p.m, rev)
	bodyText := body(pub.p.notes, pub.p.hash)

	draft, err := pub.draft(ctx, fam, tag, name, bodyText)
	if err != nil {
		return nil, err
	}
	if err := pub.uploadAll(ctx, draft.GetID()); err != nil {
		return nil, err
	}
	var published *github.RepositoryRelease
	for i := 0; ; i++ {
		edit := &github.RepositoryRelease{TagName: github.String(tag), Name: github.String(name), Body: github.String(bodyText),
			Draft: github.Bool(false), MakeLatest: github.String("true")}
		if pub.o.Target != "" {
			edit.TargetCommitish = github.String(pub.o.Target)
		}
		published, _, err = pub.c.Repositories.EditRelease(ctx, pub.owner, pub.name, draft.GetID(), edit)
		if err == nil {
			break
		}
		// The tag is taken: a release published meanwhile, or a tag used
		// by an immutable release that was deleted. Use the next revision.
		if githubapi.IsValidation(err, "") && i < pub.p.maxRevs {
			pub.log.Printf("release: cannot publish as %s (%v); trying %s", tag, err, RevisionTag(pub.p.base, rev+1))
			rev++
			tag, name = RevisionTag(pub.p.base, rev), releaseName(pub.p.m, rev)
			continue
		}
		return nil, fmt.Errorf("release: publishing %s: %w", tag, err)
	}
	res.Status, res.Tag, res.Name = StatusPublished, published.GetTagName(), published.GetName()
	res.ReleaseID, res.URL = published.GetID(), published.GetHTMLURL()
	pub.summary(res)
	return res, nil
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

// draft returns the draft to fill: the newest leftover draft of the family
// (others are deleted), updated, or a new one.
func (pub *publisher) draft(ctx context.Context, fam *Family, tag, name, bodyText string) (*github.RepositoryRelease, error) {
	if len(fam.Drafts) > 0 {
		d := fam.Drafts[0]
		for _, extra := range fam.Drafts[1:] {
			pub.log.Printf("release: deleting extra leftover draft %d (%s)", extra.GetID(), extra.GetTagName())
			if _, err := pub.c.Repositories.DeleteRelease(ctx, pub.owner, pub.name, extra.GetID()); err != nil && !githubapi.IsNotFound(err) {
				return nil, fmt.Errorf("release: deleting leftover draft %d: %w", extra.GetID(), err)
			}
		}
		pub.log.Printf("release: reusing leftover draft %d (%s)", d.GetID(), d.GetTagName())
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
		fam2, ferr := pub.family(ctx)
		if ferr != nil {
			return nil, ferr
		}
		if len(fam2.Drafts) > 0 {
			return pub.draft(ctx, fam2, tag, name, bodyText)
		}
	}
}

// retryable reports whether an error is worth another attempt: network
// errors, 5xx responses, and 422 already_exists left by a broken upload.
func retryable(err error) bool {
	var ge *github.ErrorResponse
	if errors.As(err, &ge) && ge.Response != nil {
		return ge.Response.StatusCode >= 500 || githubapi.IsValidation(err, "already_exists")
	}
	var rl *githubapi.RateLimitError
	if errors.As(err, &rl) {
		return false
	}
	var ne net.Error
	var ve *verifyError
	return errors.As(err, &ne) || errors.As(err, &ve) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe")
}

type verifyError struct{ msg string }

func (e *verifyError) Error() string { return e.msg }

// remoteAsset is a release asset as listed, with the digest GitHub
// reports ("sha256:<hex>"), which go-github v66 does not decode.
type remoteAsset struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	State  string `json:"state"`
	Size   int64  `json:"size"`
	Digest string `json:"digest"`
}

func (pub *publisher) listAssets(ctx context.Context, id int64) ([]remoteAsset, error) {
	var all []remoteAsset
	for page := 1; ; {
		req, err := pub.c.NewRequest(http.MethodGet, fmt.Sprintf("repos/%s/%s/releases/%d/assets?per_page=100&page=%d", pub.owner, pub.name, id, page), nil)
		if err != nil {
			return nil, err
		}
		var batch []remoteAsset
		resp, err := pub.c.Do(ctx, req, &batch)
		if err != nil {
			return nil, fmt.Errorf("release: listing assets of release %d: %w", id, err)
		}
		all = append(all, batch...)
		if resp.NextPage == 0 {
			return all, nil
		}
		page = resp.NextPage
	}
}

func (pub *publisher) deleteAsset(ctx context.Context, a remoteAsset) error {
	if _, err := pub.c.Repositories.DeleteReleaseAsset(ctx, pub.owner, pub.name, a.ID); err != nil && !githubapi.IsNotFound(err) {
		return fmt.Errorf("release: deleting asset %s (%d): %w", a.Name, a.ID, err)
	}
	return nil
}

// uploadAll makes the draft's assets exactly the planned ones: same-named
// assets that are already uploaded with the same sha256 are kept, other
// same-named ones are replaced, unknown ones deleted.
func (pub *publisher) uploadAll(ctx context.Context, id int64) error {
	existing, err := pub.listAssets(ctx, id)
	if err != nil {
		return err
	}
	planned := map[string]bool{}
	for _, a := range pub.p.assets {
		planned[a.Name] = true
	}
	byName := map[string][]remoteAsset{}
	for _, r := range existing {
		if !planned[r.Name] {
			pub.log.Printf("release: deleting asset %s from the draft (not in this build)", r.Name)
			if err := pub.deleteAsset(ctx, r); err != nil {
				return err
			}
			continue
		}
		byName[r.Name] = append(byName[r.Name], r)
	}
	for _, a := range pub.p.assets {
		have := byName[a.Name]
		if len(have) == 1 && have[0].State == "uploaded" && have[0].Size == a.Size && have[0].Digest == "sha256:"+a.SHA256 {
			pub.log.Printf("release: %s already uploaded (sha256 matches)", a.Name)
			continue
		}
		for _, r := range have {
			pub.log.Printf("release: replacing asset %s (%s, %d bytes)", a.Name, r.State, r.Size)
			if err := pub.deleteAsset(ctx, r); err != nil {
				return err
			}
		}
		if err := pub.upload(ctx, id, a); err != nil {
			return err
		}
	}
	// Check the final set before publishing.
	final, err := pub.listAssets(ctx, id)
	if err != nil {
		return err
	}
	count := map[string]int{}
	for _, r := range final {
		count[r.Name]++
		if !planned[r.Name] {
			return fmt.Errorf("release: draft %d has unexpected asset %s", id, r.Name)
		}
	}
	for _, a := range pub.p.assets {
		if count[a.Name] != 1 {
			return fmt.Errorf("release: draft %d has %d copies of %s, want 1", id, count[a.Name], a.Name)
		}
	}
	for _, r := range final {
		for _, a := range pub.p.assets {
			if r.Name == a.Name && (r.State != "uploaded" || r.Size != a.Size) {
				return fmt.Errorf("release: draft %d: asset %s is %s with %d bytes, want uploaded with %d", id, r.Name, r.State, r.Size, a.Size)
			}
		}
	}
	return nil
}

// upload uploads one asset and verifies it; a failed attempt is retried
// with backoff after deleting whatever the failure left under that name.
func (pub *publisher) upload(ctx context.Context, id int64, a Asset) error {
	for attempt := 1; ; attempt++ {
		err := pub.uploadOnce(ctx, id, a)
		if err == nil {
			return nil
		}
		if attempt >= pub.c.MaxAttempts() || !retryable(err) || ctx.Err() != nil {
			return fmt.Errorf("release: uploading %s: %w", a.Name, err)
		}
		wait := pub.c.Backoff(attempt + 1)
		pub.log.Printf("release: uploading %s failed (%v); retrying in %s (attempt %d of %d)", a.Name, err, wait, attempt+1, pub.c.MaxAttempts())
		if err := pub.c.Sleep(ctx, wait); err != nil {
			return err
		}
		have, err := pub.listAssets(ctx, id)
		if err != nil {
			return err
		}
		for _, r := range have {
			if r.Name == a.Name {
				pub.log.Printf("release: deleting broken asset %s (%s, %d bytes)", r.Name, r.State, r.Size)
				if err := pub.deleteAsset(ctx, r); err != nil {
					return err
				}
			}
		}
	}
}

func mediaType(name string) string {
	switch {
	case strings.HasSuffix(name, ".json"):
		return "application/json"
	case strings.HasSuffix(name, ".txt"), name == SumsFile:
		return "text/plain"
	case strings.HasSuffix(name, ".gz"):
		return "application/gzip"
	case strings.HasSuffix(name, ".zst"):
		return "application/zstd"
	}
	return "application/octet-stream"
}

func (pub *publisher) uploadOnce(ctx context.Context, id int64, a Asset) error {
	f, err := os.Open(a.Path)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	defer f.Close()
	done := pub.log.Step("upload %s (%s)", a.Name, progress.Bytes(a.Size))
	defer done()
	got, _, err := pub.c.Repositories.UploadReleaseAsset(ctx, pub.owner, pub.name, id, &github.UploadOptions{Name: a.Name, MediaType: mediaType(a.Name)}, f)
	if err != nil {
		return err
	}
	if got.GetName() != a.Name {
		return &verifyError{fmt.Sprintf("uploaded as %q (GitHub renamed it); asset names must be plain", got.GetName())}
	}
	if got.GetSize() != int(a.Size) || got.GetState() != "uploaded" {
		return &verifyError{fmt.Sprintf("GitHub reports %s with %d bytes, want uploaded with %d", got.GetState(), got.GetSize(), a.Size)}
	}
	if a.Size >= pub.o.VerifyLimit {
		return nil
	}
	rc, _, err := pub.c.Repositories.DownloadReleaseAsset(ctx, pub.owner, pub.name, got.GetID(), pub.c.HTTP)
	if err != nil {
		return fmt.Errorf("downloading it back: %w", err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return fmt.Errorf("downloading it back: %w", err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != a.SHA256 {
		return &verifyError{fmt.Sprintf("downloaded back with sha256 %s, want %s", sum, a.SHA256)}
	}
	return nil
}
