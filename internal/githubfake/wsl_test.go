package githubfake

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The contents API answers raw and JSON forms, ETags and 304s, and
// GitHub's 404 bodies for a missing file, ref or repository.
func TestContents(t *testing.T) {
	s := NewT(t, Options{Token: tok})
	cfg := WSLPackagesConfig("6.18.35.2-1")
	s.AddTags("microsoft/WSL", Tag{Name: "2.9.4"})
	s.SetFile("microsoft/WSL", "2.9.4", "packages.config", cfg)
	s.SetFile("microsoft/WSL", "", "msipackage/package.wix.in", []byte("<Wix/>"))
	base := s.APIURL() + "/repos/microsoft/WSL/contents/"
	raw := map[string]string{"Accept": "application/vnd.github.raw"}

	resp, body := do(t, "GET", base+"packages.config?ref=2.9.4", "", raw)
	if resp.StatusCode != 200 || string(body) != string(cfg) {
		t.Fatalf("raw: %d %q", resp.StatusCode, body)
	}
	// The raw ETag is the git blob id, as `git hash-object` computes it.
	cmd := exec.Command("git", "hash-object", "--stdin")
	cmd.Stdin = strings.NewReader(string(cfg))
	if out, err := cmd.Output(); err == nil {
		if want := `"` + strings.TrimSpace(string(out)) + `"`; resp.Header.Get("ETag") != want {
			t.Errorf("ETag %s, want %s", resp.Header.Get("ETag"), want)
		}
	}
	rem := resp.Header.Get("X-RateLimit-Remaining")
	resp2, _ := do(t, "GET", base+"packages.config?ref=2.9.4", "", map[string]string{"Accept": raw["Accept"], "If-None-Match": resp.Header.Get("ETag")})
	if resp2.StatusCode != http.StatusNotModified || resp2.Header.Get("X-RateLimit-Remaining") != rem {
		t.Errorf("conditional raw: %d, remaining %s (was %s)", resp2.StatusCode, resp2.Header.Get("X-RateLimit-Remaining"), rem)
	}

	// JSON form, through the tag's commit too.
	jsonETag := ""
	for _, ref := range []string{"2.9.4", "refs/tags/2.9.4", fakeSHA("microsoft/WSL@2.9.4")} {
		resp, body = do(t, "GET", base+"packages.config?ref="+ref, "", nil)
		var f struct {
			Type, Encoding, Content, Sha, Path string
			Size                               int
		}
		if err := json.Unmarshal(body, &f); err != nil || resp.StatusCode != 200 {
			t.Fatalf("ref %s: %d %s", ref, resp.StatusCode, body)
		}
		dec, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(f.Content, "\n", ""))
		if err != nil || string(dec) != string(cfg) || f.Type != "file" || f.Encoding != "base64" || f.Size != len(cfg) || f.Sha != gitBlobSHA(cfg) {
			t.Errorf("ref %s: JSON %+v", ref, f)
		}
		if ref == "2.9.4" {
			jsonETag = resp.Header.Get("ETag")
		}
		if lines := strings.Split(strings.TrimSuffix(f.Content, "\n"), "\n"); len(lines[0]) != 60 {
			t.Errorf("base64 lines of %d characters, want 60", len(lines[0]))
		}
	}
	resp, _ = do(t, "GET", base+"packages.config?ref=2.9.4", "", map[string]string{"If-None-Match": jsonETag})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional JSON: %d", resp.StatusCode)
	}

	// A directory of the default branch lists its entries.
	resp, body = do(t, "GET", base+"msipackage", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"package.wix.in"`) {
		t.Errorf("directory: %d %s", resp.StatusCode, body)
	}

	for _, c := range []struct{ url, msg string }{
		{base + "nope.config?ref=2.9.4", `"message":"Not Found"`},
		{base + "packages.config", `"message":"Not Found"`}, // not on main
		{base + "packages.config?ref=9.9.9", `"message":"No commit found for the ref 9.9.9"`},
		{s.APIURL() + "/repos/microsoft/Nope/contents/packages.config", `"message":"Not Found"`},
	} {
		resp, body = do(t, "GET", c.url, "", raw)
		if resp.StatusCode != 404 || !strings.Contains(string(body), c.msg) || !strings.Contains(string(body), "repos/contents") {
			t.Errorf("%s: %d %s", c.url, resp.StatusCode, body)
		}
	}
}

// AddWSLReleases creates paginated releases with tags, packages.config
// and assets with digests behind the bytes host.
func TestAddWSLReleases(t *testing.T) {
	s := NewT(t, Options{})
	hist := WSLHistory(time.Date(2019, 6, 1, 0, 0, 0, 0, time.UTC))
	if len(hist) < 150 {
		t.Fatalf("history of %d releases", len(hist))
	}
	rels, err := s.AddWSLReleases("microsoft/WSL", hist...)
	if err != nil {
		t.Fatal(err)
	}
	last := rels[len(rels)-1]
	if last.Tag != "2.9.4" || !last.Prerelease || len(last.Assets) != 3 {
		t.Fatalf("newest release %+v", last)
	}
	resp, body := do(t, "GET", s.APIURL()+"/repos/microsoft/WSL/releases?per_page=100", "", nil)
	var page []struct {
		TagName     string `json:"tag_name"`
		PublishedAt string `json:"published_at"`
		Assets      []struct {
			ID     int64
			Name   string
			Digest string
			URL    string
		}
	}
	if err := json.Unmarshal(body, &page); err != nil || len(page) != 100 || !strings.Contains(resp.Header.Get("Link"), `rel="next"`) {
		t.Fatalf("page 1: %d releases, Link %q, %v", len(page), resp.Header.Get("Link"), err)
	}
	if page[0].TagName != "2.9.4" || page[0].PublishedAt != hist[len(hist)-1].Published.Format(time.RFC3339) {
		t.Errorf("first listed %s published %s", page[0].TagName, page[0].PublishedAt)
	}
	a := page[0].Assets[0]
	resp, body = do(t, "GET", a.URL, "", map[string]string{"Accept": "application/octet-stream"})
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("asset: %d", resp.StatusCode)
	}
	_, data := do(t, "GET", resp.Header.Get("Location"), "", nil)
	sum := sha256.Sum256(data)
	if a.Digest != "sha256:"+hex.EncodeToString(sum[:]) || !strings.Contains(string(data), a.Name) {
		t.Errorf("asset %s: digest %s, bytes %q", a.Name, a.Digest, data)
	}
	if err := s.SetAssetDigest("microsoft/WSL", a.ID, strings.Repeat("0", 64)); err != nil {
		t.Fatal(err)
	}
	if _, body = do(t, "GET", a.URL, "", nil); !strings.Contains(string(body), `"digest":"sha256:0000`) {
		t.Errorf("digest not changed: %s", body)
	}
	_, body = do(t, "GET", s.APIURL()+"/repos/microsoft/WSL/contents/packages.config?ref=2.8.12", "", map[string]string{"Accept": "application/vnd.github.raw"})
	if !strings.Contains(string(body), `<package id="Microsoft.WSL.Kernel" version="6.18.35.1-1"`) {
		t.Errorf("packages.config at 2.8.12:\n%s", body)
	}
	resp, _ = do(t, "GET", s.APIURL()+"/repos/microsoft/WSL/contents/packages.config?ref=2.5.1", "", nil)
	if resp.StatusCode != 404 {
		t.Errorf("packages.config at 2.5.1: %d", resp.StatusCode)
	}
}
