package githubfake

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strings"
	"sync"
	"weak"
)

// DefaultBranch is the ref the contents API reads when a request names
// none (GitHub's default branch of the repository).
const DefaultBranch = "main"

// contentsDocs is the documentation_url GitHub sends with contents errors.
const contentsDocs = "https://docs.github.com/rest/repos/contents#get-repository-content"

// contentStore holds the files served by the contents API, per
// repository (lower-case "owner/name"), ref and path. It lives beside the
// Server (server.go has no field for it) and is guarded by Server.mu.
type contentStore struct {
	files map[string]map[string]map[string][]byte
}

var (
	storesMu sync.Mutex
	stores   = map[weak.Pointer[Server]]*contentStore{}
)

// contentsLocked returns the server's content store, creating it. The
// caller holds s.mu. The store is dropped when the Server is collected.
func (s *Server) contentsLocked() *contentStore {
	wp := weak.Make(s)
	storesMu.Lock()
	defer storesMu.Unlock()
	cs := stores[wp]
	if cs == nil {
		cs = &contentStore{files: map[string]map[string]map[string][]byte{}}
		stores[wp] = cs
		runtime.AddCleanup(s, func(k weak.Pointer[Server]) {
			storesMu.Lock()
			delete(stores, k)
			storesMu.Unlock()
		}, wp)
	}
	return cs
}

// setFileLocked stores a file; the caller holds s.mu.
func (s *Server) setFileLocked(repoName, ref, path string, content []byte) {
	if ref == "" {
		ref = DefaultBranch
	}
	cs := s.contentsLocked()
	key := strings.ToLower(repoName)
	if cs.files[key] == nil {
		cs.files[key] = map[string]map[string][]byte{}
	}
	if cs.files[key][ref] == nil {
		cs.files[key][ref] = map[string][]byte{}
	}
	cs.files[key][ref][strings.Trim(path, "/")] = append([]byte(nil), content...)
}

// resolveContentRefLocked maps a request's ref (a branch, a tag, refs/...,
// or a tag's commit) to the ref files are stored under. ok is false when
// the repository has no such ref.
func (s *Server) resolveContentRefLocked(rp *repo, repoName, ref string) (string, bool) {
	if ref == "" {
		ref = DefaultBranch
	}
	for _, p := range []string{"refs/tags/", "refs/heads/", "tags/", "heads/"} {
		ref = strings.TrimPrefix(ref, p)
	}
	files := s.contentsLocked().files[strings.ToLower(repoName)]
	if _, ok := files[ref]; ok {
		return ref, true
	}
	for _, t := range rp.tags {
		if t.Name == ref || t.Commit == ref {
			return t.Name, true
		}
	}
	return "", false
}

// contentEntry is a file or directory found at a path.
type contentEntry struct {
	path    string
	content []byte // nil for a directory
	dir     []string
}

// lookupLocked finds path at ref: a file, or a directory listing the
// names directly under it.
func (s *Server) lookupLocked(repoName, ref, path string) (*contentEntry, bool) {
	files := s.contentsLocked().files[strings.ToLower(repoName)][ref]
	path = strings.Trim(path, "/")
	if b, ok := files[path]; ok {
		return &contentEntry{path: path, content: b}, true
	}
	seen := map[string]bool{}
	var names []string
	for p := range files {
		rest, ok := strings.CutPrefix(p, path+"/")
		if path == "" {
			rest, ok = p, true
		}
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, "/")
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, false
	}
	sort.Strings(names)
	return &contentEntry{path: path, dir: names}, true
}

// isDirLocked reports whether path is a directory at ref.
func (s *Server) isDirLocked(repoName, ref, path string) bool {
	e, ok := s.lookupLocked(repoName, ref, path)
	return ok && e.content == nil
}

