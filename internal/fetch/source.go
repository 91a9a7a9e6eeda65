package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kver"

	"github.com/wsl-modules/wsl-modules-action/internal/archive"
	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// Fetcher downloads sources. Client is needed for GitHub tarballs and is
// used (its HTTP client, with retries) for URL downloads.
type Fetcher struct {
	Client *githubapi.Client
	// Progress receives steps and byte counters (bytes, rate, ETA).
	Progress *progress.Reporter
	// Force replaces existing destination directories.
	Force bool
	// Git is the git program (default "git").
	Git string
	// GitHubTarballs fetches git sources hosted on the GitHub server
	// (GITHUB_SERVER_URL) through the tarball API instead of git, pinning
	// the commit the ref resolves to.
	GitHubTarballs bool
	// MaxDownload bounds the size of a url source's archive (default
	// DefaultMaxDownload); the unpacked tree is bounded by
	// DefaultMaxUnpacked.
	MaxDownload int64
	// GitLowSpeedTime is how many seconds a git transfer may stay under
	// safeenv.GitLowSpeedLimit bytes per second before git aborts it
	// (default safeenv.GitLowSpeedTime, or GIT_HTTP_LOW_SPEED_TIME).
	GitLowSpeedTime int
}

// Limits of url module sources: the downloaded archive, and its unpacked
// tree (tar stream and file sizes, archive.Options.MaxBytes).
const (
	DefaultMaxDownload = 1 << 30
	DefaultMaxUnpacked = 8 << 30
)

// Kernel downloads the tarball of tag from repo ("owner/name", default
// DefaultRepo) through the API, following the redirect, and unpacks it
// into dest while downloading (gzip through klauspost/compress, no
// temporary tarball), without its top-level directory. The tree appears
// at dest only when the whole stream was read; a failure (a dropped
// connection, an unsafe entry) leaves nothing. The returned source pins
// the commit and the sha256 of the downloaded bytes.
func (f *Fetcher) Kernel(ctx context.Context, repo, tag, dest string) (manifest.Source, error) {
	if repo == "" {
		repo = DefaultRepo
	}
	if _, ok := kver.Parse(tag); !ok {
		return manifest.Source{}, fmt.Errorf("fetch: kernel tag %q: want linux-msft-wsl-<a>.<b>.<c>.<d>", tag)
	}
	src, err := f.githubTarball(ctx, repo, tag, dest, "kernel "+tag)
	if err != nil {
		return manifest.Source{}, err
	}
	src.Kind = "github-tarball"
	src.Tag = tag
	return src, nil
}

// githubTarball resolves ref to a commit, then streams the API tarball of
// that ref into dest.
func (f *Fetcher) githubTarball(ctx context.Context, repo, ref, dest, what string) (manifest.Source, error) {
	if f.Client == nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: no GitHub client", what)
	}
	owner, name, err := githubapi.SplitRepo(repo)
	if err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	if err := f.checkDest(dest); err != nil {
		return manifest.Source{}, err
	}
	commit, _, err := f.Client.Repositories.GetCommitSHA1(ctx, owner, name, ref, "")
	if err != nil {
		if githubapi.IsValidation(err, "") || githubapi.IsNotFound(err) {
			return manifest.Source{}, fmt.Errorf("fetch: %s: ref %s not found in %s: %w", what, ref, repo, err)
		}
		return manifest.Source{}, fmt.Errorf("fetch: %s: resolving %s in %s: %w", what, ref, repo, err)
	}
	commit = strings.TrimSpace(commit)
	done := f.Progress.Step("fetch %s from %s (commit %s)", what, repo, short(commit))
	defer done()
	req, err := f.Client.NewRequest(http.MethodGet, fmt.Sprintf("repos/%s/%s/tarball/%s", owner, name, url.PathEscape(ref)), nil)
	if err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	resp, err := f.Client.BareDo(ctx, req)
	if err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: tarball of %s@%s: %w", what, repo, ref, err)
	}
	defer resp.Body.Close()
	sum, _, err := f.unpack(ctx, resp.Body, resp.ContentLength, dest, what)
	if err != nil {
		return manifest.Source{}, err
	}
	return manifest.Source{Repo: repo, Ref: ref, Commit: commit, SHA256: sum,
		URL: f.Client.APIURL.String() + "repos/" + owner + "/" + name + "/tarball/" + ref}, nil
}

