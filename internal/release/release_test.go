package release

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v66/github"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

const (
	token  = "ghp_RELEASETOKEN_abcdefghijklmnopqrstuvwxyz01"
	target = "me/wsl-modules"
	ktag   = "linux-msft-wsl-6.6.87.2"
)

var ctx = context.Background()

// vhdxOnce caches one real VHDX (qemu-img convert of 18 MiB of random
// data), larger than VerifyLimit so both verification paths run.
var vhdxOnce struct {
	sync.Once
	path string
	err  error
}

func realVHDX(t *testing.T) string {
	t.Helper()
	qemu := testenv.Tool(t, "qemu-img")
	vhdxOnce.Do(func() {
		dir, err := os.MkdirTemp("", "release-test-")
		if err != nil {
			vhdxOnce.err = err
			return
		}
		raw := filepath.Join(dir, "raw.img")
		b := make([]byte, 18<<20)
		rand.Read(b)
		os.WriteFile(raw, b, 0o644)
		vhdxOnce.path = filepath.Join(dir, "modules.vhdx")
		out, err := exec.Command(qemu, "convert", "-f", "raw", "-O", "vhdx", raw, vhdxOnce.path).CombinedOutput()
		if err != nil {
			vhdxOnce.err = errors.New(string(out))
		}
	})
	if vhdxOnce.err != nil {
		t.Fatalf("qemu-img: %v", vhdxOnce.err)
	}
	return vhdxOnce.path
}

func testManifest(vhdxSum string, vhdxSize int64, modRef string) *manifest.Manifest {
	return &manifest.Manifest{
		Schema: manifest.SchemaVersion, Tool: "wsl-modules-action test",
		Kernel: manifest.Kernel{Tag: ktag, Release: "6.6.87.2-microsoft-standard-WSL2", Arch: "x86_64",
			Source:       manifest.Source{Kind: "github-tarball", Repo: "microsoft/WSL2-Linux-Kernel", Tag: ktag, Commit: strings.Repeat("a", 40), SHA256: strings.Repeat("b", 64)},
			ConfigSHA256: strings.Repeat("c", 64), Compiler: "gcc (Debian 12.2.0-14) 12.2.0", ImageFile: "bzImage"},
		Modules: []manifest.Module{{Name: "v4l2loopback", Version: "0.13.2", Status: manifest.StatusOK,
			Source: manifest.Source{Kind: "git", URL: "https://github.com/umlaeute/v4l2loopback", Ref: modRef, Commit: hex.EncodeToString([]byte(modRef + strings.Repeat("0", 20)))[:40]},
			Files:  []string{"extra/v4l2loopback/v4l2loopback.ko"}, Log: "logs/v4l2loopback.log"}},
		Layout: "flat", Headers: "devel",
		Image: &manifest.Image{File: VHDXFile, Size: vhdxSize, SHA256: vhdxSum},
	}
}

// makeDist writes a dist directory: a random bzImage, the real VHDX, the
// manifest and build logs, then PrepareDist.
func makeDist(t *testing.T, modRef string) string {
	t.Helper()
	dir := t.TempDir()
	vhdx := realVHDX(t)
	b, _ := os.ReadFile(vhdx)
	os.WriteFile(filepath.Join(dir, VHDXFile), b, 0o644)
	sum := sha256.Sum256(b)
	img := make([]byte, 3<<20)
	rand.Read(img)
	os.WriteFile(filepath.Join(dir, "bzImage"), img, 0o644)
	if err := testManifest(hex.EncodeToString(sum[:]), int64(len(b)), modRef).Write(filepath.Join(dir, manifest.FileName)); err != nil {
		t.Fatal(err)
	}
	logs := filepath.Join(t.TempDir(), "logs")
	os.MkdirAll(logs, 0o755)
	os.WriteFile(filepath.Join(logs, "kernel.log"), []byte("kernel build log\n"), 0o644)
	os.WriteFile(filepath.Join(logs, "v4l2loopback.log"), []byte("module build log\n"), 0o644)
	if _, err := PrepareDist(PrepareOptions{Dir: dir, LogsDir: logs}); err != nil {
		t.Fatal(err)
	}
	return dir
}

