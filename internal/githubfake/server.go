package githubfake

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Routes, as http.ServeMux patterns relative to the API root (/api/v3),
// the uploads root (/api/uploads) or the bytes host. They name routes for
// Fail and DropAfter and appear in Request.Route.
const (
	RouteTags         = "GET /repos/{owner}/{repo}/tags"
	RouteMatchingRefs = "GET /repos/{owner}/{repo}/git/matching-refs/{ref...}"
	RouteCommit       = "GET /repos/{owner}/{repo}/commits/{ref...}"
	RouteTarball      = "GET /repos/{owner}/{repo}/tarball/{ref...}"
	RouteReleases     = "GET /repos/{owner}/{repo}/releases"
	RouteReleaseByTag = "GET /repos/{owner}/{repo}/releases/tags/{tag}"
	RouteRelease      = "GET /repos/{owner}/{repo}/releases/{id}"
	// RouteLatestRelease answers the repository's latest release (see
	// Server.Latest for how it is chosen).
	RouteLatestRelease = "GET /repos/{owner}/{repo}/releases/latest"
	RouteCreateRelease = "POST /repos/{owner}/{repo}/releases"
	RouteUpdateRelease = "PATCH /repos/{owner}/{repo}/releases/{id}"
	RouteDeleteRelease = "DELETE /repos/{owner}/{repo}/releases/{id}"
	RouteAssets        = "GET /repos/{owner}/{repo}/releases/{id}/assets"
	RouteAsset         = "GET /repos/{owner}/{repo}/releases/assets/{id}"
	RouteDeleteAsset   = "DELETE /repos/{owner}/{repo}/releases/assets/{id}"
	// RouteContents serves files of a repository at a ref (contents.go).
	RouteContents = "GET /repos/{owner}/{repo}/contents/{path...}"
	// RouteUpload is on the uploads root.
	RouteUpload = "POST /repos/{owner}/{repo}/releases/{id}/assets"
	// RouteTarballBytes and RouteAssetBytes are on the bytes host.
	RouteTarballBytes = "GET /{owner}/{repo}/legacy.tar.gz/{ref...}"
	RouteAssetBytes   = "GET /release-assets/{id}"
)

// Hosts, as they appear in Request.Host.
const (
	HostAPI     = "api"
	HostUploads = "uploads"
	HostBytes   = "bytes"
)

const docsURL = "https://docs.github.com/rest"

// releasesTwo is the mux pattern behind RouteReleaseByTag and RouteAssets.
const releasesTwo = "GET /repos/{owner}/{repo}/releases/{a}/{b}"

// routeName names the route of a request matched by pattern, setting the
// path values the route's handler reads.
func routeName(pattern string, r *http.Request) string {
	switch {
	case pattern == "/":
		return ""
	case pattern != releasesTwo:
		return pattern
	case r.PathValue("a") == "tags":
		r.SetPathValue("tag", r.PathValue("b"))
		return RouteReleaseByTag
	case r.PathValue("b") == "assets":
		r.SetPathValue("id", r.PathValue("a"))
		return RouteAssets
	}
	return ""
}

// Options configure a Server.
type Options struct {
	// Token, when set, is the only token accepted (as "Bearer T" or
	// "token T"); writes without it get 401, and drafts are visible only
	// with it. Anonymous reads of public data always work.
	Token string
	// Immutable enables immutable releases for every repository: once
	// published, a release's assets cannot be uploaded or deleted, it
	// cannot go back to draft or change its tag, and its tag can never be
	// used by another release, even after the release is deleted.
	Immutable bool
	// RateLimit is the core limit per hour (default 5000).
	RateLimit int
	// Now is the server clock for rate-limit resets (default time.Now).
	Now func() time.Time
	// Dir stores uploaded asset bytes (default: a temporary directory that
	// Close removes).
	Dir string
}

// Tag is one tag of a repository.
type Tag struct {
	Name   string
	Commit string
}

// Release is a snapshot of a release.
type Release struct {
	ID                           int64
	Tag, Name, Body, Target      string
	Draft, Prerelease, Immutable bool
	// Latest is the make_latest value last sent ("true", "false",
	// "legacy"); IsLatest tells whether the release is the repository's
	// latest release now (Server.Latest).
	Latest    string
	IsLatest  bool
	Created   time.Time
	Published time.Time
	Assets    []Asset
}

// Asset is a snapshot of a release asset.
type Asset struct {
	ID          int64
	Name, Label string
	// State is "uploaded", or "starter" for an upload that broke off.
	State       string
	ContentType string
	Size        int64
	SHA256      string
}

// Request is one entry of the request log.
type Request struct {
	// Host is HostAPI, HostUploads or HostBytes.
	Host   string
	Method string
	// Path is relative to the host's root (without /api/v3).
	Path  string
	Query string
	// Route is the matched route pattern ("" if none matched).
	Route string
	// Status is the response status (0 if the connection was dropped
	// before a status was sent).
	Status int
	// Authorization is the Authorization header as received.
	Authorization string
	// IfNoneMatch is the If-None-Match header as received.
	IfNoneMatch string
}

// Server is a fake GitHub. Create it with New or NewT.
type Server struct {
	// AfterRequest, if set, is called after each request to any host has
	// been answered, outside the server's lock (it may call Releases).
	AfterRequest func(Request)
	// OnChange, if set, is called after every change of a repository's
	// releases or assets (create, update, delete, upload), with the
	// server's lock held and snapshots of the repository's releases, newest
	// first, as Releases returns them: it sees every intermediate state,
	// even of concurrent requests. It must not call the Server's methods.
	// Set it before the first request.
	OnChange func(repo string, releases []Release)

	opts     Options
	api      *httptest.Server
	bytes    *httptest.Server
	dir      string
	ownDir   bool
	bytesURL string

	mu       sync.Mutex
	repos    map[string]*repo
	nextID   int64
	log      []Request
	faults   []*fault
	rlLimit  int
	rlRemain int
	rlReset  time.Time
}

type repo struct {
	tags     []Tag
	tarballs map[string]string
	releases []*release // in creation order
	burned   map[string]bool
	// latestID is the release last published (or edited) with
	// make_latest "true"; 0 means the legacy rule decides (see Latest).
	latestID int64
}

type release struct {
	Release
	assets []*asset
}

type asset struct {
	Asset
	path      string
	releaseID int64
	created   time.Time
}

type fault struct {
	route      string
	n          int
	status     int
	drop       int64 // >= 0: drop the connection after this many body bytes
	retryAfter time.Duration
	asset      string // for uploads: only this asset name
}

type ctxKey struct{}

type reqState struct {
	req  *Request
	drop int64
}