func (f *Fetcher) checkDest(dest string) error {
	if f.Force {
		return nil
	}
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("fetch: %s: %w", dest, atomicfile.ErrExists)
	}
	return nil
}

// countingReader counts bytes and feeds a progress counter.
type countingReader struct {
	r io.Reader
	n int64
	c *progress.Counter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.c.Add(int64(n))
	return n, err
}

// unpack streams the archive r (of size total, or -1) into dest: it is
// unpacked next to dest, fully read and hashed, and only then renamed
// into place. A single top-level directory is removed. It returns the
// sha256 of the bytes read and their count. It is for GitHub's tarballs,
// which have no sha256 to check first; url sources are verified before
// they are unpacked (urlSource).
func (f *Fetcher) unpack(ctx context.Context, r io.Reader, total int64, dest, what string) (string, int64, error) {
	parent := filepath.Dir(dest)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", 0, fmt.Errorf("fetch: %s: %w", what, err)
	}
	stage, err := os.MkdirTemp(parent, "."+filepath.Base(dest)+".fetch-*")
	if err != nil {
		return "", 0, fmt.Errorf("fetch: %s: %w", what, err)
	}
	defer os.RemoveAll(stage)
	h := sha256.New()
	cr := &countingReader{r: io.TeeReader(r, h), c: f.Progress.Counter("download "+what, max(total, 0))}
	tree := filepath.Join(stage, "tree")
	res, err := archive.Extract(ctx, cr, tree, archive.Options{Name: what})
	if err != nil {
		if total > 0 && cr.n < total && errors.Is(err, io.ErrUnexpectedEOF) {
			return "", cr.n, fmt.Errorf("fetch: %s: download broke off after %d of %d bytes; nothing was kept: %w", what, cr.n, total, err)
		}
		return "", cr.n, fmt.Errorf("fetch: %s: %w", what, err)
	}
	// Read what follows the tar end marker (gzip trailer, padding) so the
	// hash covers the whole download and a truncated stream is noticed.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return "", cr.n, fmt.Errorf("fetch: %s: download broke off after %d bytes: %w", what, cr.n, err)
	}
	cr.c.Done()
	if total >= 0 && cr.n != total {
		return "", cr.n, fmt.Errorf("fetch: %s: got %d bytes, want %d (Content-Length)", what, cr.n, total)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := placeTree(tree, res.TopDir, dest, f.Force, stage); err != nil {
		return "", cr.n, fmt.Errorf("fetch: %s: %w", what, err)
	}
	return sum, cr.n, nil
}

// placeTree moves the unpacked tree (its single top-level directory top,
// if it has one) to dest; stage receives a replaced dest.
func placeTree(tree, top, dest string, force bool, stage string) error {
	if top != "" {
		if st, err := os.Lstat(filepath.Join(tree, top)); err == nil && st.IsDir() {
			tree = filepath.Join(tree, top)
		}
	}
	return replaceDir(tree, dest, force, stage)
}

// replaceDir renames src to dest; with force an existing dest is moved
// into trash (removed by the caller) first.
func replaceDir(src, dest string, force bool, trash string) error {
	if _, err := os.Lstat(dest); err == nil {
		if !force {
			return fmt.Errorf("%s: %w", dest, atomicfile.ErrExists)
		}
		if err := os.Rename(dest, filepath.Join(trash, "old")); err != nil {
			return err
		}
	}
	if err := os.Chmod(src, 0o755); err != nil {
		return err
	}
	return os.Rename(src, dest)
}

