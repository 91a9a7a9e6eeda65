package wslmsi

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

const fakeToken = "ghp_WSLMSI_test_token_0123456789"

// wslServer serves microsoft/WSL releases 2.6.1 (real x64 MSZIP and arm64
// LZX installers), 2.6.2 (x64 only) and 2.6.3 (a truncated x64 MSI).
func wslServer(t *testing.T) (*githubfake.Server, *githubapi.Client, *bytes.Buffer) {
	t.Helper()
	mszip, err := os.ReadFile(stockMSI(t))
	if err != nil {
		t.Fatal(err)
	}
	lzxPath, _, _ := lzxMSI(t)
	lzx, _ := os.ReadFile(lzxPath)
	fake := githubfake.NewT(t, githubfake.Options{Token: fakeToken})
	day := time.Date(2025, 9, 1, 0, 0, 0, 0, time.UTC)
	_, err = fake.AddWSLReleases("microsoft/WSL",
		githubfake.WSLRelease{Version: "2.6.1", KernelPackage: "6.6.87.2-1", Published: day, Assets: map[string][]byte{
			"wsl.2.6.1.0.x64.msi": mszip, "wsl.2.6.1.0.arm64.msi": lzx, "Microsoft.WSL_2.6.1.0_x64_ARM64.msixbundle": []byte("bundle")}},
		githubfake.WSLRelease{Version: "2.6.2", KernelPackage: "6.6.87.2-1", Published: day.Add(24 * time.Hour), Assets: map[string][]byte{
			"wsl.2.6.2.0.x64.msi": mszip}},
		githubfake.WSLRelease{Version: "2.6.3", KernelPackage: "6.6.87.2-1", Published: day.Add(48 * time.Hour), Assets: map[string][]byte{
			"wsl.2.6.3.0.x64.msi": mszip[:len(mszip)/2]}},
	)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	c, err := githubapi.New(githubapi.Options{Getenv: fake.Getenv(nil), MaxAttempts: 3, Log: progress.New(&log),
		Sleep: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return fake, c, &log
}

// release lists the fake's releases and returns version v.
func release(t *testing.T, c *githubapi.Client, v string) fetch.WSLRelease {
	t.Helper()
	rels, err := fetch.WSLReleases(context.Background(), c, fetch.WSLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rels {
		if r.Version == v {
			return r
		}
	}
	t.Fatalf("no WSL %s", v)
	return fetch.WSLRelease{}
}

func TestFetch(t *testing.T) {
	fake, c, clog := wslServer(t)
	rel := release(t, c, "2.6.1")
	work, cache := t.TempDir(), t.TempDir()
	var log bytes.Buffer
	fake.ResetRequests()
	st, err := Fetch(context.Background(), c, rel, "x86_64", work, cache, progress.New(&log))
	if err != nil {
		t.Fatal(err)
	}
	checkStock(t, st, debianKernel(t), debianModulesVHD(t), ModulesVHD)
	if st.WSLVersion != "2.6.1" || st.MSIName != "wsl.2.6.1.0.x64.msi" || st.Compression != "MSZip" || !strings.HasSuffix(st.URL, "/releases/download/2.6.1/wsl.2.6.1.0.x64.msi") {
		t.Errorf("stock %+v", st)
	}
	if got := entries(t, work); len(got) != 1 || got[0] != "wsl.2.6.1.0.x64.msi" {
		t.Errorf("work dir holds %v", got)
	}
	if !strings.Contains(log.String(), "download wsl.2.6.1.0.x64.msi: ") {
		t.Errorf("no progress line:\n%s", log.String())
	}
	// One API request with the token, redirected to the bytes host
	// without it.
	reqs := fake.Requests()
	if len(reqs) != 2 || reqs[0].Route != githubfake.RouteAsset || reqs[0].Authorization != "Bearer "+fakeToken ||
		reqs[1].Host != githubfake.HostBytes || reqs[1].Authorization != "" || reqs[1].Status != 200 {
		t.Errorf("requests %+v", reqs)
	}

	// Again: the digest names the cache entry, nothing is requested.
	fake.ResetRequests()
	log.Reset()
	st2, err := Fetch(context.Background(), c, rel, "x86_64", t.TempDir(), cache, progress.New(&log))
	if err != nil || *st2 != *st || len(fake.Requests()) != 0 || !strings.Contains(log.String(), "not downloading") {
		t.Errorf("second fetch: %v, %d requests\n%s", err, len(fake.Requests()), log.String())
	}
	// A new cache, the same work dir: the MSI there is reused.
	fake.ResetRequests()
	log.Reset()
	if _, err := Fetch(context.Background(), c, rel, "x86_64", work, t.TempDir(), progress.New(&log)); err != nil || len(fake.Requests()) != 0 ||
		!strings.Contains(log.String(), "reusing") {
		t.Errorf("reuse: %v, %d requests\n%s", err, len(fake.Requests()), log.String())
	}

	// arm64: the LZX installer.
	_, kernel, modules := lzxMSI(t)
	st, err = Fetch(context.Background(), c, rel, "arm64", t.TempDir(), cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Compression != "LZX:21" || st.MSIName != "wsl.2.6.1.0.arm64.msi" || testenv.SHA256File(t, st.Kernel) != testenv.SHA256File(t, kernel) || testenv.SHA256File(t, st.Modules) != testenv.SHA256File(t, modules) {
		t.Errorf("arm64: %+v", st)
	}

	// Without a digest from the API: downloaded, hashed, extracted.
	a, _ := rel.MSIFor("x86_64")
	if err := fake.SetAssetDigest("microsoft/WSL", a.ID, ""); err != nil {
		t.Fatal(err)
	}
	rel = release(t, c, "2.6.1")
	if a, _ := rel.MSIFor("x86_64"); a.Digest != "" {
		t.Fatalf("digest %q still listed", a.Digest)
	}
	st, err = Fetch(context.Background(), c, rel, "x86_64", t.TempDir(), t.TempDir(), nil)
	if err != nil || st.MSISHA256 != testenv.SHA256File(t, stockMSI(t)) {
		t.Errorf("no digest: %+v, %v", st, err)
	}
	if strings.Contains(clog.String(), fakeToken) || strings.Contains(log.String(), fakeToken) {
		t.Error("the token was logged")
	}
}

// Bad inputs: a clear error, and nothing in the work dir or the cache.
func TestFetchBadInputs(t *testing.T) {
	fake, c, _ := wslServer(t)
	rel261, rel262, rel263 := release(t, c, "2.6.1"), release(t, c, "2.6.2"), release(t, c, "2.6.3")
	a, _ := rel261.MSIFor("x86_64")
	wrong := rel261
	wrong.Assets = append([]fetch.WSLAsset(nil), rel261.Assets...)
	for i := range wrong.Assets {
		if wrong.Assets[i].Name == a.Name {
			wrong.Assets[i].Digest = strings.Repeat("ab", 32)
		}
	}
	cases := []struct {
		name  string
		rel   fetch.WSLRelease
		arch  string
		setup func()
		want  string
	}{
		{"digest mismatch", wrong, "x86_64", nil, "but the release's digest is sha256:abab"},
		{"no MSI for the arch", rel262, "arm64", nil, "WSL 2.6.2 has no MSI for arm64 (want wsl.2.6.2.0.arm64.msi; assets: wsl.2.6.2.0.x64.msi)"},
		{"unknown arch", rel262, "mips", nil, `architecture "mips"`},
		{"connection drops every time", rel261, "x86_64", func() {
			for i := 0; i < 3; i++ {
				fake.DropAfter(githubfake.RouteAssetBytes, 100000)
			}
		}, "after 100000 of"},
		{"truncated MSI", rel263, "x86_64", nil, "is not a readable Windows Installer database (truncated or damaged?)"},
		{"asset endpoint fails", rel261, "x86_64", func() { fake.Fail(githubfake.RouteAsset, 3, http.StatusServiceUnavailable) }, "503 Service Unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake.ClearFaults()
			if tc.setup != nil {
				tc.setup()
			}
			work, cache := t.TempDir(), t.TempDir()
			_, err := Fetch(context.Background(), c, tc.rel, tc.arch, work, cache, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "wslmsi: ") {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			t.Log(err)
			if got := entries(t, work); len(got) != 0 {
				t.Errorf("work dir holds %v", got)
			}
			if got := entries(t, filepath.Join(cache, CacheSubdir)); len(got) != 0 {
				t.Errorf("cache holds %v", got)
			}
		})
	}
	// One dropped connection: downloaded again.
	fake.ClearFaults()
	fake.DropAfter(githubfake.RouteAssetBytes, 4096)
	var log bytes.Buffer
	if _, err := Fetch(context.Background(), c, rel261, "x86_64", t.TempDir(), t.TempDir(), progress.New(&log)); err != nil || !strings.Contains(log.String(), "retrying in") {
		t.Errorf("retry: %v\n%s", err, log.String())
	}
}

// The token goes to the API host only. Go's client keeps the
// Authorization header on a redirect to the same host name on another
// port; githubapi's transport must drop it there too.
func TestTokenStaysOnAPIHost(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{}
	payload := []byte("asset bytes")
	assetHost := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen["asset"] = r.Header.Get("Authorization")
		mu.Unlock()
		w.Write(payload)
	}))
	defer assetHost.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen["api"] = r.Header.Get("Authorization")
		mu.Unlock()
		http.Redirect(w, r, assetHost.URL+"/asset?sig=x", http.StatusFound)
	}))
	defer api.Close()
	if !strings.HasPrefix(api.URL, "http://127.0.0.1:") || !strings.HasPrefix(assetHost.URL, "http://127.0.0.1:") {
		t.Fatalf("want both servers on 127.0.0.1: %s %s", api.URL, assetHost.URL)
	}
	// A plain Go client forwards the header to the same host name.
	req, _ := http.NewRequest(http.MethodGet, api.URL+"/api/v3/x", nil)
	req.Header.Set("Authorization", "Bearer plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if seen["asset"] != "Bearer plain" {
		t.Fatalf("control: Go's client did not forward the header (%q); the test below proves nothing", seen["asset"])
	}
	c, err := githubapi.New(githubapi.Options{Token: fakeToken, APIURL: api.URL + "/api/v3"})
	if err != nil {
		t.Fatal(err)
	}
	a := fetch.WSLAsset{Name: "wsl.2.6.1.0.x64.msi", Size: int64(len(payload)), ID: 7, URL: api.URL + "/api/v3/repos/microsoft/WSL/releases/assets/7"}
	dst := filepath.Join(t.TempDir(), a.Name)
	if _, err := download(context.Background(), c, a, dst, nil); err != nil {
		t.Fatal(err)
	}
	if seen["api"] != "Bearer "+fakeToken || seen["asset"] != "" {
		t.Errorf("Authorization to the API %q, to the asset host %q", seen["api"], seen["asset"])
	}
}
