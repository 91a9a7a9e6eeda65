package githubapi_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

const token = "ghp_TESTTOKEN0123456789abcdefABCDEF0123"

var ctx = context.Background()

type env struct {
	fake  *githubfake.Server
	clock *githubfake.Clock
	c     *githubapi.Client
	log   *bytes.Buffer
}

func setup(t *testing.T, o githubfake.Options, maxWait time.Duration) *env {
	t.Helper()
	clock := githubfake.NewClock(time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC))
	o.Now = clock.Now
	fake := githubfake.NewT(t, o)
	var log bytes.Buffer
	c, err := githubapi.New(githubapi.Options{Getenv: fake.Getenv(nil), Sleep: clock.Sleep, Now: clock.Now,
		MaxRateLimitWait: maxWait, Log: progress.New(&log), Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	return &env{fake, clock, c, &log}
}

func statuses(reqs []githubfake.Request, route string) []int {
	var out []int
	for _, r := range reqs {
		if r.Route == route {
			out = append(out, r.Status)
		}
	}
	return out
}

func TestURLs(t *testing.T) {
	for _, tc := range []struct {
		env                      map[string]string
		api, upload, server, tok string
	}{
		{map[string]string{}, "https://api.github.com/", "https://uploads.github.com/", "https://github.com/", ""},
		{map[string]string{"GITHUB_API_URL": "https://ghe.example.com/api/v3", "GITHUB_SERVER_URL": "https://ghe.example.com", "INPUT_TOKEN": "in"},
			"https://ghe.example.com/api/v3/", "https://ghe.example.com/api/uploads/", "https://ghe.example.com/", "in"},
		{map[string]string{"GITHUB_API_URL": "https://api.acme.ghe.com", "GITHUB_TOKEN": "gh", "INPUT_TOKEN": "in"},
			"https://api.acme.ghe.com/", "https://uploads.acme.ghe.com/", "https://github.com/", "gh"},
	} {
		c, err := githubapi.New(githubapi.Options{Getenv: func(k string) string { return tc.env[k] }})
		if err != nil {
			t.Fatal(err)
		}
		if c.APIURL.String() != tc.api || c.UploadURL.String() != tc.upload || c.ServerURL.String() != tc.server {
			t.Errorf("%v: got %s %s %s, want %s %s %s", tc.env, c.APIURL, c.UploadURL, c.ServerURL, tc.api, tc.upload, tc.server)
		}
		if c.BaseURL.String() != tc.api || c.Client.UploadURL.String() != tc.upload {
			t.Errorf("%v: go-github client has %s %s", tc.env, c.BaseURL, c.Client.UploadURL)
		}
		if got := githubapi.ResolveToken("", func(k string) string { return tc.env[k] }); got != tc.tok {
			t.Errorf("%v: token %q, want %q", tc.env, got, tc.tok)
		}
	}
	if got := githubapi.ResolveToken("flag", func(string) string { return "env" }); got != "flag" {
		t.Errorf("flag token not preferred: %q", got)
	}
	if _, err := githubapi.New(githubapi.Options{APIURL: "ftp://x"}); err == nil {
		t.Error("ftp API URL accepted")
	}
}

func TestRetryOn502(t *testing.T) {
	e := setup(t, githubfake.Options{}, time.Minute)
	e.fake.AddTags("o/r", githubfake.Tag{Name: "linux-msft-wsl-6.6.87.2"})
	e.fake.Fail(githubfake.RouteTags, 2, http.StatusBadGateway)
	tags, _, err := e.c.Repositories.ListTags(ctx, "o", "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 1 {
		t.Fatalf("got %d tags", len(tags))
	}
	if got := statuses(e.fake.Requests(), githubfake.RouteTags); len(got) != 3 || got[0] != 502 || got[1] != 502 || got[2] != 200 {
		t.Errorf("statuses %v, want [502 502 200]", got)
	}
	// Backoff 1s then 2s, jitter fixed at the middle of [d/2, d].
	if got := e.clock.Slept(); len(got) != 2 || got[0] != 750*time.Millisecond || got[1] != 1500*time.Millisecond {
		t.Errorf("slept %v, want [750ms 1.5s]", got)
	}
	if !strings.Contains(e.log.String(), "502 Bad Gateway; retrying") {
		t.Errorf("no retry line in log:\n%s", e.log)
	}
}

func TestRetryBounded(t *testing.T) {
	e := setup(t, githubfake.Options{}, time.Minute)
	e.fake.AddTags("o/r", githubfake.Tag{Name: "x"})
	e.fake.Fail(githubfake.RouteTags, 100, http.StatusBadGateway)
	_, _, err := e.c.Repositories.ListTags(ctx, "o", "r", nil)
	var ge *github.ErrorResponse
	if !errors.As(err, &ge) || ge.Response.StatusCode != 502 {
		t.Fatalf("err = %v, want a 502 ErrorResponse", err)
	}
	if n := len(statuses(e.fake.Requests(), githubfake.RouteTags)); n != 5 {
		t.Errorf("%d attempts, want 5", n)
	}
}

func TestNoRetryForPOST(t *testing.T) {
	e := setup(t, githubfake.Options{Token: token}, time.Minute)
	c, err := githubapi.New(githubapi.Options{Getenv: e.fake.Getenv(nil), Sleep: e.clock.Sleep, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.fake.AddTags("o/r", githubfake.Tag{Name: "x"})
	e.fake.Fail(githubfake.RouteCreateRelease, 1, http.StatusBadGateway)
	_, _, err = c.Repositories.CreateRelease(ctx, "o", "r", &github.RepositoryRelease{TagName: github.String("t")})
	if err == nil {
		t.Fatal("no error")
	}
	if n := len(statuses(e.fake.Requests(), githubfake.RouteCreateRelease)); n != 1 {
		t.Errorf("POST sent %d times, want 1 (not idempotent)", n)
	}
}

// flaky fails the first n round trips with a network error.
type flaky struct {
	n    int
	base http.RoundTripper
}

func (f *flaky) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.n > 0 {
		f.n--
		return nil, &url.Error{Op: "Get", URL: r.URL.String(), Err: errors.New("connection reset by peer")}
	}
	return f.base.RoundTrip(r)
}

func TestRetryOnNetworkError(t *testing.T) {
	clock := githubfake.NewClock(time.Now())
	fake := githubfake.NewT(t, githubfake.Options{})
	fake.AddTags("o/r", githubfake.Tag{Name: "x"})
	c, err := githubapi.New(githubapi.Options{Getenv: fake.Getenv(nil), Sleep: clock.Sleep, Base: &flaky{n: 2, base: http.DefaultTransport}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Repositories.ListTags(ctx, "o", "r", nil); err != nil {
		t.Fatal(err)
	}
	if got := len(clock.Slept()); got != 2 {
		t.Errorf("%d backoff sleeps, want 2", got)
	}
}

func TestRateLimitWait(t *testing.T) {
	e := setup(t, githubfake.Options{}, time.Minute)
	e.fake.AddTags("o/r", githubfake.Tag{Name: "x"})
	e.fake.ExhaustRateLimit(30 * time.Second)
	if _, _, err := e.c.Repositories.ListTags(ctx, "o", "r", nil); err != nil {
		t.Fatal(err)
	}
	if got := statuses(e.fake.Requests(), githubfake.RouteTags); len(got) != 2 || got[0] != 403 || got[1] != 200 {
		t.Errorf("statuses %v, want [403 200]", got)
	}
	if got := e.clock.Slept(); len(got) != 1 || got[0] < 30*time.Second || got[0] > 32*time.Second {
		t.Errorf("slept %v, want one wait of about 31s", got)
	}
}

// A success that uses up the limit makes the next request wait for the
// reset instead of hitting a 403 (and go-github must not refuse it).
func TestRateLimitWaitBeforeRequest(t *testing.T) {
	e := setup(t, githubfake.Options{}, time.Minute)
	e.fake.AddTags("o/r", githubfake.Tag{Name: "x"})
	e.fake.SetRateLimit(1, e.clock.Now().Add(20*time.Second))
	for i := 0; i < 2; i++ {
		if _, _, err := e.c.Repositories.ListTags(ctx, "o", "r", &github.ListOptions{Page: i + 1}); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	if got := statuses(e.fake.Requests(), githubfake.RouteTags); len(got) != 2 || got[0] != 200 || got[1] != 200 {
		t.Errorf("statuses %v, want [200 200]", got)
	}
	if got := e.clock.Slept(); len(got) != 1 || got[0] < 20*time.Second {
		t.Errorf("slept %v, want one wait of about 21s", got)
	}
}

func TestRateLimitTooLong(t *testing.T) {
	e := setup(t, githubfake.Options{}, time.Minute)
	e.fake.AddTags("o/r", githubfake.Tag{Name: "x"})
	e.fake.ExhaustRateLimit(45 * time.Minute)
	_, _, err := e.c.Repositories.ListTags(ctx, "o", "r", nil)
	var rl *githubapi.RateLimitError
	if !errors.As(err, &rl) {
		t.Fatalf("err = %v, want RateLimitError", err)
	}
	for _, want := range []string{"rate limit exhausted", "resets at 2026-09-01T12:45:0", "longer than the 1m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// Known exhausted: the next call fails without a request.
	n := e.fake.CountRequests()
	if _, _, err := e.c.Repositories.ListTags(ctx, "o", "r", nil); !errors.As(err, &rl) {
		t.Errorf("second call: %v", err)
	}
	if e.fake.CountRequests() != n {
		t.Error("second call sent a request while the limit is known to be exhausted")
	}
}

func TestSecondaryRateLimit(t *testing.T) {
	e := setup(t, githubfake.Options{}, time.Minute)
	e.fake.AddTags("o/r", githubfake.Tag{Name: "x"})
	e.fake.SecondaryRateLimit(githubfake.RouteTags, 1, 7*time.Second)
	if _, _, err := e.c.Repositories.ListTags(ctx, "o", "r", nil); err != nil {
		t.Fatal(err)
	}
	if got := e.clock.Slept(); len(got) != 1 || got[0] != 7*time.Second {
		t.Errorf("slept %v, want [7s] (Retry-After)", got)
	}
}

func TestConditionalRequests(t *testing.T) {
	e := setup(t, githubfake.Options{}, time.Minute)
	e.fake.AddTags("o/r", githubfake.Tag{Name: "a"}, githubfake.Tag{Name: "b"})
	first, r1, err := e.c.Repositories.ListTags(ctx, "o", "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	second, r2, err := e.c.Repositories.ListTags(ctx, "o", "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	reqs := e.fake.Requests()
	if len(reqs) != 2 || reqs[1].IfNoneMatch == "" || reqs[1].Status != http.StatusNotModified {
		t.Fatalf("second request: %+v, want a 304 to If-None-Match", reqs)
	}
	if len(second) != 2 || second[0].GetName() != first[0].GetName() || second[1].GetName() != "b" {
		t.Errorf("cached answer %v differs from %v", second, first)
	}
	if r2.Rate.Remaining != r1.Rate.Remaining {
		t.Errorf("a 304 used the rate limit: remaining %d then %d", r1.Rate.Remaining, r2.Rate.Remaining)
	}
	// A change is seen.
	e.fake.AddTags("o/r", githubfake.Tag{Name: "c"})
	third, _, err := e.c.Repositories.ListTags(ctx, "o", "r", nil)
	if err != nil || len(third) != 3 {
		t.Errorf("after a change: %v %v", third, err)
	}
}

func TestTokenOnlyToAPIHost(t *testing.T) {
	e := setup(t, githubfake.Options{Token: token}, time.Minute)
	p := filepath.Join(t.TempDir(), "src.tar.gz")
	payload := bytes.Repeat([]byte("wsl"), 1000)
	if err := os.WriteFile(p, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	e.fake.AddTags("o/r", githubfake.Tag{Name: "v1"})
	e.fake.SetTarball("o/r", "v1", p)
	get := func(c *github.Client) ([]byte, error) {
		req, err := c.NewRequest("GET", "repos/o/r/tarball/v1", nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.BareDo(ctx, req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	got, err := get(e.c.Client)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("downloaded %d bytes, want %d", len(got), len(payload))
	}
	var apiAuth, bytesReqs int
	for _, r := range e.fake.Requests() {
		switch r.Host {
		case githubfake.HostAPI:
			if r.Authorization == "Bearer "+token {
				apiAuth++
			}
		case githubfake.HostBytes:
			bytesReqs++
			if r.Authorization != "" {
				t.Errorf("Authorization sent to the redirect host: %s", r.Path)
			}
		}
	}
	if apiAuth != 1 || bytesReqs != 1 {
		t.Errorf("api requests with token %d, bytes requests %d; want 1 and 1", apiAuth, bytesReqs)
	}

	// Control: go-github's own WithAuthToken adds the header on every hop,
	// and the fake's bytes host refuses it like S3 does.
	naive := github.NewClient(nil).WithAuthToken(token)
	naive.BaseURL = e.c.BaseURL
	if _, err := get(naive); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("naive client: err = %v, want the bytes host's 400", err)
	}
}

func TestBadCredentialsNoTokenInError(t *testing.T) {
	fake := githubfake.NewT(t, githubfake.Options{Token: token})
	fake.AddTags("o/r", githubfake.Tag{Name: "x"})
	wrong := "ghp_WRONGTOKEN999999999999999999999999"
	var log bytes.Buffer
	c, err := githubapi.New(githubapi.Options{Getenv: fake.Getenv(map[string]string{"GITHUB_TOKEN": wrong}), Log: progress.New(&log)})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Repositories.ListTags(ctx, "o", "r", nil)
	if err == nil || !strings.Contains(err.Error(), "Bad credentials") {
		t.Fatalf("err = %v, want Bad credentials", err)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(log.String(), wrong) {
		t.Error("token in error or log")
	}
}

func TestRedactor(t *testing.T) {
	var b bytes.Buffer
	w := githubapi.NewRedactor(&b, token, "")
	io.WriteString(w, "auth: Bearer "+token+" and again "+token+"\n")
	if strings.Contains(b.String(), token) || strings.Count(b.String(), "***") != 2 {
		t.Errorf("redacted: %q", b.String())
	}
	if githubapi.NewRedactor(&b) != io.Writer(&b) {
		t.Error("redactor without secrets should be the writer itself")
	}
}

// TestRedactorSplitAcrossCopyChunks copies a log the way action mode
// prints a module's log (io.Copy from a file through io.LimitReader, so
// 32 KiB writes) with the token across a chunk boundary, and at the very
// end, cut short.
func TestRedactorSplitAcrossCopyChunks(t *testing.T) {
	for _, at := range []int{32<<10 - 10, 32<<10 - 1, 64<<10 - len(token) + 1} {
		log := strings.Repeat("x", at) + token + " done\n" + strings.Repeat("y", 40<<10) + token[:12]
		p := filepath.Join(t.TempDir(), "module.log")
		if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		w := githubapi.NewRedactor(&b, token)
		if _, err := io.Copy(w, io.LimitReader(f, 1<<20)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := w.(*githubapi.Redactor).Flush(); err != nil {
			t.Fatal(err)
		}
		want := strings.ReplaceAll(log, token, "***")
		if b.String() != want {
			t.Errorf("token at %d: output differs from the redacted log (token shown: %v, %d bytes, want %d)",
				at, strings.Contains(b.String(), token), b.Len(), len(want))
		}
	}
}

// TestRedactorByteByByte writes a token one byte at a time from several
// goroutines' worth of lines: nothing of it may pass, and lines without
// it pass at once.
func TestRedactorByteByByte(t *testing.T) {
	var b bytes.Buffer
	w := githubapi.NewRedactor(&b, token, "other-secret")
	for _, c := range []byte("token=" + token + "\n") {
		w.Write([]byte{c})
	}
	w.Write([]byte("plain line\n"))
	if got := b.String(); got != "token=***\nplain line\n" {
		t.Fatalf("got %q", got)
	}
}