// New starts a fake GitHub. Call Close when done.
func New(o Options) *Server {
	if o.RateLimit <= 0 {
		o.RateLimit = 5000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{opts: o, repos: map[string]*repo{}, nextID: 1000, rlLimit: o.RateLimit, rlRemain: o.RateLimit}
	s.rlReset = o.Now().Add(time.Hour)
	s.dir = o.Dir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "githubfake-")
		if err != nil {
			panic(fmt.Sprintf("githubfake: %v", err))
		}
		s.dir, s.ownDir = d, true
	}

	apiMux := http.NewServeMux()
	s.route(apiMux, HostAPI, RouteTags, s.handleTags)
	s.route(apiMux, HostAPI, RouteMatchingRefs, s.handleMatchingRefs)
	s.route(apiMux, HostAPI, RouteCommit, s.handleCommit)
	s.route(apiMux, HostAPI, RouteTarball, s.handleTarball)
	s.route(apiMux, HostAPI, RouteReleases, s.handleListReleases)
	s.route(apiMux, HostAPI, RouteRelease, s.handleGetRelease)
	s.route(apiMux, HostAPI, RouteLatestRelease, s.handleLatestRelease)
	s.route(apiMux, HostAPI, RouteCreateRelease, s.handleCreateRelease)
	s.route(apiMux, HostAPI, RouteUpdateRelease, s.handleUpdateRelease)
	s.route(apiMux, HostAPI, RouteDeleteRelease, s.handleDeleteRelease)
	// releases/tags/{tag} and releases/{id}/assets overlap as ServeMux
	// patterns, so one pattern serves both and names the route.
	s.route(apiMux, HostAPI, releasesTwo, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.PathValue("a") == "tags":
			s.handleReleaseByTag(w, r)
		case r.PathValue("b") == "assets":
			s.handleListAssets(w, r)
		default:
			s.notFound(w, r)
		}
	})
	s.route(apiMux, HostAPI, RouteAsset, s.handleGetAsset)
	s.route(apiMux, HostAPI, RouteDeleteAsset, s.handleDeleteAsset)
	s.route(apiMux, HostAPI, RouteContents, s.handleContents)
	s.route(apiMux, HostAPI, "/", s.notFound)
	upMux := http.NewServeMux()
	s.route(upMux, HostUploads, RouteUpload, s.handleUpload)
	s.route(upMux, HostUploads, "/", s.notFound)
	top := http.NewServeMux()
	top.Handle("/api/v3/", http.StripPrefix("/api/v3", apiMux))
	top.Handle("/api/uploads/", http.StripPrefix("/api/uploads", upMux))
	top.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	s.api = httptest.NewServer(top)

	bytesMux := http.NewServeMux()
	s.route(bytesMux, HostBytes, RouteTarballBytes, s.handleTarballBytes)
	s.route(bytesMux, HostBytes, RouteAssetBytes, s.handleAssetBytes)
	s.route(bytesMux, HostBytes, "/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	s.bytes = httptest.NewServer(bytesMux)
	// The bytes host is reached by another name than the API, as
	// codeload.github.com is.
	u, _ := url.Parse(s.bytes.URL)
	_, port, _ := net.SplitHostPort(u.Host)
	s.bytesURL = "http://localhost:" + port
	return s
}

// NewT starts a fake GitHub that is closed when the test ends.
func NewT(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	s := New(o)
	t.Cleanup(s.Close)
	return s
}

// Close stops the servers and removes stored asset bytes.
func (s *Server) Close() {
	s.api.Close()
	s.bytes.Close()
	if s.ownDir {
		os.RemoveAll(s.dir)
	}
}

// ServerURL is the GITHUB_SERVER_URL of the fake (web UI root).
func (s *Server) ServerURL() string { return s.api.URL }

// APIURL is the GITHUB_API_URL of the fake (GHES form: .../api/v3).
func (s *Server) APIURL() string { return s.api.URL + "/api/v3" }

// UploadURL is the uploads root (GHES form: .../api/uploads).
func (s *Server) UploadURL() string { return s.api.URL + "/api/uploads" }

// BytesURL is the root of the bytes host (codeload / S3 stand-in).
func (s *Server) BytesURL() string { return s.bytesURL }

// Getenv returns an environment lookup with GITHUB_API_URL,
// GITHUB_SERVER_URL and GITHUB_TOKEN (if Options.Token is set) pointing at
// the fake, overlaid by extra.
func (s *Server) Getenv(extra map[string]string) func(string) string {
	env := map[string]string{"GITHUB_API_URL": s.APIURL(), "GITHUB_SERVER_URL": s.ServerURL()}
	if s.opts.Token != "" {
		env["GITHUB_TOKEN"] = s.opts.Token
	}
	for k, v := range extra {
		env[k] = v
	}
	return func(k string) string { return env[k] }
}

func (s *Server) repoLocked(name string) *repo {
	r := s.repos[strings.ToLower(name)]
	if r == nil {
		r = &repo{tarballs: map[string]string{}, burned: map[string]bool{}}
		s.repos[strings.ToLower(name)] = r
	}
	return r
}

// AddTags appends tags to repository "owner/name" (created if needed), in
// the order the tags endpoint lists them. A tag without Commit gets a
// commit derived from its name.
func (s *Server) AddTags(repoName string, tags ...Tag) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repoLocked(repoName)
	for _, t := range tags {
		if t.Commit == "" {
			t.Commit = fakeSHA(repoName + "@" + t.Name)
		}
		r.tags = append(r.tags, t)
	}
}

// SetTarball makes the tarball endpoint of repository "owner/name" serve
// the file at path for ref.
func (s *Server) SetTarball(repoName, ref, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repoLocked(repoName).tarballs[ref] = path
}

// AddRelease stores a release (its ID and timestamps are assigned) with no
// assets, as if created through the API, and returns its snapshot. A
// published one becomes the latest release as the API's make_latest
// would make it: rel.Latest "" (the API's default) or "true" makes it the
// latest, "legacy" hands the choice to the legacy rule, "false" changes
// nothing (see Latest).
func (s *Server) AddRelease(repoName string, rel Release) Release {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repoLocked(repoName)
	rel.ID = s.id()
	rel.Created = s.opts.Now()
	rel.Assets = nil
	rel.IsLatest = false
	if !rel.Draft {
		rel.Published = rel.Created
		rel.Immutable = rel.Immutable || s.opts.Immutable
	}
	x := &release{Release: rel}
	r.releases = append(r.releases, x)
	if !rel.Draft && !rel.Prerelease {
		setLatestLocked(r, x, cmp.Or(rel.Latest, "true"))
	}
	return x.snapshotIn(r)
}