type rig struct {
	fake  *githubfake.Server
	c     *githubapi.Client
	out   *syncBuffer // everything the library printed
	clock *githubfake.Clock
	// violations of "nothing public ever lacks an asset": releases that
	// were public, at any moment, without exactly the assets of the build
	// their body names
	mu         sync.Mutex
	violations []string
	// builds maps a build's assets identity (sha256 of its SHA256SUMS) to
	// its assets (name → sha256)
	builds     map[string]map[string]string
	wantAssets int
}

// syncBuffer is a bytes.Buffer safe for concurrent publishes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newRig(t *testing.T, immutable bool) *rig {
	t.Helper()
	r := &rig{out: &syncBuffer{}, clock: githubfake.NewClock(time.Now()), wantAssets: 7, builds: map[string]map[string]string{}}
	r.fake = githubfake.NewT(t, githubfake.Options{Token: token, Immutable: immutable})
	r.fake.AddTags(target)
	// Every state of the repository (seen under the fake's lock, so even
	// between two requests of concurrent runs) must show only complete
	// public releases.
	r.fake.OnChange = r.onChange
	var err error
	r.c, err = githubapi.New(githubapi.Options{Getenv: r.fake.Getenv(nil), Sleep: r.clock.Sleep, Now: r.clock.Now, Log: progress.New(r.out)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// onChange checks every public release that carries an assets identity
// holds exactly that build's assets, uploaded. (Releases made with
// AddRelease carry none.)
func (r *rig) onChange(_ string, rels []githubfake.Release) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rel := range rels {
		id := AssetsFromBody(rel.Body)
		if rel.Draft || id == "" {
			continue
		}
		want, ok := r.builds[id]
		bad := !ok || len(rel.Assets) != len(want)
		for _, a := range rel.Assets {
			if a.State != "uploaded" || want[a.Name] != a.SHA256 {
				bad = true
			}
		}
		if bad {
			r.violations = append(r.violations, fmt.Sprintf("%s (%d assets)", rel.Tag, len(rel.Assets)))
		}
	}
}

// expect registers the build in dist dir dir for onChange.
func (r *rig) expect(t *testing.T, dir string) {
	t.Helper()
	sums := readSums(t, dir)
	b, _ := os.ReadFile(filepath.Join(dir, SumsFile))
	s := sha256.Sum256(b)
	sums[SumsFile] = hex.EncodeToString(s[:])
	r.mu.Lock()
	r.builds[hex.EncodeToString(s[:])] = sums
	r.mu.Unlock()
}

func (r *rig) publish(t *testing.T, dir string) (*Result, error) {
	t.Helper()
	r.expect(t, dir)
	return Publish(ctx, r.c, Options{Repo: target, Dir: dir, Out: r.out, Progress: progress.New(r.out)})
}

func (r *rig) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.violations) > 0 {
		t.Errorf("releases public before all assets were uploaded: %v", r.violations)
	}
	if strings.Contains(r.out.String(), token) {
		t.Error("token in output")
	}
	for _, q := range r.fake.Requests() {
		if q.Host == githubfake.HostBytes && q.Authorization != "" {
			t.Errorf("token sent to the bytes host: %s", q.Path)
		}
	}
}

// assertRelease checks a published release holds exactly the dist's
// assets, byte for byte.
func assertRelease(t *testing.T, fake *githubfake.Server, rel githubfake.Release, dir string) {
	t.Helper()
	if rel.Draft {
		t.Errorf("%s is a draft", rel.Tag)
	}
	sums := readSums(t, dir)
	if len(rel.Assets) != len(sums)+1 {
		t.Errorf("%s: %d assets, want %d", rel.Tag, len(rel.Assets), len(sums)+1)
	}
	seen := map[string]int{}
	for _, a := range rel.Assets {
		seen[a.Name]++
		local, err := os.ReadFile(filepath.Join(dir, a.Name))
		if err != nil {
			t.Errorf("unexpected asset %s", a.Name)
			continue
		}
		remote, err := fake.AssetBytes(target, a.ID)
		if err != nil || !bytes.Equal(local, remote) || a.State != "uploaded" {
			t.Errorf("asset %s: state %s, %d bytes, want %d (%v)", a.Name, a.State, len(remote), len(local), err)
		}
	}
	for n, c := range seen {
		if c != 1 {
			t.Errorf("%d copies of %s", c, n)
		}
	}
}