// ModuleSpec says where a module's source comes from: exactly one of Git
// (with Ref), URL (with SHA256) or Path.
type ModuleSpec struct {
	Name string
	// Git is a repository URL (https, ssh, file or a local path); Ref is
	// a branch, tag or commit.
	Git, Ref string
	// URL is an archive (tar, tar.gz, tar.xz, tar.zst) whose sha256 must
	// be SHA256.
	URL, SHA256 string
	// Path is a local directory, relative to BaseDir if not absolute.
	Path, BaseDir string
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Module fetches a module source into dest (for Path sources, dest is not
// used: the source stays where it is) and returns its pinned source:
// the commit for git, the sha256 for URLs, a content hash for paths.
// Failures leave nothing at dest.
func (f *Fetcher) Module(ctx context.Context, spec ModuleSpec, dest string) (manifest.Source, error) {
	what := "module " + spec.Name
	n := 0
	for _, s := range []string{spec.Git, spec.URL, spec.Path} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return manifest.Source{}, fmt.Errorf("fetch: %s: want exactly one of git, url or path", what)
	}
	switch {
	case spec.Git != "":
		if spec.Ref == "" {
			return manifest.Source{}, fmt.Errorf("fetch: %s: git source %s needs a ref", what, spec.Git)
		}
		if f.GitHubTarballs && f.Client != nil {
			if repo, ok := f.githubRepo(spec.Git); ok {
				src, err := f.githubTarball(ctx, repo, spec.Ref, dest, what)
				if err != nil {
					return manifest.Source{}, err
				}
				src.Kind, src.URL = "git", spec.Git
				return src, nil
			}
		}
		return f.gitSource(ctx, spec, dest, what)
	case spec.URL != "":
		want := strings.ToLower(strings.TrimPrefix(spec.SHA256, "sha256:"))
		if !sha256RE.MatchString(want) {
			return manifest.Source{}, fmt.Errorf("fetch: %s: url source %s needs sha256 (64 hex digits), got %q", what, spec.URL, spec.SHA256)
		}
		return f.urlSource(ctx, spec.URL, want, dest, what)
	default:
		p := spec.Path
		if !filepath.IsAbs(p) && spec.BaseDir != "" {
			p = filepath.Join(spec.BaseDir, p)
		}
		p, err := filepath.Abs(p)
		if err != nil {
			return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
		}
		st, err := os.Stat(p)
		if err != nil {
			return manifest.Source{}, fmt.Errorf("fetch: %s: path source: %w", what, err)
		}
		if !st.IsDir() {
			return manifest.Source{}, fmt.Errorf("fetch: %s: path source %s is not a directory", what, p)
		}
		sum, err := digest.Tree(ctx, p)
		if err != nil {
			return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
		}
		return manifest.Source{Kind: "path", Path: p, SHA256: sum}, nil
	}
}

// githubRepo returns owner/name if u is a repository on the GitHub server.
func (f *Fetcher) githubRepo(u string) (string, bool) {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "https" && pu.Scheme != "http" || !strings.EqualFold(pu.Host, f.Client.ServerURL.Host) {
		return "", false
	}
	p := strings.Trim(strings.TrimPrefix(pu.Path, f.Client.ServerURL.Path), "/")
	p = strings.TrimSuffix(p, ".git")
	if owner, name, err := githubapi.SplitRepo(p); err == nil {
		return owner + "/" + name, true
	}
	return "", false
}

func (f *Fetcher) gitSource(ctx context.Context, spec ModuleSpec, dest, what string) (manifest.Source, error) {
	if err := f.checkDest(dest); err != nil {
		return manifest.Source{}, err
	}
	done := f.Progress.Step("fetch %s: git %s %s", what, spec.Git, spec.Ref)
	defer done()
	d, err := atomicfile.CreateDir(dest, f.Force)
	if err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	defer d.Abort()
	git := f.Git
	if git == "" {
		git = "git"
	}
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, git, append([]string{"-C", d.Tmp}, args...)...)
		cmd.Env = append(safeenv.GitEnviron("LC_ALL"), "LC_ALL=C")
		if f.GitLowSpeedTime > 0 {
			cmd.Env = append(cmd.Env, "GIT_HTTP_LOW_SPEED_TIME="+strconv.Itoa(f.GitLowSpeedTime))
		}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(errb.String())
			if msg == "" {
				msg = err.Error()
			}
			return "", errors.New(msg)
		}
		return strings.TrimSpace(out.String()), nil
	}
	if _, err := run("init", "-q"); err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: git init: %v", what, err)
	}
	// git runs in the staging dir: a relative local repository path is
	// made absolute against the current directory first (where git
	// ls-remote would resolve it too).
	repo := spec.Git
	if modlist.IsLocalGit(repo) && !filepath.IsAbs(repo) {
		if repo, err = filepath.Abs(repo); err != nil {
			return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
		}
	}
	if _, err := run("fetch", "-q", "--depth", "1", "--no-tags", "--", repo, spec.Ref); err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: git fetch %s %s: %v", what, spec.Git, spec.Ref, err)
	}
	if _, err := run("-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD"); err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: git checkout %s: %v", what, spec.Ref, err)
	}
	commit, err := run("rev-parse", "HEAD")
	if err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: git rev-parse: %v", what, err)
	}
	// The pin is in the manifest; the tree builds without git metadata,
	// like a tarball.
	if err := os.RemoveAll(filepath.Join(d.Tmp, ".git")); err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	if err := d.Commit(); err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	return manifest.Source{Kind: "git", URL: spec.Git, Ref: spec.Ref, Commit: commit}, nil
}