// Releases returns snapshots of the releases of "owner/name", newest
// first, drafts included.
func (s *Server) Releases(repoName string) []Release {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[strings.ToLower(repoName)]
	if r == nil {
		return nil
	}
	return r.snapshotsLocked()
}

func (rp *repo) snapshotsLocked() []Release {
	var out []Release
	for i := len(rp.releases) - 1; i >= 0; i-- {
		out = append(out, rp.releases[i].snapshotIn(rp))
	}
	return out
}

// Latest returns the latest release of "owner/name", as GET
// /repos/{owner}/{repo}/releases/latest answers it, modelled on GitHub's
// documented make_latest (create and update a release):
//
//   - Only a published, non-prerelease release can be the latest; asking
//     for make_latest "true" on a draft or prerelease is refused (422
//     "Latest release cannot be draft or prerelease").
//   - A release that is published with make_latest "true", or without
//     make_latest (the default for newly published releases is "true"),
//     becomes the latest. So does an already published one that is
//     updated with make_latest "true". "false" leaves the latest as it is.
//   - make_latest "legacy" (and a repository whose explicit latest was
//     deleted, or that never had one) uses the legacy rule: the published,
//     non-prerelease release created last (created_at), and among those
//     created at the same time the one whose tag is the higher version
//     (dot-separated numbers compared numerically).
func (s *Server) Latest(repoName string) (Release, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[strings.ToLower(repoName)]
	if r == nil {
		return Release{}, false
	}
	rel := r.latestLocked()
	if rel == nil {
		return Release{}, false
	}
	return rel.snapshotIn(r), true
}

// latestLocked returns the repository's latest release (see Latest).
func (rp *repo) latestLocked() *release {
	var best *release
	for _, rel := range rp.releases {
		if rel.Draft || rel.Prerelease {
			continue
		}
		if rel.ID == rp.latestID {
			return rel
		}
		if best == nil || rel.Created.After(best.Created) ||
			rel.Created.Equal(best.Created) && compareVersions(rel.Tag, best.Tag) > 0 {
			best = rel
		}
	}
	return best
}

// setLatestLocked applies a make_latest value to a published,
// non-prerelease release.
func setLatestLocked(rp *repo, rel *release, makeLatest string) {
	switch makeLatest {
	case "true":
		rp.latestID = rel.ID
	case "legacy":
		rp.latestID = 0
	}
}

// compareVersions compares the dot-separated numbers of two tags (a
// leading "v" and anything after the first character that is neither a
// digit nor a dot are ignored); a tag without numbers is the lowest.
func compareVersions(a, b string) int {
	num := func(s string) []int {
		s = strings.TrimPrefix(s, "v")
		if i := strings.IndexFunc(s, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
			s = s[:i]
		}
		var out []int
		for _, f := range strings.Split(s, ".") {
			n, err := strconv.Atoi(f)
			if err != nil {
				break
			}
			out = append(out, n)
		}
		return out
	}
	x, y := num(a), num(b)
	for i := 0; i < len(x) && i < len(y); i++ {
		if x[i] != y[i] {
			return cmp.Compare(x[i], y[i])
		}
	}
	return cmp.Compare(len(x), len(y))
}

// changedLocked reports a change of repository name's releases to
// OnChange.
func (s *Server) changedLocked(name string) {
	if s.OnChange == nil {
		return
	}
	if rp := s.repos[strings.ToLower(name)]; rp != nil {
		s.OnChange(name, rp.snapshotsLocked())
	}
}

// AssetBytes returns the stored bytes of an asset.
func (s *Server) AssetBytes(repoName string, id int64) ([]byte, error) {
	s.mu.Lock()
	a, err := s.assetByIDLocked(repoName, id)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return os.ReadFile(a.path)
}

// Fail makes the next n requests on route answer status (e.g. 502) with
// GitHub's error page, without doing anything.
func (s *Server) Fail(route string, n, status int) {
	s.addFault(&fault{route: route, n: n, status: status, drop: -1})
}

// SecondaryRateLimit makes the next n requests on route answer GitHub's
// 403 secondary rate limit with a Retry-After header.
func (s *Server) SecondaryRateLimit(route string, n int, retryAfter time.Duration) {
	s.addFault(&fault{route: route, n: n, status: http.StatusForbidden, drop: -1, retryAfter: retryAfter})
}

// DropAfter makes the next request on route lose its connection after k
// body bytes: k bytes of the response body for downloads, or k bytes of the
// request body for uploads (then, like GitHub, a broken asset in state
// "starter" is left behind).
func (s *Server) DropAfter(route string, k int64) {
	s.addFault(&fault{route: route, n: 1, drop: k})
}

// DropUpload makes the next n uploads of the asset named name lose their
// connection after k bytes of the request body, leaving a broken
// "starter" asset as GitHub does.
func (s *Server) DropUpload(name string, n int, k int64) {
	s.addFault(&fault{route: RouteUpload, n: n, drop: k, asset: name})
}

// addFault queues f for takeFault.
func (s *Server) addFault(f *fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// ClearFaults removes every pending Fail, DropAfter, DropUpload and
// SecondaryRateLimit fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// ExhaustRateLimit sets the remaining core requests to 0 until resetIn
// from now (by Options.Now): API requests get GitHub's 403 rate-limit
// answer until then.
func (s *Server) ExhaustRateLimit(resetIn time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rlRemain = 0
	s.rlReset = s.opts.Now().Add(resetIn)
}

// SetRateLimit sets the remaining core requests and the reset time.
func (s *Server) SetRateLimit(remaining int, reset time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rlRemain, s.rlReset = remaining, reset
}

// Requests returns a copy of the request log.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.log...)
}

// CountRequests counts logged requests to the given hosts (all if none).
func (s *Server) CountRequests(hosts ...string) int {
	n := 0
	for _, r := range s.Requests() {
		if len(hosts) == 0 || contains(hosts, r.Host) {
			n++
		}
	}
	return n
}

// ResetRequests clears the request log.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (s *Server) id() int64 { s.nextID++; return s.nextID }

func fakeSHA(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:20])
}

// statusWriter records the status for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	// decided, if set, is called once with the status, before any of the
	// response goes out.
	decided func(status int)
}

func (w *statusWriter) decide(code int) {
	if w.status == 0 {
		w.status = code
		if w.decided != nil {
			w.decided(code)
		}
	}
}