func readSums(t *testing.T, dir string) map[string]string {
	b, err := os.ReadFile(filepath.Join(dir, SumsFile))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		s, n, _ := strings.Cut(l, "  ")
		out[n] = s
	}
	return out
}

func TestNaming(t *testing.T) {
	for _, tc := range []struct{ tag, arch, prefix, want string }{
		{ktag, "x86_64", "", "wsl-modules-6.6.87.2"},
		{ktag, "arm64", "", "wsl-modules-6.6.87.2-arm64"},
		{"linux-msft-wsl-6.18.40.1", "aarch64", "zfs-", "zfs-6.18.40.1-arm64"},
	} {
		got := TagName(tc.tag, tc.arch, tc.prefix)
		if got != tc.want {
			t.Errorf("TagName(%s, %s, %q) = %s, want %s", tc.tag, tc.arch, tc.prefix, got, tc.want)
		}
		info, ok := ParseTagName(RevisionTag(got, 3), tc.prefix)
		if !ok || info.KernelTag != tc.tag || info.Revision != 3 || !info.MatchesArch(tc.arch) {
			t.Errorf("ParseTagName(%s-r3) = %+v %v", got, info, ok)
		}
	}
	for _, bad := range []string{"wsl-modules-6.6.87", "wsl-modules-6.6.87.2-r1", "wsl-modules-6.6.87.2-x", "other-6.6.87.2"} {
		if _, ok := ParseTagName(bad, ""); ok {
			t.Errorf("ParseTagName(%s) accepted", bad)
		}
	}
}

func TestPrepareDist(t *testing.T) {
	dir := makeDist(t, "v0.13.2")
	// sha256sum -c is the independent check of SHA256SUMS.
	cmd := exec.Command("sha256sum", "-c", "--strict", SumsFile)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	sums := readSums(t, dir)
	for _, n := range []string{"bzImage", VHDXFile, manifest.FileName, WSLConfFile, LogsFile} {
		if sums[n] == "" {
			t.Errorf("SHA256SUMS lacks %s", n)
		}
	}
	conf, _ := os.ReadFile(filepath.Join(dir, WSLConfFile))
	for _, want := range []string{"[wsl2]\n", `kernel=C:\\Users\\<you>\\wsl\\wsl-modules-6.6.87.2\\bzImage` + "\n",
		`kernelModules=C:\\Users\\<you>\\wsl\\wsl-modules-6.6.87.2\\modules.vhdx` + "\n", "%UserProfile%"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("wslconfig.txt lacks %q:\n%s", want, conf)
		}
	}
	notes, _ := os.ReadFile(filepath.Join(dir, NotesFile))
	for _, want := range []string{"6.6.87.2-microsoft-standard-WSL2", "**2.5.1**", "**flat**", "| v4l2loopback | 0.13.2 |",
		"`kernel=` is required", "wsl --shutdown", "not sparse, compressed or encrypted", "icacls", "S-1-15-2-2",
		"E_ACCESSDENIED", "/lib/modules/$(uname -r)/build", sums["modules.vhdx"] + "  modules.vhdx"} {
		if !strings.Contains(string(notes), want) {
			t.Errorf("release notes lack %q", want)
		}
	}
	out, err := exec.Command("tar", "-tzf", filepath.Join(dir, LogsFile)).Output()
	if err != nil || !strings.Contains(string(out), "logs/v4l2loopback.log") || !strings.Contains(string(out), "logs/kernel.log") {
		t.Errorf("build-logs.tar.gz: %s %v", out, err)
	}
}