// urlSource downloads the archive at u to a temporary file (at most
// MaxDownload bytes), checks its sha256 against want, and only then
// unpacks it: bytes that are not the pinned archive never reach a
// decompressor or the tar reader.
func (f *Fetcher) urlSource(ctx context.Context, u, want, dest, what string) (manifest.Source, error) {
	if err := f.checkDest(dest); err != nil {
		return manifest.Source{}, err
	}
	done := f.Progress.Step("fetch %s: %s", what, u)
	defer done()
	parent := filepath.Dir(dest)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	stage, err := os.MkdirTemp(parent, "."+filepath.Base(dest)+".fetch-*")
	if err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	defer os.RemoveAll(stage)
	file := filepath.Join(stage, "download")
	sum, err := f.download(ctx, u, file, what)
	if err != nil {
		return manifest.Source{}, err
	}
	if sum != want {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %s: sha256 mismatch: got %s, want %s (not unpacked)", what, u, sum, want)
	}
	tree := filepath.Join(stage, "tree")
	res, err := archive.ExtractFile(ctx, file, tree, archive.Options{Name: what, MaxBytes: DefaultMaxUnpacked})
	if err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	if err := os.Remove(file); err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	if err := placeTree(tree, res.TopDir, dest, f.Force, stage); err != nil {
		return manifest.Source{}, fmt.Errorf("fetch: %s: %w", what, err)
	}
	return manifest.Source{Kind: "url", URL: u, SHA256: sum}, nil
}

// download writes the body of GET u to the new file path and returns its
// sha256. More than MaxDownload bytes (announced or received) fail, as
// does a body shorter than its Content-Length.
func (f *Fetcher) download(ctx context.Context, u, path, what string) (string, error) {
	limit := f.MaxDownload
	if limit <= 0 {
		limit = DefaultMaxDownload
	}
	hc := githubapi.HTTPClient(githubapi.Options{Log: f.Progress})
	if f.Client != nil {
		hc = f.Client.HTTP
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("fetch: %s: %w", what, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch: %s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch: %s: GET %s: %s", what, u, resp.Status)
	}
	if resp.ContentLength > limit {
		return "", fmt.Errorf("fetch: %s: %s is %d bytes, more than the limit of %d", what, u, resp.ContentLength, limit)
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("fetch: %s: %w", what, err)
	}
	defer out.Close()
	h := sha256.New()
	cr := &countingReader{r: io.LimitReader(resp.Body, limit+1), c: f.Progress.Counter("download "+what, max(resp.ContentLength, 0))}
	if _, err := io.Copy(io.MultiWriter(out, h), cr); err != nil {
		return "", fmt.Errorf("fetch: %s: download broke off after %d bytes: %w", what, cr.n, err)
	}
	cr.c.Done()
	switch {
	case cr.n > limit:
		return "", fmt.Errorf("fetch: %s: %s is more than the limit of %d bytes", what, u, limit)
	case resp.ContentLength >= 0 && cr.n != resp.ContentLength:
		return "", fmt.Errorf("fetch: %s: got %d bytes, want %d (Content-Length)", what, cr.n, resp.ContentLength)
	}
	if err := out.Close(); err != nil {
		return "", fmt.Errorf("fetch: %s: %w", what, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