func (w *statusWriter) WriteHeader(code int) {
	w.decide(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.decide(http.StatusOK)
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// route registers h for pattern with logging, auth, rate limits and faults.
func (s *Server) route(mux *http.ServeMux, host, pattern string, h http.HandlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rec := Request{Host: host, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
			Authorization: r.Header.Get("Authorization"), IfNoneMatch: r.Header.Get("If-None-Match")}
		rec.Route = routeName(pattern, r)
		// The request is logged as soon as its status is decided, before
		// the client can see any of the response (a test reading the log
		// right after its call returns finds it), or at the end with
		// status 0 for a connection dropped before a status.
		logged := false
		logIt := func(status int) {
			rec.Status, logged = status, true
			s.mu.Lock()
			s.log = append(s.log, rec)
			s.mu.Unlock()
		}
		sw := &statusWriter{ResponseWriter: w, decided: logIt}
		st := &reqState{req: &rec, drop: -1}
		defer func() {
			if !logged {
				logIt(0)
			}
			if s.AfterRequest != nil {
				s.AfterRequest(rec)
			}
		}()
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, st))

		if host == HostBytes {
			if r.Header.Get("Authorization") != "" {
				// Like S3 with a presigned URL.
				writeText(sw, http.StatusBadRequest, "application/xml", `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified</Message></Error>`)
				return
			}
		} else {
			auth := r.Header.Get("Authorization")
			if auth != "" && s.opts.Token != "" && !s.validAuth(auth) {
				s.errorJSON(sw, r, http.StatusUnauthorized, "Bad credentials", nil)
				return
			}
			if !s.rateLimitHeaders(sw) {
				writeText(sw, http.StatusForbidden, "application/json; charset=utf-8", `{"message":"API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)","documentation_url":"https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}`)
				return
			}
			if r.Method != http.MethodGet && s.opts.Token != "" && !s.validAuth(auth) {
				s.errorJSON(sw, r, http.StatusUnauthorized, "Requires authentication", nil)
				return
			}
		}
		if f := s.takeFault(rec.Route, r.URL.Query().Get("name")); f != nil {
			if f.retryAfter > 0 {
				sw.Header().Set("Retry-After", strconv.Itoa(int(f.retryAfter/time.Second)))
				s.errorJSON(sw, r, f.status, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.", nil)
				return
			}
			if f.drop < 0 {
				writeText(sw, f.status, "text/html", fmt.Sprintf("<html><body><h1>%d %s</h1></body></html>\n", f.status, http.StatusText(f.status)))
				return
			}
			st.drop = f.drop
		}
		h(sw, r)
	})
}

// writeText answers status with body, a complete document of contentType.
func writeText(w http.ResponseWriter, status int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func (s *Server) validAuth(auth string) bool {
	return s.opts.Token == "" || auth == "Bearer "+s.opts.Token || auth == "token "+s.opts.Token
}

func (s *Server) authed(r *http.Request) bool {
	a := r.Header.Get("Authorization")
	return a != "" && s.validAuth(a)
}

func (s *Server) takeFault(route, asset string) *fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.route == route && f.n > 0 && (f.asset == "" || f.asset == asset) {
			f.n--
			if f.n == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}

// rateLimitHeaders charges one request and sets the X-RateLimit-*
// headers; it returns false when the limit is exhausted.
func (s *Server) rateLimitHeaders(w http.ResponseWriter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if !now.Before(s.rlReset) {
		s.rlRemain = s.rlLimit
		s.rlReset = now.Add(time.Hour)
	}
	ok := s.rlRemain > 0
	if ok {
		s.rlRemain--
	}
	s.setRateHeadersLocked(w.Header())
	w.Header().Set("X-GitHub-Request-Id", strconv.FormatInt(s.id(), 16))
	return ok
}

func (s *Server) setRateHeadersLocked(h http.Header) {
	h.Set("X-RateLimit-Limit", strconv.Itoa(s.rlLimit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(s.rlRemain))
	h.Set("X-RateLimit-Used", strconv.Itoa(s.rlLimit-s.rlRemain))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(s.rlReset.Unix(), 10))
	h.Set("X-RateLimit-Resource", "core")
}

// writeJSON answers v with ETag support: a GET whose If-None-Match matches
// gets a 304, which (as on GitHub) does not count against the rate limit.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	if r.Method == http.MethodGet && status == http.StatusOK {
		sum := sha256.Sum256(b)
		if s.notModified(w, r, `W/"`+hex.EncodeToString(sum[:16])+`"`, sameETag) {
			return
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	s.writeBody(w, r, status, b)
}

// sameETag reports whether an If-None-Match value is etag, weak or strong.
func sameETag(inm, etag string) bool {
	return strings.TrimPrefix(inm, "W/") == strings.TrimPrefix(etag, "W/")
}

// notModified sets the ETag (etag) and caching headers of an answer and,
// when the request's If-None-Match matches etag as match says, answers
// 304, which (as on GitHub) gives back the request's rate-limit charge,
// and returns true.
func (s *Server) notModified(w http.ResponseWriter, r *http.Request, etag string, match func(inm, etag string) bool) bool {
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, max-age=60, s-maxage=60")
	h.Set("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP")
	inm := r.Header.Get("If-None-Match")
	if inm == "" || !match(inm, etag) {
		return false
	}
	s.mu.Lock()
	s.rlRemain++
	s.setRateHeadersLocked(h)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNotModified)
	return true
}

// writeBody writes b, honouring a DropAfter fault for the request.
func (s *Server) writeBody(w http.ResponseWriter, r *http.Request, status int, b []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	if drop := dropAt(r); drop >= 0 && drop < int64(len(b)) {
		w.Write(b[:drop])
		breakOff(w)
	}
	w.Write(b)
}

// dropAt returns the number of body bytes after which a DropAfter fault
// breaks off the request, or -1.
func dropAt(r *http.Request) int64 {
	if st, _ := r.Context().Value(ctxKey{}).(*reqState); st != nil {
		return st.drop
	}
	return -1
}

// breakOff sends what w has buffered and aborts the handler, so that the
// client sees the response break off.
func breakOff(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	panic(http.ErrAbortHandler)
}

type apiError struct {
	Resource string `json:"resource,omitempty"`
	Code     string `json:"code"`
	Field    string `json:"field,omitempty"`
	Message  string `json:"message,omitempty"`
}

func (s *Server) errorJSON(w http.ResponseWriter, r *http.Request, status int, msg string, errs []apiError) {
	body := map[string]any{"message": msg, "documentation_url": docsURL, "status": strconv.Itoa(status)}
	if errs != nil {
		body["errors"] = errs
	}
	s.writeJSON(w, r, status, body)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.errorJSON(w, r, http.StatusNotFound, "Not Found", nil)
}

func (s *Server) validation(w http.ResponseWriter, r *http.Request, errs ...apiError) {
	s.errorJSON(w, r, http.StatusUnprocessableEntity, "Validation Failed", errs)
}

// pageParams reads per_page (default 30, max 100) and page (default 1).
func pageParams(r *http.Request) (perPage, page int) {
	perPage, page = 30, 1
	if v, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	if v, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && v > 0 {
		page = v
	}
	return perPage, page
}