// TestPrepareDistChecksFirst: PrepareDist on a dist dir whose inputs are
// wrong (modules.vhdx missing, or not the image the manifest records)
// fails and leaves the directory exactly as it was.
func TestPrepareDistChecksFirst(t *testing.T) {
	snapshot := func(dir string) map[string]string {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = string(b)
		}
		return out
	}
	logs := filepath.Join(t.TempDir(), "logs")
	os.MkdirAll(logs, 0o755)
	os.WriteFile(filepath.Join(logs, "other.log"), []byte("another build's log\n"), 0o644)
	for name, spoil := range map[string]func(dir string){
		"missing": func(dir string) { os.Remove(filepath.Join(dir, VHDXFile)) },
		"changed": func(dir string) { os.WriteFile(filepath.Join(dir, VHDXFile), []byte("not the image"), 0o644) },
	} {
		dir := makeDist(t, "v0.13.2")
		spoil(dir)
		want := snapshot(dir)
		if _, err := PrepareDist(PrepareOptions{Dir: dir, LogsDir: logs, Prefix: "other-"}); err == nil || !strings.Contains(err.Error(), VHDXFile) {
			t.Errorf("%s modules.vhdx: err = %v", name, err)
		}
		got := snapshot(dir)
		for n := range want {
			if got[n] != want[n] {
				t.Errorf("%s modules.vhdx: the failed PrepareDist changed %s", name, n)
			}
		}
		for n := range got {
			if _, ok := want[n]; !ok {
				t.Errorf("%s modules.vhdx: the failed PrepareDist wrote %s", name, n)
			}
		}
	}
}

func TestPublishRequiresCompleteDist(t *testing.T) {
	dir := makeDist(t, "v0.13.2")
	os.WriteFile(filepath.Join(dir, "bzImage"), []byte("changed"), 0o644)
	_, err := Publish(ctx, nil, Options{Repo: target, Dir: dir, DryRun: true})
	if err == nil || !strings.Contains(err.Error(), "bzImage") {
		t.Errorf("stale SHA256SUMS: err = %v", err)
	}
	os.Remove(filepath.Join(dir, VHDXFile))
	if _, err := Publish(ctx, nil, Options{Repo: target, Dir: dir, DryRun: true}); err == nil || !strings.Contains(err.Error(), VHDXFile) {
		t.Errorf("missing VHDX: err = %v", err)
	}
}

func TestDryRun(t *testing.T) {
	dir := makeDist(t, "v0.13.2")
	r := newRig(t, true)
	var out bytes.Buffer
	res, err := Publish(ctx, r.c, Options{Repo: target, Dir: dir, DryRun: true, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusDryRun || r.fake.CountRequests() != 0 {
		t.Errorf("status %s, %d requests", res.Status, r.fake.CountRequests())
	}
	sums := readSums(t, dir)
	for _, want := range []string{"wsl-modules-6.6.87.2", "modules.vhdx", sums["modules.vhdx"], "bzImage", "nothing was sent"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, out.String())
		}
	}
}

