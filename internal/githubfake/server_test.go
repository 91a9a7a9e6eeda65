package githubfake

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const tok = "ghp_FAKE"

func do(t *testing.T, method, u, body string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

var auth = map[string]string{"Authorization": "Bearer " + tok}

func TestPaginationAndErrors(t *testing.T) {
	s := NewT(t, Options{Token: tok})
	for i := 0; i < 250; i++ {
		s.AddTags("o/r", Tag{Name: fmt.Sprintf("t%03d", i)})
	}
	resp, body := do(t, "GET", s.APIURL()+"/repos/o/r/tags?per_page=100&page=2", "", nil)
	var tags []map[string]any
	json.Unmarshal(body, &tags)
	if resp.StatusCode != 200 || len(tags) != 100 || tags[0]["name"] != "t100" {
		t.Fatalf("page 2: %d, %d tags", resp.StatusCode, len(tags))
	}
	link := resp.Header.Get("Link")
	for _, want := range []string{`page=3&per_page=100>; rel="next"`, `page=3&per_page=100>; rel="last"`, `page=1&per_page=100>; rel="prev"`, `rel="first"`} {
		if !strings.Contains(link, want) {
			t.Errorf("Link %q lacks %q", link, want)
		}
	}
	for _, h := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Used", "ETag"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	// 304 for a matching If-None-Match, not charged.
	rem := resp.Header.Get("X-RateLimit-Remaining")
	resp2, body2 := do(t, "GET", s.APIURL()+"/repos/o/r/tags?per_page=100&page=2", "", map[string]string{"If-None-Match": resp.Header.Get("ETag")})
	if resp2.StatusCode != 304 || len(body2) != 0 || resp2.Header.Get("X-RateLimit-Remaining") != rem {
		t.Errorf("conditional: %d, %d bytes, remaining %s (was %s)", resp2.StatusCode, len(body2), resp2.Header.Get("X-RateLimit-Remaining"), rem)
	}
	// 404 body like GitHub.
	resp, body = do(t, "GET", s.APIURL()+"/repos/o/nope/tags", "", nil)
	var e map[string]any
	json.Unmarshal(body, &e)
	if resp.StatusCode != 404 || e["message"] != "Not Found" || e["documentation_url"] == nil {
		t.Errorf("404: %d %s", resp.StatusCode, body)
	}
	// 422 for an unknown commit.
	resp, body = do(t, "GET", s.APIURL()+"/repos/o/r/commits/nope", "", nil)
	if resp.StatusCode != 422 || !strings.Contains(string(body), "No commit found for SHA: nope") {
		t.Errorf("commit: %d %s", resp.StatusCode, body)
	}
	// Writes need the token.
	resp, _ = do(t, "POST", s.APIURL()+"/repos/o/r/releases", `{"tag_name":"v1"}`, nil)
	if resp.StatusCode != 401 {
		t.Errorf("anonymous create: %d", resp.StatusCode)
	}
	// Rate limit exhausted: 403 with GitHub's message.
	s.ExhaustRateLimit(time.Hour)
	resp, body = do(t, "GET", s.APIURL()+"/repos/o/r/tags", "", nil)
	if resp.StatusCode != 403 || resp.Header.Get("X-RateLimit-Remaining") != "0" || !strings.Contains(string(body), "API rate limit exceeded") {
		t.Errorf("exhausted: %d %s", resp.StatusCode, body)
	}
}

func TestReleasesAndAssets(t *testing.T) {
	s := NewT(t, Options{Token: tok, Immutable: true})
	s.AddTags("o/r")
	resp, body := do(t, "POST", s.APIURL()+"/repos/o/r/releases", `{"tag_name":"v1","name":"one","draft":true}`, auth)
	var rel map[string]any
	json.Unmarshal(body, &rel)
	if resp.StatusCode != 201 || rel["draft"] != true || rel["published_at"] != nil || !strings.HasPrefix(rel["upload_url"].(string), s.UploadURL()) {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	id := int64(rel["id"].(float64))
	// Drafts are invisible anonymously.
	_, body = do(t, "GET", s.APIURL()+"/repos/o/r/releases", "", nil)
	if strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("anonymous list shows a draft: %s", body)
	}
	up := fmt.Sprintf("%s/repos/o/r/releases/%d/assets?name=a.txt", s.UploadURL(), id)
	resp, body = do(t, "POST", up, "hello", auth)
	if resp.StatusCode != 201 || !strings.Contains(string(body), `"state":"uploaded"`) {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	var asset map[string]any
	json.Unmarshal(body, &asset)
	resp, body = do(t, "POST", up, "hello", auth)
	if resp.StatusCode != 422 || !strings.Contains(string(body), `"code":"already_exists"`) || !strings.Contains(string(body), "Validation Failed") {
		t.Errorf("duplicate asset: %d %s", resp.StatusCode, body)
	}
	// Download: 302 to the bytes host, which serves the bytes and refuses
	// an Authorization header.
	assetURL := fmt.Sprintf("%s/repos/o/r/releases/assets/%d", s.APIURL(), int64(asset["id"].(float64)))
	resp, _ = do(t, "GET", assetURL, "", map[string]string{"Authorization": "Bearer " + tok, "Accept": "application/octet-stream"})
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != 302 || loc == nil || !strings.HasPrefix(loc.String(), s.BytesURL()) {
		t.Fatalf("asset download: %d %v", resp.StatusCode, loc)
	}
	if resp, body = do(t, "GET", loc.String(), "", nil); resp.StatusCode != 200 || string(body) != "hello" {
		t.Errorf("bytes host: %d %q", resp.StatusCode, body)
	}
	if resp, _ = do(t, "GET", loc.String(), "", auth); resp.StatusCode != 400 {
		t.Errorf("bytes host accepted an Authorization header: %d", resp.StatusCode)
	}
	// Publish; then the release is immutable.
	resp, body = do(t, "PATCH", fmt.Sprintf("%s/repos/o/r/releases/%d", s.APIURL(), id), `{"draft":false}`, auth)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"immutable":true`) {
		t.Fatalf("publish: %d %s", resp.StatusCode, body)
	}
	if resp, _ = do(t, "POST", strings.Replace(up, "a.txt", "b.txt", 1), "x", auth); resp.StatusCode != 422 {
		t.Errorf("upload to an immutable release: %d", resp.StatusCode)
	}
	resp, body = do(t, "GET", s.APIURL()+"/repos/o/r/releases/tags/v1", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"tag_name":"v1"`) {
		t.Errorf("get by tag: %d %s", resp.StatusCode, body)
	}
	if resp, _ = do(t, "POST", s.APIURL()+"/repos/o/r/releases", `{"tag_name":"v1"}`, auth); resp.StatusCode != 422 {
		t.Errorf("second published release with the same tag: %d", resp.StatusCode)
	}
	if resp, _ = do(t, "DELETE", fmt.Sprintf("%s/repos/o/r/releases/%d", s.APIURL(), id), "", auth); resp.StatusCode != 204 {
		t.Errorf("delete: %d", resp.StatusCode)
	}
	if resp, body = do(t, "POST", s.APIURL()+"/repos/o/r/releases", `{"tag_name":"v1"}`, auth); resp.StatusCode != 422 || !strings.Contains(string(body), "immutable") {
		t.Errorf("reusing the tag of a deleted immutable release: %d %s", resp.StatusCode, body)
	}
}

func TestTarballRedirectAndDrop(t *testing.T) {
	s := NewT(t, Options{})
	p := filepath.Join(t.TempDir(), "x.tar.gz")
	os.WriteFile(p, []byte(strings.Repeat("z", 10000)), 0o644)
	s.AddTags("o/r", Tag{Name: "v1"})
	s.SetTarball("o/r", "v1", p)
	resp, _ := do(t, "GET", s.APIURL()+"/repos/o/r/tarball/v1", "", nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 302 || !strings.HasPrefix(loc, s.BytesURL()) {
		t.Fatalf("tarball: %d %s", resp.StatusCode, loc)
	}
	if resp, _ := do(t, "GET", s.APIURL()+"/repos/o/r/tarball/v2", "", nil); resp.StatusCode != 404 {
		t.Errorf("unknown ref: %d", resp.StatusCode)
	}
	s.DropAfter(RouteTarballBytes, 1234)
	r, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r.Body)
	if err == nil || n != 1234 {
		t.Errorf("dropped download: %d bytes, err %v", n, err)
	}
	s.Fail(RouteTarball, 1, 502)
	if resp, _ := do(t, "GET", s.APIURL()+"/repos/o/r/tarball/v1", "", nil); resp.StatusCode != 502 {
		t.Errorf("injected 502: %d", resp.StatusCode)
	}
	if got := s.Requests(); got[len(got)-1].Route != RouteTarball || got[len(got)-1].Status != 502 {
		t.Errorf("log: %+v", got[len(got)-1])
	}
}

// The latest release follows GitHub's make_latest: newly published
// releases default to true, false leaves it, true on a draft or
// prerelease is refused, legacy (and a deleted latest) falls back to the
// newest created_at, then the higher version.
func TestLatestRelease(t *testing.T) {
	clock := NewClock(time.Unix(1700000000, 0))
	s := NewT(t, Options{Token: tok, Now: clock.Now})
	s.AddTags("o/r")
	latest := func() string {
		t.Helper()
		resp, body := do(t, "GET", s.APIURL()+"/repos/o/r/releases/latest", "", nil)
		var rel map[string]any
		json.Unmarshal(body, &rel)
		if resp.StatusCode == 404 {
			return "(none)"
		}
		l, ok := s.Latest("o/r")
		if resp.StatusCode != 200 || !ok || l.Tag != rel["tag_name"] || !l.IsLatest {
			t.Errorf("GET latest %d %s, Latest() %s %v", resp.StatusCode, body, l.Tag, ok)
		}
		return rel["tag_name"].(string)
	}
	create := func(in string) int64 {
		t.Helper()
		clock.Sleep(context.Background(), time.Minute)
		resp, body := do(t, "POST", s.APIURL()+"/repos/o/r/releases", in, auth)
		if resp.StatusCode != 201 {
			t.Fatalf("create %s: %d %s", in, resp.StatusCode, body)
		}
		var rel map[string]any
		json.Unmarshal(body, &rel)
		return int64(rel["id"].(float64))
	}
	patch := func(id int64, in string) int {
		resp, _ := do(t, "PATCH", fmt.Sprintf("%s/repos/o/r/releases/%d", s.APIURL(), id), in, auth)
		return resp.StatusCode
	}
	if got := latest(); got != "(none)" {
		t.Errorf("empty repository: latest %s", got)
	}
	v1 := create(`{"tag_name":"v1.0"}`)
	if got := latest(); got != "v1.0" {
		t.Errorf("first release: latest %s", got)
	}
	v2 := create(`{"tag_name":"v2.0","make_latest":"false"}`)
	if got := latest(); got != "v1.0" {
		t.Errorf("make_latest false: latest %s", got)
	}
	d := create(`{"tag_name":"v3.0","draft":true}`)
	if got := latest(); got != "v1.0" {
		t.Errorf("a draft: latest %s", got)
	}
	if code := patch(d, `{"make_latest":"true"}`); code != 422 {
		t.Errorf("make_latest true on a draft: %d", code)
	}
	if code := patch(d, `{"make_latest":"sometimes"}`); code != 422 {
		t.Errorf("make_latest sometimes: %d", code)
	}
	// Publishing a draft without make_latest makes it the latest.
	if code := patch(d, `{"draft":false}`); code != 200 || latest() != "v3.0" {
		t.Errorf("published draft: %d, latest %s", code, latest())
	}
	// Publishing with make_latest false, then making an old one latest.
	d4 := create(`{"tag_name":"v4.0","draft":true}`)
	if code := patch(d4, `{"draft":false,"make_latest":"false"}`); code != 200 || latest() != "v3.0" {
		t.Errorf("published with false: %d, latest %s", code, latest())
	}
	if code := patch(v1, `{"make_latest":"true"}`); code != 200 || latest() != "v1.0" {
		t.Errorf("old release made latest: %d, latest %s", code, latest())
	}
	pre := create(`{"tag_name":"v5.0-rc1","prerelease":true}`)
	if code := patch(pre, `{"make_latest":"true"}`); code != 422 || latest() != "v1.0" {
		t.Errorf("prerelease made latest: %d, latest %s", code, latest())
	}
	// Legacy: the newest created (v4.0; the prerelease does not count).
	if code := patch(v2, `{"make_latest":"legacy"}`); code != 200 || latest() != "v4.0" {
		t.Errorf("legacy: %d, latest %s", code, latest())
	}
	// Same created_at: the higher version (numerically) wins.
	s.AddRelease("o/r", Release{Tag: "v10.0", Latest: "legacy"})
	s.AddRelease("o/r", Release{Tag: "v9.0", Latest: "legacy"})
	if got := latest(); got != "v10.0" {
		t.Errorf("legacy tie: latest %s, want v10.0", got)
	}
	// Deleting the explicit latest falls back to legacy.
	if code := patch(v2, `{"make_latest":"true"}`); code != 200 || latest() != "v2.0" {
		t.Errorf("v2 made latest: %d, latest %s", code, latest())
	}
	do(t, "DELETE", fmt.Sprintf("%s/repos/o/r/releases/%d", s.APIURL(), v2), "", auth)
	if got := latest(); got != "v10.0" {
		t.Errorf("after deleting the latest: %s", got)
	}
	n := 0
	for _, r := range s.Releases("o/r") {
		if r.IsLatest {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d releases marked IsLatest", n)
	}
}

// OnChange sees every change with the lock held, as snapshots.
func TestOnChange(t *testing.T) {
	s := NewT(t, Options{Token: tok})
	s.AddTags("o/r")
	var seen []string
	s.OnChange = func(repo string, rels []Release) {
		seen = append(seen, fmt.Sprintf("%s:%d", repo, len(rels)))
	}
	_, body := do(t, "POST", s.APIURL()+"/repos/o/r/releases", `{"tag_name":"v1","draft":true}`, auth)
	var rel map[string]any
	json.Unmarshal(body, &rel)
	id := int64(rel["id"].(float64))
	do(t, "POST", fmt.Sprintf("%s/repos/o/r/releases/%d/assets?name=a", s.UploadURL(), id), "x", auth)
	do(t, "PATCH", fmt.Sprintf("%s/repos/o/r/releases/%d", s.APIURL(), id), `{"draft":false}`, auth)
	do(t, "DELETE", fmt.Sprintf("%s/repos/o/r/releases/%d", s.APIURL(), id), "", auth)
	if got := strings.Join(seen, " "); got != "o/r:1 o/r:1 o/r:1 o/r:0" {
		t.Errorf("changes seen: %s", got)
	}
}