// paginate returns the slice bounds for a page and sets the Link header
// the way GitHub does (next/last, and prev/first after page 1).
func (s *Server) paginate(w http.ResponseWriter, r *http.Request, total int) (lo, hi int) {
	perPage, page := pageParams(r)
	last := max((total+perPage-1)/perPage, 1)
	link := func(p int, rel string) string {
		u := url.URL{Scheme: "http", Host: r.Host, Path: "/api/v3" + r.URL.Path}
		q := r.URL.Query()
		q.Set("per_page", strconv.Itoa(perPage))
		q.Set("page", strconv.Itoa(p))
		u.RawQuery = q.Encode()
		return fmt.Sprintf(`<%s>; rel="%s"`, u.String(), rel)
	}
	var links []string
	if page > 1 {
		links = append(links, link(page-1, "prev"))
	}
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	lo = min((page-1)*perPage, total)
	hi = min(lo+perPage, total)
	return lo, hi
}

func repoName(r *http.Request) string { return r.PathValue("owner") + "/" + r.PathValue("repo") }

// getRepoLocked returns the request's repository or nil.
func (s *Server) getRepoLocked(r *http.Request) *repo {
	return s.repos[strings.ToLower(repoName(r))]
}

// pathID returns the {id} path value, or 0 (the ID of nothing) when it is
// not a number.
func pathID(r *http.Request) int64 {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return 0
	}
	return id
}

// lockRepo locks s.mu and returns the request's repository, for the
// caller to unlock s.mu. When there is none, it unlocks s.mu, answers 404
// and returns nil.
func (s *Server) lockRepo(w http.ResponseWriter, r *http.Request) *repo {
	s.mu.Lock()
	return foundLocked(s, w, r, s.getRepoLocked(r))
}

// lockRelease is lockRepo for the release findReleaseLocked finds (and
// its repository).
func (s *Server) lockRelease(w http.ResponseWriter, r *http.Request) (*repo, *release) {
	s.mu.Lock()
	rp, rel := s.findReleaseLocked(r)
	return rp, foundLocked(s, w, r, rel)
}

// lockAsset is lockRepo for the asset findAssetReqLocked finds (and its
// release).
func (s *Server) lockAsset(w http.ResponseWriter, r *http.Request) (*release, *asset) {
	s.mu.Lock()
	rel, a := s.findAssetReqLocked(r)
	return rel, foundLocked(s, w, r, a)
}

// foundLocked returns v; when v is nil it unlocks s.mu and answers 404.
func foundLocked[T any](s *Server, w http.ResponseWriter, r *http.Request, v *T) *T {
	if v == nil {
		s.mu.Unlock()
		s.notFound(w, r)
	}
	return v
}

// replyFound answers the JSON object that find, called with s.mu held,
// returns, or 404 when it returns nil.
func (s *Server) replyFound(w http.ResponseWriter, r *http.Request, find func() map[string]any) {
	s.mu.Lock()
	out := find()
	s.mu.Unlock()
	if out == nil {
		s.notFound(w, r)
		return
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// pageJSON returns the JSON objects, as object makes them, of the page of
// items the request asks for, and sets the Link header (see paginate).
func pageJSON[T any](s *Server, w http.ResponseWriter, r *http.Request, items []T, object func(T) map[string]any) []map[string]any {
	lo, hi := s.paginate(w, r, len(items))
	out := []map[string]any{}
	for _, it := range items[lo:hi] {
		out = append(out, object(it))
	}
	return out
}

func (s *Server) apiBase(r *http.Request) string { return "http://" + r.Host + "/api/v3" }

func (s *Server) handleTags(w http.ResponseWriter, r *http.Request) {
	rp := s.lockRepo(w, r)
	if rp == nil {
		return
	}
	base := s.apiBase(r) + "/repos/" + repoName(r)
	out := pageJSON(s, w, r, rp.tags, func(t Tag) map[string]any {
		return map[string]any{
			"name":        t.Name,
			"zipball_url": base + "/zipball/refs/tags/" + t.Name,
			"tarball_url": base + "/tarball/refs/tags/" + t.Name,
			"commit":      map[string]any{"sha": t.Commit, "url": base + "/commits/" + t.Commit},
			"node_id":     "REF_" + t.Name,
		}
	})
	s.mu.Unlock()
	s.writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) handleMatchingRefs(w http.ResponseWriter, r *http.Request) {
	rp := s.lockRepo(w, r)
	if rp == nil {
		return
	}
	prefix := "refs/" + r.PathValue("ref")
	base := s.apiBase(r) + "/repos/" + repoName(r)
	out := []map[string]any{}
	tags := append([]Tag(nil), rp.tags...)
	s.mu.Unlock()
	// Not paginated, sorted by ref name, like GitHub.
	sort.Slice(tags, func(i, j int) bool { return tags[i].Name < tags[j].Name })
	for _, t := range tags {
		ref := "refs/tags/" + t.Name
		if !strings.HasPrefix(ref, prefix) {
			continue
		}
		out = append(out, map[string]any{
			"ref": ref, "node_id": "REF_" + t.Name, "url": base + "/git/" + ref,
			"object": map[string]any{"sha": t.Commit, "type": "commit", "url": base + "/git/commits/" + t.Commit},
		})
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) resolveRef(rp *repo, ref string) (string, bool) {
	ref = strings.TrimPrefix(strings.TrimPrefix(ref, "refs/tags/"), "tags/")
	for _, t := range rp.tags {
		if t.Name == ref || t.Commit == ref {
			return t.Commit, true
		}
	}
	return "", false
}

func (s *Server) handleCommit(w http.ResponseWriter, r *http.Request) {
	rp := s.lockRepo(w, r)
	if rp == nil {
		return
	}
	sha, ok := s.resolveRef(rp, r.PathValue("ref"))
	s.mu.Unlock()
	if !ok {
		s.errorJSON(w, r, http.StatusUnprocessableEntity, "No commit found for SHA: "+r.PathValue("ref"), nil)
		return
	}
	if strings.Contains(r.Header.Get("Accept"), ".sha") {
		etag := `"` + sha + `"`
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.github.sha; charset=utf-8")
		s.writeBody(w, r, http.StatusOK, []byte(sha))
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"sha": sha, "url": s.apiBase(r) + "/repos/" + repoName(r) + "/commits/" + sha})
}

// tarballRef is the {ref} path value of a tarball request, without
// refs/tags/.
func tarballRef(r *http.Request) string { return strings.TrimPrefix(r.PathValue("ref"), "refs/tags/") }

// tarball returns the file SetTarball set for the request's repository
// and tarballRef; ok is false when there is none.
func (s *Server) tarball(r *http.Request) (path string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rp := s.getRepoLocked(r); rp != nil {
		path, ok = rp.tarballs[tarballRef(r)]
	}
	return path, ok
}

func (s *Server) handleTarball(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.tarball(r); !ok {
		s.notFound(w, r)
		return
	}
	loc := s.bytesURL + "/" + repoName(r) + "/legacy.tar.gz/refs/tags/" + tarballRef(r)
	w.Header().Set("Location", loc)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusFound)
}

func (s *Server) handleTarballBytes(w http.ResponseWriter, r *http.Request) {
	path, _ := s.tarball(r)
	if path == "" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/x-gzip")
	w.Header().Set("Content-Disposition", "attachment; filename="+strings.ReplaceAll(repoName(r), "/", "-")+"-"+path[strings.LastIndex(path, "/")+1:])
	s.serveFile(w, r, path)
}

// serveFile streams a file with Content-Length, honouring DropAfter.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, path string) {
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	w.WriteHeader(http.StatusOK)
	if drop := dropAt(r); drop >= 0 && drop < st.Size() {
		io.CopyN(w, f, drop)
		breakOff(w)
	}
	io.Copy(w, f)
}