// First publish, an up-to-date re-run that writes nothing, then a changed
// module list published as revision -r2 while the first release stays.
func TestPublishLifecycle(t *testing.T) {
	r := newRig(t, true)
	dir := makeDist(t, "v0.13.2")
	res, err := r.publish(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusPublished || res.Tag != "wsl-modules-6.6.87.2" || res.Name != ktag {
		t.Fatalf("result %+v", res)
	}
	rels := r.fake.Releases(target)
	if len(rels) != 1 {
		t.Fatalf("%d releases", len(rels))
	}
	assertRelease(t, r.fake, rels[0], dir)
	if !rels[0].Immutable || rels[0].Latest != "true" || HashFromBody(rels[0].Body) == "" {
		t.Errorf("release %+v", rels[0])
	}
	first := rels[0]

	// Up to date: only reads.
	r.fake.ResetRequests()
	res, err = r.publish(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusUpToDate || res.Tag != first.Tag {
		t.Errorf("re-run: %+v", res)
	}
	for _, q := range r.fake.Requests() {
		if q.Method != http.MethodGet {
			t.Errorf("up-to-date run wrote: %s %s", q.Method, q.Path)
		}
	}
	if !strings.Contains(r.out.String(), "up to date") {
		t.Error("no 'up to date' report")
	}

	// Changed module list: a new revision, marked latest.
	dir2 := makeDist(t, "v0.13.3")
	res, err = r.publish(t, dir2)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusPublished || res.Tag != "wsl-modules-6.6.87.2-r2" || res.Previous != first.Tag || res.Name != ktag+" (r2)" {
		t.Errorf("changed build: %+v", res)
	}
	rels = r.fake.Releases(target)
	if len(rels) != 2 {
		t.Fatalf("%d releases, want 2", len(rels))
	}
	assertRelease(t, r.fake, rels[0], dir2)
	if rels[0].Latest != "true" {
		t.Error("new revision not marked latest")
	}
	if rels[1].ID != first.ID || rels[1].Assets[0].ID != first.Assets[0].ID || rels[1].Body != first.Body {
		t.Error("the first release changed")
	}
	res, err = r.publish(t, dir2)
	if err != nil || res.Status != StatusUpToDate || res.Tag != "wsl-modules-6.6.87.2-r2" {
		t.Errorf("re-run of r2: %+v %v", res, err)
	}
	r.check(t)
}

// 502s on create and upload are retried within the run.
func TestPublishRetries502(t *testing.T) {
	r := newRig(t, true)
	dir := makeDist(t, "v0.13.2")
	r.fake.Fail(githubfake.RouteCreateRelease, 1, http.StatusBadGateway)
	r.fake.Fail(githubfake.RouteUpload, 2, http.StatusBadGateway)
	r.fake.Fail(githubfake.RouteUpdateRelease, 1, http.StatusBadGateway)
	r.fake.Fail(githubfake.RouteAssets, 1, http.StatusBadGateway)
	res, err := r.publish(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	rels := r.fake.Releases(target)
	if len(rels) != 1 || res.Status != StatusPublished {
		t.Fatalf("%d releases, %+v", len(rels), res)
	}
	assertRelease(t, r.fake, rels[0], dir)
	r.check(t)
}

// A connection dropped mid-VHDX is retried within the run (the broken
// asset deleted first); when it keeps failing the run fails with nothing
// public, and a re-run reuses the draft and ends with one copy of each.
func TestPublishDroppedUpload(t *testing.T) {
	t.Run("retried", func(t *testing.T) {
		r := newRig(t, true)
		dir := makeDist(t, "v0.13.2")
		r.fake.DropUpload(VHDXFile, 1, 5<<20)
		if _, err := r.publish(t, dir); err != nil {
			t.Fatal(err)
		}
		rels := r.fake.Releases(target)
		if len(rels) != 1 {
			t.Fatalf("%d releases", len(rels))
		}
		assertRelease(t, r.fake, rels[0], dir)
		if !strings.Contains(r.out.String(), "deleting broken asset modules.vhdx (starter") {
			t.Errorf("broken asset not deleted before the retry:\n%s", r.out)
		}
		r.check(t)
	})
	t.Run("re-run", func(t *testing.T) {
		r := newRig(t, true)
		dir := makeDist(t, "v0.13.2")
		r.fake.DropUpload(VHDXFile, 100, 7<<20)
		_, err := r.publish(t, dir)
		if err == nil {
			t.Fatal("publish succeeded although every VHDX upload dropped")
		}
		rels := r.fake.Releases(target)
		if len(rels) != 1 || !rels[0].Draft {
			t.Fatalf("after the failed run: %+v", rels)
		}
		broken := 0
		for _, a := range rels[0].Assets {
			if a.State == "starter" {
				broken++
			}
		}
		if broken != 1 {
			t.Errorf("%d broken assets left in the draft, want 1 (as GitHub leaves them)", broken)
		}
		// Re-run without faults.
		r.fake.ClearFaults()
		r.fake.ResetRequests()
		fresh := newRigClient(t, r)
		r.expect(t, dir)
		res, err := Publish(ctx, fresh, Options{Repo: target, Dir: dir, Out: r.out, Progress: progress.New(r.out)})
		if err != nil {
			t.Fatal(err)
		}
		rels = r.fake.Releases(target)
		if len(rels) != 1 || rels[0].ID != res.ReleaseID {
			t.Fatalf("re-run made a second release: %+v", rels)
		}
		assertRelease(t, r.fake, rels[0], dir)
		// The first run stopped at the VHDX (the second asset): the
		// bzImage, uploaded with the same sha256, is kept; the rest is
		// uploaded.
		var uploads []string
		for _, q := range r.fake.Requests() {
			if q.Route == githubfake.RouteUpload {
				uploads = append(uploads, strings.TrimPrefix(q.Query, "name="))
			}
		}
		// (The fake may log the failed run's last dropped upload after
		// ResetRequests: its handler finishes after the client saw the
		// reset. So count names, not requests.)
		names := map[string]bool{}
		for _, n := range uploads {
			names[n] = true
		}
		if len(names) != r.wantAssets-1 || names["bzImage"] || uploads[0] != VHDXFile {
			t.Errorf("re-run uploaded %v, want all but bzImage\n%s", uploads, r.out)
		} else if len(uploads) != len(names) {
			t.Logf("upload requests logged: %v", uploads)
		}
		r.check(t)
	})
}

func newRigClient(t *testing.T, r *rig) *githubapi.Client {
	c, err := githubapi.New(githubapi.Options{Getenv: r.fake.Getenv(nil), Sleep: r.clock.Sleep, Log: progress.New(r.out)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Immutable releases: the fake refuses changes after publishing, and a
// deleted immutable release's tag cannot be reused, so Publish moves on
// to the next revision.
func TestImmutable(t *testing.T) {
	r := newRig(t, true)
	dir := makeDist(t, "v0.13.2")
	res, err := r.publish(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(dir, "bzImage"))
	defer f.Close()
	_, _, err = r.c.Repositories.UploadReleaseAsset(ctx, "me", "wsl-modules", res.ReleaseID, &github.UploadOptions{Name: "extra.bin"}, f)
	if !githubapi.IsValidation(err, "") && !strings.Contains(err.Error(), "422") {
		t.Errorf("upload to a published immutable release: %v", err)
	}
	rel := r.fake.Releases(target)[0]
	if _, err := r.c.Repositories.DeleteReleaseAsset(ctx, "me", "wsl-modules", rel.Assets[0].ID); err == nil {
		t.Error("deleted an asset of an immutable release")
	}
	if _, _, err := r.c.Repositories.EditRelease(ctx, "me", "wsl-modules", res.ReleaseID, &github.RepositoryRelease{Draft: github.Bool(true)}); err == nil {
		t.Error("turned an immutable release back into a draft")
	}
	// Someone deletes the release; its tag stays burned.
	if _, err := r.c.Repositories.DeleteRelease(ctx, "me", "wsl-modules", res.ReleaseID); err != nil {
		t.Fatal(err)
	}
	res, err = r.publish(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.Tag != "wsl-modules-6.6.87.2-r2" || res.Status != StatusPublished {
		t.Errorf("after deleting an immutable release: %+v", res)
	}
	rels := r.fake.Releases(target)
	if len(rels) != 1 {
		t.Fatalf("%d releases", len(rels))
	}
	assertRelease(t, r.fake, rels[0], dir)
	r.check(t)
}

func TestPublishNeedsToken(t *testing.T) {
	fake := githubfake.NewT(t, githubfake.Options{})
	c, _ := githubapi.New(githubapi.Options{Getenv: fake.Getenv(nil)})
	if _, err := Publish(ctx, c, Options{Repo: target, Dir: makeDist(t, "v1")}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("err = %v", err)
	}
}
