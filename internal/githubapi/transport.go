package githubapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// RateLimitError is returned when a rate limit would need a longer wait
// than Options.MaxRateLimitWait.
type RateLimitError struct {
	// Reset is when the limit resets (or when Retry-After expires).
	Reset time.Time
	// Wait is how long it would have been necessary to wait.
	Wait time.Duration
	// Max is the configured longest wait.
	Max time.Duration
	// Limit and Used are from the X-RateLimit-* headers, when known.
	Limit, Used int
	// Secondary is true for a secondary (abuse) rate limit.
	Secondary bool
}

func (e *RateLimitError) Error() string {
	kind := "GitHub API rate limit exhausted"
	if e.Secondary {
		kind = "GitHub API secondary rate limit hit"
	}
	if e.Limit > 0 {
		kind += fmt.Sprintf(" (%d of %d requests used)", e.Used, e.Limit)
	}
	return fmt.Sprintf("%s; it resets at %s (in %s), longer than the %s this run may wait; re-run later or use a token with a higher limit",
		kind, e.Reset.UTC().Format(time.RFC3339), e.Wait.Round(time.Second), e.Max)
}

type cacheEntry struct {
	etag   string
	body   []byte
	header http.Header
}

// maxCachedBody bounds the size of one cached response body.
const maxCachedBody = 1 << 20

// maxCacheEntries bounds the number of cached responses.
const maxCacheEntries = 256

// maxRateLimitWaits bounds the rate-limit waits for one request.
const maxRateLimitWaits = 3

type transport struct {
	base        http.RoundTripper
	token       string
	authHosts   []*url.URL
	maxAttempts int
	minBackoff  time.Duration
	maxBackoff  time.Duration
	maxWait     time.Duration
	sleepFn     func(context.Context, time.Duration) error
	now         func() time.Time
	rand        func() float64
	log         *progress.Reporter

	mu        sync.Mutex
	exhausted bool // the last response said X-RateLimit-Remaining: 0
	reset     time.Time
	limit     int
	used      int
	cache     map[string]*cacheEntry
	order     []string
}

func newTransport(o Options, token string, hosts ...*url.URL) *transport {
	t := &transport{
		base: baseTransport(o), token: token, authHosts: hosts,
		maxAttempts: o.MaxAttempts, minBackoff: o.MinBackoff, maxBackoff: o.MaxBackoff,
		maxWait: o.MaxRateLimitWait, sleepFn: o.Sleep, now: o.Now, rand: o.Rand, log: o.Log,
		cache: map[string]*cacheEntry{},
	}
	if t.maxAttempts <= 0 {
		t.maxAttempts = 5
	}
	if t.minBackoff <= 0 {
		t.minBackoff = time.Second
	}
	if t.maxBackoff <= 0 {
		t.maxBackoff = 30 * time.Second
	}
	if t.maxWait <= 0 {
		t.maxWait = 60 * time.Second
	}
	if t.sleepFn == nil {
		t.sleepFn = defaultSleep
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.rand == nil {
		t.rand = defaultRand
	}
	return t
}

func (t *transport) sleep(ctx context.Context, d time.Duration) error { return t.sleepFn(ctx, d) }

// backoff is min(max, min*2^(attempt-2)) spread over [d/2, d].
func (t *transport) backoff(attempt int) time.Duration {
	d := t.minBackoff
	for i := 2; i < attempt && d < t.maxBackoff; i++ {
		d *= 2
	}
	if d > t.maxBackoff {
		d = t.maxBackoff
	}
	return d/2 + time.Duration(t.rand()*float64(d/2))
}

// isAPI reports whether u is on the API or uploads host (same scheme and
// host:port), the only hosts that get the token.
func (t *transport) isAPI(u *url.URL) bool {
	for _, h := range t.authHosts {
		if strings.EqualFold(u.Scheme, h.Scheme) && strings.EqualFold(u.Host, h.Host) {
			return true
		}
	}
	return false
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete,
		// The PATCH requests of this project set absolute values (a
		// release's fields), so repeating one is harmless.
		http.MethodPatch:
		return true
	}
	return false
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	api := t.isAPI(req.URL)
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	retry := idempotent(req.Method) && replayable
	what := req.Method + " " + req.URL.Path
	waits := 0
	for attempt := 1; ; attempt++ {
		if api {
			if err := t.waitForReset(ctx, what); err != nil {
				return nil, err
			}
		}
		r, key, cached, err := t.newAttempt(req, attempt, api)
		if err != nil {
			return nil, err
		}
		resp, err := t.base.RoundTrip(r)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if retry && attempt < t.maxAttempts {
				if err := t.backoffBeforeRetry(ctx, what, err, attempt); err != nil {
					return nil, err
				}
				continue
			}
			return nil, err
		}
		if api {
			t.noteRate(resp)
		}
		if resp.StatusCode == http.StatusNotModified && cached != nil {
			drain(resp)
			t.log.Printf("github: %s: not modified (conditional request, cached body)", what)
			return cachedResponse(req, resp, cached), nil
		}
		if api && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests) {
			again, err := t.waitOutRateLimit(ctx, resp, what, replayable, &waits)
			if err != nil {
				return nil, err
			}
			if again {
				attempt-- // a rate-limit wait is not an attempt
				continue
			}
		}
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented && retry && attempt < t.maxAttempts {
			drain(resp)
			if err := t.backoffBeforeRetry(ctx, what, resp.Status, attempt); err != nil {
				return nil, err
			}
			continue
		}
		if key != "" && resp.StatusCode == http.StatusOK && resp.Header.Get("ETag") != "" {
			t.store(key, resp)
		}
		return resp, nil
	}
}