// snapshotIn returns a copy of the release of repository rp.
func (rel *release) snapshotIn(rp *repo) Release {
	out := rel.Release
	out.IsLatest = rp.latestLocked() == rel
	out.Assets = nil
	for _, a := range rel.assets {
		out.Assets = append(out.Assets, a.Asset)
	}
	return out
}

func (s *Server) releaseJSON(r *http.Request, rel *release) map[string]any {
	name := repoName(r)
	base := s.apiBase(r) + "/repos/" + name
	html := s.ServerURL() + "/" + name + "/releases/tag/" + rel.Tag
	if rel.Draft {
		html = s.ServerURL() + "/" + name + "/releases/tag/untagged-" + fakeSHA(strconv.FormatInt(rel.ID, 10))[:20]
	}
	var published any
	if !rel.Draft {
		published = rel.Published.UTC().Format(time.RFC3339)
	}
	assets := []map[string]any{}
	for _, a := range rel.assets {
		assets = append(assets, s.assetJSON(r, rel, a))
	}
	return map[string]any{
		"id": rel.ID, "node_id": "RE_" + strconv.FormatInt(rel.ID, 10),
		"url":              base + "/releases/" + strconv.FormatInt(rel.ID, 10),
		"html_url":         html,
		"assets_url":       base + "/releases/" + strconv.FormatInt(rel.ID, 10) + "/assets",
		"upload_url":       s.UploadURL() + "/repos/" + name + "/releases/" + strconv.FormatInt(rel.ID, 10) + "/assets{?name,label}",
		"tarball_url":      base + "/tarball/" + rel.Tag,
		"zipball_url":      base + "/zipball/" + rel.Tag,
		"tag_name":         rel.Tag,
		"target_commitish": rel.Target,
		"name":             rel.Name,
		"body":             rel.Body,
		"draft":            rel.Draft,
		"prerelease":       rel.Prerelease,
		"immutable":        rel.Immutable,
		"created_at":       rel.Created.UTC().Format(time.RFC3339),
		"published_at":     published,
		"author":           map[string]any{"login": "github-actions[bot]", "id": 41898282, "type": "Bot"},
		"assets":           assets,
	}
}

func (s *Server) assetJSON(r *http.Request, rel *release, a *asset) map[string]any {
	name := repoName(r)
	m := map[string]any{
		"id": a.ID, "node_id": "RA_" + strconv.FormatInt(a.ID, 10),
		"url":                  s.apiBase(r) + "/repos/" + name + "/releases/assets/" + strconv.FormatInt(a.ID, 10),
		"browser_download_url": s.ServerURL() + "/" + name + "/releases/download/" + rel.Tag + "/" + a.Name,
		"name":                 a.Name, "label": a.Label, "state": a.State,
		"content_type": a.ContentType, "size": a.Size, "download_count": 0,
		"created_at": a.created.UTC().Format(time.RFC3339), "updated_at": a.created.UTC().Format(time.RFC3339),
		"uploader": map[string]any{"login": "github-actions[bot]", "id": 41898282, "type": "Bot"},
	}
	if a.State == "uploaded" {
		m["digest"] = "sha256:" + a.SHA256
	}
	return m
}

// visibleTo returns whether the request may see a release: a draft only
// with a valid token.
func (s *Server) visibleTo(r *http.Request) func(*release) bool {
	return func(rel *release) bool { return !rel.Draft || s.authed(r) }
}

// visibleReleasesLocked returns the releases the request may see, newest
// first.
func (s *Server) visibleReleasesLocked(r *http.Request, rp *repo) []*release {
	visible := s.visibleTo(r)
	var out []*release
	for i := len(rp.releases) - 1; i >= 0; i-- {
		if rel := rp.releases[i]; visible(rel) {
			out = append(out, rel)
		}
	}
	return out
}

// release returns the release of rp with ID id among those show admits
// (nil: all), or nil (also when rp is nil).
func (rp *repo) release(id int64, show func(*release) bool) *release {
	if rp == nil {
		return nil
	}
	for _, rel := range rp.releases {
		if rel.ID == id && (show == nil || show(rel)) {
			return rel
		}
	}
	return nil
}

// asset returns the asset of rp with ID id, and its release, among the
// releases show admits (nil: all), or nils (also when rp is nil).
func (rp *repo) asset(id int64, show func(*release) bool) (*release, *asset) {
	if rp == nil {
		return nil, nil
	}
	for _, rel := range rp.releases {
		if show != nil && !show(rel) {
			continue
		}
		for _, a := range rel.assets {
			if a.ID == id {
				return rel, a
			}
		}
	}
	return nil, nil
}

func (s *Server) handleListReleases(w http.ResponseWriter, r *http.Request) {
	rp := s.lockRepo(w, r)
	if rp == nil {
		return
	}
	out := pageJSON(s, w, r, s.visibleReleasesLocked(r, rp), func(rel *release) map[string]any {
		return s.releaseJSON(r, rel)
	})
	s.mu.Unlock()
	s.writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) handleReleaseByTag(w http.ResponseWriter, r *http.Request) {
	s.replyFound(w, r, func() map[string]any {
		rp := s.getRepoLocked(r)
		if rp == nil {
			return nil
		}
		for _, rel := range s.visibleReleasesLocked(r, rp) {
			if !rel.Draft && rel.Tag == r.PathValue("tag") {
				return s.releaseJSON(r, rel)
			}
		}
		return nil
	})
}

