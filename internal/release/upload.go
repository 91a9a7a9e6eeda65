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
	"strings"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

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

// is reports whether the asset is a complete upload of a.
func (r remoteAsset) is(a Asset) bool {
	return r.Name == a.Name && r.State == "uploaded" && r.Size == a.Size && r.Digest == "sha256:"+a.SHA256
}

func (pub *publisher) listAssets(ctx context.Context, id int64) ([]remoteAsset, error) {
	var all []remoteAsset
	for page := 1; ; {
		req, err := pub.c.NewRequest(http.MethodGet, fmt.Sprintf("repos/%s/%s/releases/%d/assets?per_page=100&page=%d", pub.owner, pub.name, id, page), nil)
		if err != nil {
			return nil, fmt.Errorf("release: %w", err)
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

// uploadAll makes the draft's assets the planned ones: same-named assets
// already uploaded with the same sha256 are kept, other same-named ones
// are replaced, unknown ones deleted. (The draft holds this very build,
// so an asset another run of it uploaded is the same file and kept.)
// checkDraft verifies the result before publishing.
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
		if len(have) == 1 && have[0].is(a) {
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
	return nil
}

// stillDraft returns err, wrapping errNotDraft as well when release id is
// no longer a draft: another run of this build, filling the same draft,
// published it (then an immutable release refuses further uploads).
func (pub *publisher) stillDraft(ctx context.Context, id int64, err error) error {
	if rel, gerr := pub.getRelease(ctx, id); gerr == nil && !rel.Draft {
		return fmt.Errorf("%w (draft %d was published meanwhile as %s: %w)", err, id, rel.TagName, errNotDraft)
	}
	return err
}

// upload uploads one asset and verifies it; a failed attempt is retried
// with backoff after deleting whatever the failure left under that name,
// unless that is a complete upload of the same file (the failed request
// went through, or another run of this build uploaded it).
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
		var same []remoteAsset
		for _, r := range have {
			if r.Name == a.Name {
				same = append(same, r)
			}
		}
		if len(same) == 1 && same[0].is(a) {
			pub.log.Printf("release: %s is uploaded after all (sha256 matches)", a.Name)
			return nil
		}
		for _, r := range same {
			pub.log.Printf("release: deleting broken asset %s (%s, %d bytes)", r.Name, r.State, r.Size)
			if err := pub.deleteAsset(ctx, r); err != nil {
				return err
			}
		}
	}
}

func mediaType(name string) string {
	switch {
	case strings.HasSuffix(name, ".json"):
		return "application/json"
	case strings.HasSuffix(name, ".md"):
		return "text/markdown"
	case strings.HasSuffix(name, ".txt"), name == SumsFile, name == ConfigFile:
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
		pub.mine[got.GetID()] = true
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
	pub.mine[got.GetID()] = true
	return nil
}
