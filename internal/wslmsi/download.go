package wslmsi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// errRetry marks a download failure worth another attempt (the body broke
// off).
type errRetry struct{ err error }

func (e *errRetry) Error() string { return e.err.Error() }
func (e *errRetry) Unwrap() error { return e.err }

// download streams asset a to dst atomically and returns its sha256. The
// request goes to the API asset endpoint with Accept:
// application/octet-stream; the client follows the redirect to the asset
// host, and its transport sends the token to API hosts only. A body that
// breaks off is downloaded again (the client's attempts and backoff); a
// size or digest mismatch is an error. On any failure dst is untouched.
func download(ctx context.Context, c *githubapi.Client, a fetch.WSLAsset, dst string, log *progress.Reporter) (string, error) {
	for attempt := 1; ; attempt++ {
		sum, err := downloadOnce(ctx, c, a, dst, log)
		var r *errRetry
		if err == nil || !errors.As(err, &r) || attempt >= c.MaxAttempts() || ctx.Err() != nil {
			return sum, err
		}
		d := c.Backoff(attempt + 1)
		log.Printf("wslmsi: downloading %s: %v; retrying in %s (attempt %d of %d)", a.Name, err, d.Round(time.Millisecond), attempt+1, c.MaxAttempts())
		if err := c.Sleep(ctx, d); err != nil {
			return "", err
		}
	}
}

func downloadOnce(ctx context.Context, c *githubapi.Client, a fetch.WSLAsset, dst string, log *progress.Reporter) (string, error) {
	if a.URL == "" {
		return "", fmt.Errorf("asset %s has no API URL", a.Name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
	if err != nil {
		return "", fmt.Errorf("asset %s: %w", a.Name, err)
	}
	req.Header.Set("Accept", "application/octet-stream")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return "", fmt.Errorf("downloading %s: %w", a.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("downloading %s: %s: %s", a.Name, resp.Status, strings.TrimSpace(c.Redact(string(body))))
	}
	if resp.ContentLength >= 0 && resp.ContentLength != a.Size {
		return "", fmt.Errorf("downloading %s: the server sends %d bytes, the release lists %d", a.Name, resp.ContentLength, a.Size)
	}
	f, err := atomicfile.Create(dst, true)
	if err != nil {
		return "", err
	}
	defer f.Abort()
	h := sha256.New()
	counter := log.Counter("download "+a.Name, a.Size)
	n, err := io.Copy(io.MultiWriter(f, h, counter.Writer()), resp.Body)
	if err != nil {
		return "", &errRetry{fmt.Errorf("downloading %s: after %d of %d bytes: %w", a.Name, n, a.Size, err)}
	}
	if n != a.Size {
		err := fmt.Errorf("downloading %s: got %d bytes, the release lists %d", a.Name, n, a.Size)
		if n < a.Size {
			return "", &errRetry{err}
		}
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if a.Digest != "" && sum != a.Digest {
		return "", fmt.Errorf("downloading %s: sha256 %s, but the release's digest is sha256:%s", a.Name, sum, a.Digest)
	}
	counter.Done()
	if err := f.Commit(0o644); err != nil {
		return "", err
	}
	return sum, nil
}