// newAttempt returns the request for one attempt at req: a clone with a
// fresh body on a retry, the token only for the API hosts, and
// If-None-Match for an API GET whose response is cached. key is the cache
// key of the response ("" if it is not cached) and cached is the cached
// entry (nil if none).
func (t *transport) newAttempt(req *http.Request, attempt int, api bool) (r *http.Request, key string, cached *cacheEntry, err error) {
	r = req.Clone(req.Context())
	if attempt > 1 && req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, "", nil, err
		}
		r.Body = body
	}
	if api && t.token != "" {
		r.Header.Set("Authorization", "Bearer "+t.token)
	} else {
		r.Header.Del("Authorization")
	}
	if api && req.Method == http.MethodGet && req.Header.Get("If-None-Match") == "" && req.Header.Get("Range") == "" {
		key = req.URL.String() + "\x00" + req.Header.Get("Accept")
		t.mu.Lock()
		cached = t.cache[key]
		t.mu.Unlock()
		if cached != nil {
			r.Header.Set("If-None-Match", cached.etag)
		}
	}
	return r, key, cached, nil
}

// backoffBeforeRetry logs why attempt failed (an error or a status) and
// sleeps for the backoff before the next attempt.
func (t *transport) backoffBeforeRetry(ctx context.Context, what string, why any, attempt int) error {
	d := t.backoff(attempt + 1)
	t.log.Printf("github: %s: %v; retrying in %s (attempt %d of %d)", what, why, d.Round(time.Millisecond), attempt+1, t.maxAttempts)
	return t.sleep(ctx, d)
}

// waitOutRateLimit handles a 403/429 API response. If it is a rate limit
// whose wait exceeds the longest allowed, it drains resp and returns a
// *RateLimitError; if the request can be sent again (and *waits is below
// maxRateLimitWaits) it drains resp, waits for the reset and returns true.
// Otherwise it returns false and leaves resp to the caller.
func (t *transport) waitOutRateLimit(ctx context.Context, resp *http.Response, what string, replayable bool, waits *int) (again bool, err error) {
	wait, secondary, limited := t.rateLimitWait(resp)
	if !limited {
		return false, nil
	}
	if wait > t.maxWait {
		drain(resp)
		t.mu.Lock()
		e := &RateLimitError{Reset: t.now().Add(wait), Wait: wait, Max: t.maxWait, Limit: t.limit, Used: t.used, Secondary: secondary}
		t.mu.Unlock()
		return false, e
	}
	if !replayable || *waits >= maxRateLimitWaits {
		return false, nil
	}
	*waits++
	drain(resp)
	t.log.Printf("github: %s: rate limited; waiting %s for the reset", what, wait.Round(time.Second))
	if err := t.sleep(ctx, wait); err != nil {
		return false, err
	}
	t.mu.Lock()
	t.exhausted = false
	t.mu.Unlock()
	return true, nil
}

