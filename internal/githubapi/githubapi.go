// Package githubapi builds the go-github client shared by the fetch and
// release stages: API, uploads and server URLs from the environment
// (GITHUB_API_URL, GITHUB_SERVER_URL; GitHub Enterprise Server included),
// the token from a flag or GITHUB_TOKEN / INPUT_TOKEN, and one HTTP
// transport that
//
//   - retries idempotent requests with exponential backoff and jitter on
//     5xx responses and network errors (bounded, honouring the context);
//   - honours rate limits: X-RateLimit-Remaining: 0 with X-RateLimit-Reset,
//     and 403/429 responses with Retry-After; it waits when the wait is
//     short and fails with a message giving the reset time otherwise;
//   - makes conditional requests (ETag / If-None-Match) for API GETs and
//     answers a 304 with the cached body, so unchanged lists cost no rate
//     limit;
//   - sends the Authorization header only to the API and uploads hosts,
//     never to redirect targets such as codeload or S3;
//   - bounds connecting, the TLS handshake and the wait for response
//     headers, and fails a body that stops moving (ErrStalled), so a
//     stalled connection does not hang the job.
//
// The token is never put into URLs, logs or errors; Redact, RedactWriter
// and NewRedactor hide it in anything the caller prints, also when a write
// splits it.
package githubapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Default URLs of github.com.
const (
	DefaultAPIURL    = "https://api.github.com"
	DefaultServerURL = "https://github.com"
)

// Options configure New. The zero value works: it reads the environment
// with os.Getenv and uses a clone of http.DefaultTransport with network
// timeouts.
type Options struct {
	// Token is an explicit token (for example from --token). When empty,
	// GITHUB_TOKEN and then INPUT_TOKEN are used; no token means
	// anonymous access.
	Token string
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// APIURL, UploadURL and ServerURL override GITHUB_API_URL, the
	// uploads URL derived from it, and GITHUB_SERVER_URL.
	APIURL, UploadURL, ServerURL string
	// Base is the underlying transport (default: a clone of
	// http.DefaultTransport with ConnectTimeout, TLSHandshakeTimeout and
	// ResponseHeaderTimeout). The stall detection applies to it too.
	Base http.RoundTripper
	// ConnectTimeout, TLSHandshakeTimeout and ResponseHeaderTimeout bound
	// connecting, the TLS handshake, and the wait for a response's headers
	// once the request is sent (defaults 30s, 30s and 2m), on the default
	// transport.
	ConnectTimeout, TLSHandshakeTimeout, ResponseHeaderTimeout time.Duration
	// StallTimeout bounds how long a request body may go unread by the
	// connection and how long one read of a response body may wait for
	// data (default 2m): a stalled connection fails with ErrStalled
	// instead of hanging until the job's timeout, while a download that
	// keeps arriving runs as long as it takes.
	StallTimeout time.Duration
	// MaxAttempts bounds the tries of one idempotent request on 5xx
	// responses and network errors (default 5).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts (defaults 1s and 30s); jitter spreads each wait over
	// [d/2, d].
	MinBackoff, MaxBackoff time.Duration
	// MaxRateLimitWait is the longest wait for a rate limit to reset
	// before failing (default 60s).
	MaxRateLimitWait time.Duration
	// Sleep waits for d or until ctx is done (default: a timer). Tests
	// replace it (with Now) to make waits instant and deterministic.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock used for rate-limit resets (default time.Now).
	Now func() time.Time
	// Rand returns a number in [0,1) for jitter (default math/rand/v2).
	Rand func() float64
	// Log receives one line per retry, rate-limit wait and conditional
	// hit (nil: silent). Lines never contain the token.
	Log *progress.Reporter
	// UserAgent overrides the User-Agent header.
	UserAgent string
}

// Client is a go-github client plus the plain HTTP client that shares its
// transport (for downloads that follow redirects to other hosts).
type Client struct {
	*github.Client
	// HTTP follows redirects; the Authorization header is added only to
	// requests for the API and uploads hosts.
	HTTP *http.Client
	// APIURL, UploadURL and ServerURL are the resolved URLs, each ending
	// in "/".
	APIURL, UploadURL, ServerURL *url.URL

	token string
	t     *transport
}