// findReleaseLocked finds the release the {id} path value names, if the
// request may see it, and returns it with the request's repository.
func (s *Server) findReleaseLocked(r *http.Request) (*repo, *release) {
	rp := s.getRepoLocked(r)
	return rp, rp.release(pathID(r), s.visibleTo(r))
}

func (s *Server) handleLatestRelease(w http.ResponseWriter, r *http.Request) {
	s.replyFound(w, r, func() map[string]any {
		if rp := s.getRepoLocked(r); rp != nil {
			if rel := rp.latestLocked(); rel != nil {
				return s.releaseJSON(r, rel)
			}
		}
		return nil
	})
}

// checkMakeLatest validates a make_latest value for a release that will
// be draft or prerelease as given.
func checkMakeLatest(v *string, draft, prerelease bool) []apiError {
	if v == nil {
		return nil
	}
	switch *v {
	case "true":
		if draft || prerelease {
			return []apiError{{Resource: "Release", Code: "custom", Field: "make_latest",
				Message: "Latest release cannot be draft or prerelease."}}
		}
	case "false", "legacy":
	default:
		return []apiError{{Resource: "Release", Code: "invalid", Field: "make_latest"}}
	}
	return nil
}

func (s *Server) handleGetRelease(w http.ResponseWriter, r *http.Request) {
	s.replyFound(w, r, func() map[string]any {
		if _, rel := s.findReleaseLocked(r); rel != nil {
			return s.releaseJSON(r, rel)
		}
		return nil
	})
}

type releaseInput struct {
	TagName    *string `json:"tag_name"`
	Target     *string `json:"target_commitish"`
	Name       *string `json:"name"`
	Body       *string `json:"body"`
	Draft      *bool   `json:"draft"`
	Prerelease *bool   `json:"prerelease"`
	MakeLatest *string `json:"make_latest"`
}

// apply sets the fields of rel that in gives, except the tag and the
// draft state (an empty target_commitish is ignored).
func (in *releaseInput) apply(rel *release) {
	if in.Target != nil && *in.Target != "" {
		rel.Target = *in.Target
	}
	if in.Name != nil {
		rel.Name = *in.Name
	}
	if in.Body != nil {
		rel.Body = *in.Body
	}
	if in.Prerelease != nil {
		rel.Prerelease = *in.Prerelease
	}
	if in.MakeLatest != nil {
		rel.Latest = *in.MakeLatest
	}
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		s.errorJSON(w, r, http.StatusBadRequest, "Problems parsing JSON", nil)
		return false
	}
	return true
}

// tagConflictLocked returns a validation error if publishing rel under tag
// would clash with a published release or a burned (immutable) tag.
func tagConflictLocked(rp *repo, self *release, tag string) []apiError {
	if rp.burned[tag] {
		return []apiError{{Resource: "Release", Code: "custom", Field: "tag_name",
			Message: "tag_name " + tag + " was used by an immutable release and cannot be reused"}}
	}
	for _, rel := range rp.releases {
		if rel != self && !rel.Draft && rel.Tag == tag {
			return []apiError{{Resource: "Release", Code: "already_exists", Field: "tag_name"}}
		}
	}
	return nil
}

func (s *Server) handleCreateRelease(w http.ResponseWriter, r *http.Request) {
	var in releaseInput
	if !s.decode(w, r, &in) {
		return
	}
	rp := s.lockRepo(w, r)
	if rp == nil {
		return
	}
	if in.TagName == nil || *in.TagName == "" {
		s.mu.Unlock()
		s.validation(w, r, apiError{Resource: "Release", Code: "missing_field", Field: "tag_name"})
		return
	}
	rel := &release{Release: Release{ID: s.id(), Tag: *in.TagName, Created: s.opts.Now(), Target: "main"}}
	in.apply(rel)
	rel.Draft = in.Draft != nil && *in.Draft
	errs := checkMakeLatest(in.MakeLatest, rel.Draft, rel.Prerelease)
	if errs == nil && !rel.Draft {
		errs = tagConflictLocked(rp, nil, rel.Tag)
	}
	if errs != nil {
		s.mu.Unlock()
		s.validation(w, r, errs...)
		return
	}
	if !rel.Draft {
		rel.Published = rel.Created
		rel.Immutable = s.opts.Immutable
	}
	rp.releases = append(rp.releases, rel)
	if !rel.Draft && !rel.Prerelease {
		setLatestLocked(rp, rel, cmp.Or(rel.Latest, "true"))
	}
	out := s.releaseJSON(r, rel)
	s.changedLocked(repoName(r))
	s.mu.Unlock()
	w.Header().Set("Location", out["url"].(string))
	s.writeJSON(w, r, http.StatusCreated, out)
}