// waitForReset waits, before a request, when the last response said the
// limit is exhausted and the reset is near; it fails when it is far.
func (t *transport) waitForReset(ctx context.Context, what string) error {
	t.mu.Lock()
	exhausted, reset, limit, used := t.exhausted, t.reset, t.limit, t.used
	t.mu.Unlock()
	if !exhausted {
		return nil
	}
	wait := reset.Sub(t.now()) + time.Second
	if wait <= 0 {
		return nil
	}
	if wait > t.maxWait {
		return &RateLimitError{Reset: reset, Wait: wait, Max: t.maxWait, Limit: limit, Used: used}
	}
	t.log.Printf("github: %s: rate limit exhausted; waiting %s for the reset", what, wait.Round(time.Second))
	if err := t.sleep(ctx, wait); err != nil {
		return err
	}
	t.mu.Lock()
	t.exhausted = false
	t.mu.Unlock()
	return nil
}

// noteRate records the X-RateLimit-* headers of an API response. When a
// successful response says the limit is now exhausted, the transport
// itself waits before the next request, so it removes X-RateLimit-Reset
// from the response: go-github would otherwise refuse that next request
// without trying, even after a short wait.
func (t *transport) noteRate(resp *http.Response) {
	rem := resp.Header.Get("X-RateLimit-Remaining")
	if rem == "" {
		return
	}
	n, err := strconv.Atoi(rem)
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.limit, _ = strconv.Atoi(resp.Header.Get("X-RateLimit-Limit"))
	t.used, _ = strconv.Atoi(resp.Header.Get("X-RateLimit-Used"))
	if sec, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
		t.reset = time.Unix(sec, 0)
	}
	t.exhausted = n == 0 && !t.reset.IsZero()
	if t.exhausted && resp.StatusCode < 400 {
		resp.Header.Del("X-RateLimit-Reset")
	}
}

// rateLimitWait tells whether a 403/429 response is a rate limit and how
// long to wait: Retry-After, else the X-RateLimit-Reset time when the
// remaining count is 0, else a minute for a secondary limit (GitHub's
// documented advice).
func (t *transport) rateLimitWait(resp *http.Response) (wait time.Duration, secondary, limited bool) {
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if s, err := strconv.Atoi(strings.TrimSpace(ra)); err == nil && s >= 0 {
			return time.Duration(s) * time.Second, true, true
		}
		if when, err := http.ParseTime(ra); err == nil {
			return max(when.Sub(t.now()), 0), true, true
		}
	}
	if resp.Header.Get("X-RateLimit-Remaining") == "0" {
		t.mu.Lock()
		reset := t.reset
		t.mu.Unlock()
		return max(reset.Sub(t.now())+time.Second, 0), false, true
	}
	// A secondary limit without headers: look at the message.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if bytes.Contains(bytes.ToLower(body), []byte("secondary rate limit")) || resp.StatusCode == http.StatusTooManyRequests {
		return time.Minute, true, true
	}
	return 0, false, false
}

func (t *transport) store(key string, resp *http.Response) {
	if resp.ContentLength > maxCachedBody {
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCachedBody+1))
	rest := resp.Body
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), rest), rest}
	if err != nil || len(body) > maxCachedBody {
		return
	}
	e := &cacheEntry{etag: resp.Header.Get("ETag"), body: body, header: resp.Header.Clone()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.cache[key]; !ok {
		t.order = append(t.order, key)
		if len(t.order) > maxCacheEntries {
			delete(t.cache, t.order[0])
			t.order = t.order[1:]
		}
	}
	t.cache[key] = e
}

// cachedResponse turns a 304 into the cached 200, with the fresh rate-limit
// headers. X-From-Cache tells go-github not to record its rate limits.
func cachedResponse(req *http.Request, notModified *http.Response, e *cacheEntry) *http.Response {
	h := e.header.Clone()
	for k, v := range notModified.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-ratelimit-") {
			h[k] = v
		}
	}
	h.Set("X-From-Cache", "1")
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: notModified.Proto,
		ProtoMajor: notModified.ProtoMajor, ProtoMinor: notModified.ProtoMinor,
		Header: h, Body: io.NopCloser(bytes.NewReader(e.body)), ContentLength: int64(len(e.body)),
		Request: req,
	}
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