// New builds a Client from o and the environment.
func New(o Options) (*Client, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	token := ResolveToken(o.Token, getenv)
	apiStr := firstNonEmpty(o.APIURL, getenv("GITHUB_API_URL"), DefaultAPIURL)
	api, err := parseBase(apiStr)
	if err != nil {
		return nil, fmt.Errorf("githubapi: GITHUB_API_URL %q: %w", apiStr, err)
	}
	var upload *url.URL
	if o.UploadURL != "" {
		if upload, err = parseBase(o.UploadURL); err != nil {
			return nil, fmt.Errorf("githubapi: upload URL %q: %w", o.UploadURL, err)
		}
	} else {
		upload = DeriveUploadURL(api)
	}
	serverStr := firstNonEmpty(o.ServerURL, getenv("GITHUB_SERVER_URL"), DefaultServerURL)
	server, err := parseBase(serverStr)
	if err != nil {
		return nil, fmt.Errorf("githubapi: GITHUB_SERVER_URL %q: %w", serverStr, err)
	}

	t := newTransport(o, token, api, upload)
	hc := &http.Client{Transport: t}
	gh := github.NewClient(hc)
	gh.BaseURL = api
	gh.UploadURL = upload
	gh.UserAgent = firstNonEmpty(o.UserAgent, "wsl-modules-action")
	return &Client{Client: gh, HTTP: hc, APIURL: api, UploadURL: upload, ServerURL: server, token: token, t: t}, nil
}

// ResolveToken returns flag if set, else GITHUB_TOKEN, else INPUT_TOKEN.
func ResolveToken(flag string, getenv func(string) string) string {
	if getenv == nil {
		getenv = os.Getenv
	}
	return strings.TrimSpace(firstNonEmpty(flag, getenv("GITHUB_TOKEN"), getenv("INPUT_TOKEN")))
}

// DeriveUploadURL returns the uploads URL for an API URL: uploads.github.com
// for api.github.com, https://HOST/api/uploads/ for GitHub Enterprise
// Server (https://HOST/api/v3), and uploads.X for an api.X host (GHE.com).
func DeriveUploadURL(api *url.URL) *url.URL {
	u := *api
	switch {
	case u.Host == "api.github.com":
		u.Host, u.Path = "uploads.github.com", "/"
	case strings.HasSuffix(u.Path, "/api/v3/"):
		u.Path = strings.TrimSuffix(u.Path, "v3/") + "uploads/"
	case strings.HasPrefix(u.Host, "api."):
		u.Host, u.Path = "uploads."+strings.TrimPrefix(u.Host, "api."), "/"
	default:
		u.Path = strings.TrimSuffix(u.Path, "/") + "/api/uploads/"
	}
	u.RawPath = ""
	return &u
}

// HasToken reports whether requests are authenticated.
func (c *Client) HasToken() bool { return c.token != "" }

// Redact replaces every occurrence of the token in s with "***".
func (c *Client) Redact(s string) string { return redact(s, c.token) }

// RedactWriter returns a writer that hides the token in what passes
// through it.
func (c *Client) RedactWriter(w io.Writer) io.Writer { return NewRedactor(w, c.token) }

// Backoff returns the wait before attempt (2, 3, ...) with jitter, for
// callers that retry non-idempotent operations themselves (uploads).
func (c *Client) Backoff(attempt int) time.Duration { return c.t.backoff(attempt) }

// Sleep waits for d using the configured sleep function.
func (c *Client) Sleep(ctx context.Context, d time.Duration) error { return c.t.sleep(ctx, d) }

// MaxAttempts is the configured bound of attempts per request.
func (c *Client) MaxAttempts() int { return c.t.maxAttempts }

// Log is the configured reporter (may be nil).
func (c *Client) Log() *progress.Reporter { return c.t.log }

// SplitRepo splits "owner/name".
func SplitRepo(s string) (owner, name string, err error) {
	owner, name, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("repository %q: want owner/name", s)
	}
	return owner, name, nil
}

// IsNotFound reports whether err is a GitHub 404 response.
func IsNotFound(err error) bool {
	var e *github.ErrorResponse
	return errors.As(err, &e) && e.Response != nil && e.Response.StatusCode == http.StatusNotFound
}

// IsValidation reports whether err is a 422 Validation Failed response,
// optionally with the given error code (e.g. "already_exists").
func IsValidation(err error, code string) bool {
	var e *github.ErrorResponse
	if !errors.As(err, &e) || e.Response == nil || e.Response.StatusCode != http.StatusUnprocessableEntity {
		return false
	}
	if code == "" {
		return true
	}
	for _, x := range e.Errors {
		if x.Code == code {
			return true
		}
	}
	return false
}

func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "***")
}

func parseBase(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, errors.New("want an http(s) URL with a host")
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawPath = ""
	return u, nil
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func defaultSleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func defaultRand() float64 { return rand.Float64() }