func (s *Server) handleUpdateRelease(w http.ResponseWriter, r *http.Request) {
	var in releaseInput
	if !s.decode(w, r, &in) {
		return
	}
	rp, rel := s.lockRelease(w, r)
	if rel == nil {
		return
	}
	tag := rel.Tag
	if in.TagName != nil && *in.TagName != "" {
		tag = *in.TagName
	}
	draft := rel.Draft
	if in.Draft != nil {
		draft = *in.Draft
	}
	if rel.Immutable && (tag != rel.Tag || draft) {
		s.mu.Unlock()
		s.validation(w, r, apiError{Resource: "Release", Code: "custom", Field: "tag_name",
			Message: "Cannot change the tag or draft state of an immutable release"})
		return
	}
	prerelease := rel.Prerelease
	if in.Prerelease != nil {
		prerelease = *in.Prerelease
	}
	errs := checkMakeLatest(in.MakeLatest, draft, prerelease)
	if errs == nil && !draft {
		errs = tagConflictLocked(rp, rel, tag)
	}
	if errs != nil {
		s.mu.Unlock()
		s.validation(w, r, errs...)
		return
	}
	publishing := rel.Draft && !draft
	rel.Tag = tag
	in.apply(rel)
	if publishing {
		rel.Published = s.opts.Now()
		rel.Immutable = s.opts.Immutable
	}
	rel.Draft = draft
	switch {
	case draft || prerelease:
	case publishing:
		// Newly published: make_latest defaults to true.
		setLatestLocked(rp, rel, cmp.Or(rel.Latest, "true"))
	case in.MakeLatest != nil:
		setLatestLocked(rp, rel, *in.MakeLatest)
	}
	out := s.releaseJSON(r, rel)
	s.changedLocked(repoName(r))
	s.mu.Unlock()
	s.writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) handleDeleteRelease(w http.ResponseWriter, r *http.Request) {
	rp, rel := s.lockRelease(w, r)
	if rel == nil {
		return
	}
	if rel.Immutable {
		rp.burned[rel.Tag] = true
	}
	if rp.latestID == rel.ID {
		rp.latestID = 0
	}
	for i, x := range rp.releases {
		if x == rel {
			rp.releases = append(rp.releases[:i], rp.releases[i+1:]...)
			break
		}
	}
	for _, a := range rel.assets {
		os.Remove(a.path)
	}
	s.changedLocked(repoName(r))
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleListAssets(w http.ResponseWriter, r *http.Request) {
	_, rel := s.lockRelease(w, r)
	if rel == nil {
		return
	}
	out := pageJSON(s, w, r, rel.assets, func(a *asset) map[string]any {
		return s.assetJSON(r, rel, a)
	})
	s.mu.Unlock()
	s.writeJSON(w, r, http.StatusOK, out)
}

// findAssetReqLocked finds the asset named by the {id} path value in a
// release the request may see.
func (s *Server) findAssetReqLocked(r *http.Request) (*release, *asset) {
	return s.getRepoLocked(r).asset(pathID(r), s.visibleTo(r))
}

func (s *Server) handleGetAsset(w http.ResponseWriter, r *http.Request) {
	rel, a := s.lockAsset(w, r)
	if a == nil {
		return
	}
	out := s.assetJSON(r, rel, a)
	s.mu.Unlock()
	if strings.Contains(r.Header.Get("Accept"), "application/octet-stream") {
		// A presigned URL on another host, as objects.githubusercontent.com.
		w.Header().Set("Location", fmt.Sprintf("%s/release-assets/%d?X-Amz-Signature=%s", s.bytesURL, a.ID, fakeSHA(r.PathValue("id"))[:16]))
		w.WriteHeader(http.StatusFound)
		return
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) handleAssetBytes(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	s.mu.Lock()
	var path string
	for _, rp := range s.repos {
		if _, a := rp.asset(id, nil); a != nil {
			path = a.path
			w.Header().Set("Content-Type", a.ContentType)
		}
	}
	s.mu.Unlock()
	if path == "" {
		http.NotFound(w, r)
		return
	}
	s.serveFile(w, r, path)
}

func (s *Server) handleDeleteAsset(w http.ResponseWriter, r *http.Request) {
	rel, a := s.lockAsset(w, r)
	if a == nil {
		return
	}
	if rel.Immutable {
		s.mu.Unlock()
		s.errorJSON(w, r, http.StatusUnprocessableEntity, "Cannot delete asset from an immutable release.", nil)
		return
	}
	for i, x := range rel.assets {
		if x == a {
			rel.assets = append(rel.assets[:i], rel.assets[i+1:]...)
			break
		}
	}
	os.Remove(a.path)
	s.changedLocked(repoName(r))
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	rel := s.uploadRelease(w, r, name)
	if rel == nil {
		return
	}
	a := &asset{Asset: Asset{ID: 0, Name: name, Label: r.URL.Query().Get("label"), ContentType: r.Header.Get("Content-Type"), State: "starter"},
		releaseID: rel.ID, created: s.opts.Now()}
	sum, complete, dropping, err := s.receiveAsset(r, a)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	dup, out := s.addAsset(r, rel, a, sum, complete)
	if dropping {
		dropConnection(w)
		return
	}
	if dup {
		s.validation(w, r, apiError{Resource: "ReleaseAsset", Code: "already_exists", Field: "name"})
		return
	}
	if !complete {
		s.errorJSON(w, r, http.StatusBadRequest, "Bad Content-Length", nil)
		return
	}
	s.writeJSON(w, r, http.StatusCreated, out)
}

// uploadRelease returns the release an upload of the asset name goes to,
// or writes the error response and returns nil when the release does not
// exist, name is empty, the release is immutable or the upload has no
// Content-Length.
func (s *Server) uploadRelease(w http.ResponseWriter, r *http.Request, name string) *release {
	_, rel := s.lockRelease(w, r)
	if rel == nil {
		return nil
	}
	immutable := rel.Immutable
	s.mu.Unlock()
	switch {
	case name == "":
		s.validation(w, r, apiError{Resource: "ReleaseAsset", Code: "missing_field", Field: "name"})
	case immutable:
		s.errorJSON(w, r, http.StatusUnprocessableEntity, "Cannot upload assets to an immutable release.", nil)
	case r.ContentLength < 0:
		s.errorJSON(w, r, http.StatusBadRequest, "Bad Content-Length", nil)
	default:
		return rel
	}
	return nil
}

// receiveAsset stores the upload's body in a new file of the server's
// directory, setting a.path and a.Size, and returns the body's SHA-256.
// complete says whether the whole body (Content-Length bytes) arrived;
// dropping whether DropAfter applies to the request (then only its byte
// count is read, and the upload is never complete).
func (s *Server) receiveAsset(r *http.Request, a *asset) (sum string, complete, dropping bool, err error) {
	f, err := os.CreateTemp(s.dir, "asset-*")
	if err != nil {
		return "", false, false, err
	}
	a.path = f.Name()
	h := sha256.New()
	var body io.Reader = r.Body
	drop := dropAt(r)
	dropping = drop >= 0
	if dropping {
		body = io.LimitReader(r.Body, drop)
	}
	n, copyErr := io.Copy(io.MultiWriter(f, h), body)
	f.Close()
	a.Size = n
	complete = copyErr == nil && n == r.ContentLength && !dropping
	return hex.EncodeToString(h.Sum(nil)), complete, dropping, nil
}

// addAsset adds the received asset a to rel unless rel already has an
// asset of its name (dup) or became immutable meanwhile; a complete one is
// "uploaded" with its sum and out is its JSON, an incomplete one stays a
// "starter". The file of an asset not added is removed.
func (s *Server) addAsset(r *http.Request, rel *release, a *asset, sum string, complete bool) (dup bool, out map[string]any) {
	s.mu.Lock()
	for _, x := range rel.assets {
		if x.Name == a.Name {
			dup = true
		}
	}
	if !dup && !rel.Immutable {
		a.ID = s.id()
		if complete {
			a.State, a.SHA256 = "uploaded", sum
		}
		// Like GitHub, an upload that broke off leaves a "starter" asset
		// that blocks the name until it is deleted.
		rel.assets = append(rel.assets, a)
		s.changedLocked(repoName(r))
	}
	if !dup && complete {
		out = s.assetJSON(r, rel, a)
	}
	s.mu.Unlock()
	if dup || !complete {
		if a.ID == 0 {
			os.Remove(a.path)
		}
	}
	return dup, out
}

// dropConnection breaks off the response as DropAfter asks: it closes
// the hijacked connection or, if that fails, aborts the handler.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := unwrapHijacker(w); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

func unwrapHijacker(w http.ResponseWriter) (http.Hijacker, bool) {
	for {
		if hj, ok := w.(http.Hijacker); ok {
			return hj, true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil, false
		}
		w = u.Unwrap()
	}
}