// handleContents serves GET /repos/{owner}/{repo}/contents/{path}?ref=
// like GitHub: with Accept: application/vnd.github.raw (or .v3.raw) the
// file's bytes, otherwise the JSON object with the base64 content (a JSON
// array for a directory); a strong ETag (the git blob id) on raw answers
// and 304 for a matching If-None-Match; 404 with GitHub's body for a
// missing repository, ref or path.
func (s *Server) handleContents(w http.ResponseWriter, r *http.Request) {
	name := repoName(r)
	ref := r.URL.Query().Get("ref")
	s.mu.Lock()
	rp := s.getRepoLocked(r)
	var e *contentEntry
	found, refOK := false, false
	var dirs map[string]bool
	if rp != nil {
		var resolved string
		if resolved, refOK = s.resolveContentRefLocked(rp, name, ref); refOK {
			e, found = s.lookupLocked(name, resolved, r.PathValue("path"))
			if found && e.content == nil {
				dirs = map[string]bool{}
				for _, n := range e.dir {
					dirs[n] = s.isDirLocked(name, resolved, joinPath(e.path, n))
				}
			}
		}
	}
	s.mu.Unlock()
	switch {
	case rp == nil || refOK && !found:
		s.contentsError(w, r, "Not Found")
	case !refOK:
		s.contentsError(w, r, "No commit found for the ref "+ref)
	case e.content == nil:
		s.writeJSON(w, r, http.StatusOK, s.dirJSON(r, e, dirs))
	case isRawAccept(r.Header.Get("Accept")):
		s.writeRaw(w, r, e.content)
	default:
		s.writeJSON(w, r, http.StatusOK, s.fileJSON(r, e))
	}
}

func (s *Server) contentsError(w http.ResponseWriter, r *http.Request, msg string) {
	s.writeJSON(w, r, http.StatusNotFound, map[string]any{"message": msg, "documentation_url": contentsDocs, "status": "404"})
}

func isRawAccept(accept string) bool {
	return strings.Contains(accept, "application/vnd.github.raw") || strings.Contains(accept, "application/vnd.github.v3.raw")
}

// gitBlobSHA is the git object id of a blob with this content.
func gitBlobSHA(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// etagMatches reports whether an If-None-Match value (possibly a list,
// weak or *) matches etag.
func etagMatches(inm, etag string) bool {
	for _, v := range strings.Split(inm, ",") {
		v = strings.TrimSpace(v)
		if v == "*" || sameETag(v, etag) {
			return true
		}
	}
	return false
}

// writeRaw answers a raw file with a strong ETag; a matching
// If-None-Match gets a 304 that, as on GitHub, costs no rate limit.
func (s *Server) writeRaw(w http.ResponseWriter, r *http.Request, b []byte) {
	if s.notModified(w, r, `"`+gitBlobSHA(b)+`"`, etagMatches) {
		return
	}
	w.Header().Set("Content-Type", "application/vnd.github.raw; charset=utf-8")
	s.writeBody(w, r, http.StatusOK, b)
}

// base64Lines encodes b as GitHub does in contents answers: standard
// base64 in lines of 60 characters, each ending in a newline.
func base64Lines(b []byte) string {
	enc := base64.StdEncoding.EncodeToString(b)
	var sb strings.Builder
	for len(enc) > 60 {
		sb.WriteString(enc[:60] + "\n")
		enc = enc[60:]
	}
	if enc != "" {
		sb.WriteString(enc + "\n")
	}
	return sb.String()
}

func (s *Server) entryLinks(r *http.Request, path, sha, kind string) map[string]any {
	name := repoName(r)
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		ref = DefaultBranch
	}
	self := s.apiBase(r) + "/repos/" + name + "/contents/" + escapePath(path) + "?ref=" + url.QueryEscape(ref)
	git := s.apiBase(r) + "/repos/" + name + "/git/" + map[string]string{"file": "blobs", "dir": "trees"}[kind] + "/" + sha
	html := s.ServerURL() + "/" + name + "/" + map[string]string{"file": "blob", "dir": "tree"}[kind] + "/" + ref + "/" + escapePath(path)
	m := map[string]any{
		"name": path[strings.LastIndex(path, "/")+1:], "path": path, "sha": sha, "type": kind,
		"url": self, "git_url": git, "html_url": html, "download_url": nil,
		"_links": map[string]any{"self": self, "git": git, "html": html},
	}
	if kind == "file" {
		m["download_url"] = s.ServerURL() + "/raw/" + name + "/" + ref + "/" + escapePath(path)
	}
	return m
}

func (s *Server) fileJSON(r *http.Request, e *contentEntry) map[string]any {
	m := s.entryLinks(r, e.path, gitBlobSHA(e.content), "file")
	m["size"] = len(e.content)
	m["encoding"] = "base64"
	m["content"] = base64Lines(e.content)
	return m
}

func (s *Server) dirJSON(r *http.Request, e *contentEntry, dirs map[string]bool) []map[string]any {
	out := []map[string]any{}
	for _, n := range e.dir {
		p := joinPath(e.path, n)
		kind := "file"
		if dirs[n] {
			kind = "dir"
		}
		m := s.entryLinks(r, p, fakeSHA(repoName(r)+"@"+p), kind)
		m["size"] = 0
		out = append(out, m)
	}
	return out
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, x := range parts {
		parts[i] = url.PathEscape(x)
	}
	return strings.Join(parts, "/")
}
