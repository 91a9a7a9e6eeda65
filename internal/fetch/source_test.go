package fetch

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/wsl-modules/wsl-modules-action/internal/archive"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

const testTag = buildtest.Tag

func fetcher(t *testing.T, fake *githubfake.Server, log *bytes.Buffer) *Fetcher {
	t.Helper()
	clock := githubfake.NewClock(time.Now())
	c, err := githubapi.New(githubapi.Options{Getenv: fake.Getenv(nil), Sleep: clock.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	rep := progress.New(log)
	rep.Interval = time.Nanosecond
	return &Fetcher{Client: c, Progress: rep}
}

// assertNothingLeft checks that dir holds nothing (no tree, no staging).
func assertNothingLeft(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
	}
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return strings.TrimSpace(string(out))
}

// The real kernel tarball (Debian's linux-source-6.12 shaped like GitHub's
// tarball) through the fake: 302 to the bytes host, streamed and unpacked.
// Then the same download dropped mid-stream leaves nothing.
func TestKernelTarball(t *testing.T) {
	if testing.Short() {
		t.Skip("unpacks 1.5 GB")
	}
	// The test kernel's tarball, as GitHub serves it under testTag (a cold
	// run repacks the source once, for both).
	tarball := buildtest.GitHubTarball(t)
	fake := githubfake.NewT(t, githubfake.Options{Token: "ghp_kernel"})
	fake.AddTags(kernelRepo, githubfake.Tag{Name: testTag})
	fake.SetTarball(kernelRepo, testTag, tarball)
	var log bytes.Buffer
	f := fetcher(t, fake, &log)
	work := t.TempDir()

	t.Run("dropped", func(t *testing.T) {
		fake.DropAfter(githubfake.RouteTarballBytes, 60<<20)
		_, err := f.Kernel(context.Background(), kernelRepo, testTag, filepath.Join(work, "source"))
		if err == nil {
			t.Fatal("no error for a dropped download")
		}
		t.Logf("error: %v", err)
		assertNothingLeft(t, work)
	})

	t.Run("full", func(t *testing.T) {
		dest := filepath.Join(work, "source")
		src, err := f.Kernel(context.Background(), kernelRepo, testTag, dest)
		if err != nil {
			t.Fatal(err)
		}
		// sha256sum is the independent check of the streamed hash.
		wantSum := strings.Fields(run(t, "", "sha256sum", tarball))[0]
		if src.SHA256 != wantSum || src.Kind != "github-tarball" || src.Tag != testTag || src.Repo != kernelRepo {
			t.Errorf("source %+v, want sha256 %s", src, wantSum)
		}
		var commit string
		for _, r := range fake.Requests() {
			if r.Route == githubfake.RouteTarballBytes && r.Authorization != "" {
				t.Error("token sent to the tarball host")
			}
		}
		tags, _ := ListTags(context.Background(), f.Client, kernelRepo, nil)
		commit = tags[0].Commit
		if src.Commit != commit {
			t.Errorf("commit %s, want %s", src.Commit, commit)
		}
		// Same files as GNU tar lists, top directory stripped.
		listing := run(t, "", "tar", "-tvzf", tarball)
		wantFiles := 0
		for _, l := range strings.Split(listing, "\n") {
			if strings.HasPrefix(l, "-") {
				wantFiles++
			}
		}
		gotFiles := 0
		filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				gotFiles++
			}
			return nil
		})
		if gotFiles != wantFiles {
			t.Errorf("%d files unpacked, tar lists %d", gotFiles, wantFiles)
		}
		mk, err := os.ReadFile(filepath.Join(dest, "Makefile"))
		if err != nil {
			t.Fatal(err)
		}
		wantMk := run(t, "", "tar", "-xOzf", tarball, githubfake.KernelTopDir(testTag)+"/Makefile")
		if strings.TrimSpace(string(mk)) != wantMk {
			t.Error("Makefile differs from tar's")
		}
		if _, err := os.Stat(filepath.Join(dest, "Microsoft", "config-wsl")); err != nil {
			t.Error(err)
		}
		for _, want := range []string{"download kernel " + testTag, "ETA", "/s"} {
			if !strings.Contains(log.String(), want) {
				t.Errorf("progress lacks %q", want)
			}
		}
		// Existing destination without Force.
		if _, err := f.Kernel(context.Background(), kernelRepo, testTag, dest); err == nil {
			t.Error("overwrote an existing source tree without Force")
		}
	})
}

func TestKernelTagNotFound(t *testing.T) {
	fake := githubfake.NewT(t, githubfake.Options{})
	fake.AddTags(kernelRepo, githubfake.Tag{Name: testTag})
	var log bytes.Buffer
	f := fetcher(t, fake, &log)
	work := t.TempDir()
	_, err := f.Kernel(context.Background(), kernelRepo, "linux-msft-wsl-6.6.999.1", filepath.Join(work, "s"))
	if err == nil || !strings.Contains(err.Error(), "ref linux-msft-wsl-6.6.999.1 not found in "+kernelRepo) {
		t.Errorf("err = %v", err)
	}
	assertNothingLeft(t, work)
}

type entry struct {
	name, body, link string
	typ              byte
}

func tarGz(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// Traversal tarballs served as the kernel tarball are refused, leaving
// nothing.
func TestKernelTraversalRefused(t *testing.T) {
	for name, entries := range map[string][]entry{
		"dotdot":   {{name: "top/", typ: tar.TypeDir}, {name: "top/Makefile", body: "x", typ: tar.TypeReg}, {name: "top/../../evil", body: "x", typ: tar.TypeReg}},
		"absolute": {{name: "top/", typ: tar.TypeDir}, {name: "/etc/evil", body: "x", typ: tar.TypeReg}},
		"symlink":  {{name: "top/", typ: tar.TypeDir}, {name: "top/link", link: "../../../etc", typ: tar.TypeSymlink}, {name: "top/link/passwd", body: "x", typ: tar.TypeReg}},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "evil.tar.gz")
			os.WriteFile(p, tarGz(t, entries), 0o644)
			fake := githubfake.NewT(t, githubfake.Options{})
			fake.AddTags(kernelRepo, githubfake.Tag{Name: testTag})
			fake.SetTarball(kernelRepo, testTag, p)
			var log bytes.Buffer
			work := t.TempDir()
			_, err := fetcher(t, fake, &log).Kernel(context.Background(), kernelRepo, testTag, filepath.Join(work, "source"))
			if !errors.Is(err, archive.ErrUnsafe) {
				t.Fatalf("err = %v, want ErrUnsafe", err)
			}
			assertNothingLeft(t, work)
		})
	}
}

func TestModuleURL(t *testing.T) {
	body := tarGz(t, []entry{{name: "mod-1.0/", typ: tar.TypeDir}, {name: "mod-1.0/Makefile", body: "obj-m := mod.o\n", typ: tar.TypeReg}, {name: "mod-1.0/mod.c", body: "int x;\n", typ: tar.TypeReg}})
	sum := sha256.Sum256(body)
	good := hex.EncodeToString(sum[:])
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	defer srv.Close()
	fake := githubfake.NewT(t, githubfake.Options{})
	var log bytes.Buffer
	f := fetcher(t, fake, &log)
	work := t.TempDir()

	bad := strings.Repeat("ab", 32)
	_, err := f.Module(context.Background(), ModuleSpec{Name: "mod", URL: srv.URL + "/mod.tar.gz", SHA256: bad}, filepath.Join(work, "mod"))
	if err == nil {
		t.Fatal("sha256 mismatch accepted")
	}
	for _, want := range []string{"module mod", "sha256 mismatch", "got " + good, "want " + bad} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	assertNothingLeft(t, work)

	src, err := f.Module(context.Background(), ModuleSpec{Name: "mod", URL: srv.URL + "/mod.tar.gz", SHA256: good}, filepath.Join(work, "mod"))
	if err != nil {
		t.Fatal(err)
	}
	if src.Kind != "url" || src.SHA256 != good || src.Pin() != good {
		t.Errorf("source %+v", src)
	}
	if b, err := os.ReadFile(filepath.Join(work, "mod", "Makefile")); err != nil || string(b) != "obj-m := mod.o\n" {
		t.Errorf("Makefile: %q %v", b, err)
	}
	if _, err := f.Module(context.Background(), ModuleSpec{Name: "m", URL: srv.URL, SHA256: "xyz"}, filepath.Join(work, "m")); err == nil {
		t.Error("bad sha256 syntax accepted")
	}
}

func gitRepo(t *testing.T) (dir, tagCommit, branchCommit string) {
	t.Helper()
	testenv.Tool(t, "git")
	dir = t.TempDir()
	git := func(args ...string) string {
		return run(t, dir, "git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	}
	git("init", "-q")
	os.WriteFile(filepath.Join(dir, "Makefile"), []byte("obj-m := a.o\n"), 0o644)
	git("add", ".")
	git("commit", "-q", "-m", "one")
	git("tag", "-a", "v1.0", "-m", "v1.0")
	os.WriteFile(filepath.Join(dir, "a.c"), []byte("int a;\n"), 0o644)
	git("add", ".")
	git("commit", "-q", "-m", "two")
	return dir, git("rev-parse", "v1.0^{commit}"), git("rev-parse", "main")
}

func TestModuleGit(t *testing.T) {
	repo, tagCommit, branchCommit := gitRepo(t)
	f := &Fetcher{}
	work := t.TempDir()
	for _, tc := range []struct{ url, ref, commit string }{
		{"file://" + repo, "v1.0", tagCommit},
		{repo, "main", branchCommit},
	} {
		dest := filepath.Join(work, tc.ref)
		src, err := f.Module(context.Background(), ModuleSpec{Name: "a", Git: tc.url, Ref: tc.ref}, dest)
		if err != nil {
			t.Fatal(err)
		}
		if src.Kind != "git" || src.Commit != tc.commit || src.Ref != tc.ref || src.URL != tc.url {
			t.Errorf("%s: source %+v, want commit %s", tc.ref, src, tc.commit)
		}
		_, errA := os.Stat(filepath.Join(dest, "a.c"))
		if (tc.ref == "v1.0") != errors.Is(errA, fs.ErrNotExist) {
			t.Errorf("%s: a.c presence wrong (%v)", tc.ref, errA)
		}
		if _, err := os.Stat(filepath.Join(dest, ".git")); err == nil {
			t.Errorf("%s: .git left in the source tree", tc.ref)
		}
	}
	empty := t.TempDir()
	_, err := f.Module(context.Background(), ModuleSpec{Name: "a", Git: "file://" + repo, Ref: "v9.9-does-not-exist"}, filepath.Join(empty, "a"))
	if err == nil || !strings.Contains(err.Error(), "module a") || !strings.Contains(err.Error(), "v9.9-does-not-exist") ||
		!strings.Contains(err.Error(), "couldn't find remote ref") {
		t.Errorf("err = %v", err)
	}
	assertNothingLeft(t, empty)
	if _, err := f.Module(context.Background(), ModuleSpec{Name: "a", Git: repo}, filepath.Join(empty, "a")); err == nil {
		t.Error("git without ref accepted")
	}
}

// TestModuleGitRelative: a relative local repository path resolves
// against the current directory (where git ls-remote resolves it), not
// the staging directory git fetch runs in.
func TestModuleGitRelative(t *testing.T) {
	repo, _, branchCommit := gitRepo(t)
	t.Chdir(filepath.Dir(repo))
	rel := "./" + filepath.Base(repo)
	src, err := (&Fetcher{}).Module(context.Background(), ModuleSpec{Name: "a", Git: rel, Ref: "main"}, filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	if src.Commit != branchCommit {
		t.Errorf("source %+v, want commit %s", src, branchCommit)
	}
}

// TestModuleGitOptionRefused: a git: value that looks like an option is
// passed to git fetch as the repository (after --), never as an option:
// --upload-pack would run a command.
func TestModuleGitOptionRefused(t *testing.T) {
	repo, _, _ := gitRepo(t)
	marker := filepath.Join(t.TempDir(), "ran")
	t.Setenv("WSLT_MARKER", marker)
	_, err := (&Fetcher{}).Module(context.Background(), ModuleSpec{Name: "a", Git: "--upload-pack=touch ${WSLT_MARKER};x:", Ref: repo},
		filepath.Join(t.TempDir(), "a"))
	if err == nil {
		t.Error("a git: value starting with -- was fetched")
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("git fetch took the git: value as --upload-pack and ran it")
	}
}

// A git source on the GitHub server can come through the tarball API,
// pinned to the commit its ref resolves to.
func TestModuleGitHubTarball(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.tar.gz")
	os.WriteFile(p, tarGz(t, []entry{{name: "o-mod-abc/", typ: tar.TypeDir}, {name: "o-mod-abc/Makefile", body: "obj-m := m.o\n", typ: tar.TypeReg}}), 0o644)
	fake := githubfake.NewT(t, githubfake.Options{})
	fake.AddTags("o/mod", githubfake.Tag{Name: "v2", Commit: strings.Repeat("c", 40)})
	fake.SetTarball("o/mod", "v2", p)
	var log bytes.Buffer
	f := fetcher(t, fake, &log)
	f.GitHubTarballs = true
	dest := filepath.Join(t.TempDir(), "mod")
	src, err := f.Module(context.Background(), ModuleSpec{Name: "mod", Git: fake.ServerURL() + "/o/mod.git", Ref: "v2"}, dest)
	if err != nil {
		t.Fatal(err)
	}
	if src.Kind != "git" || src.Commit != strings.Repeat("c", 40) || src.Repo != "o/mod" || src.SHA256 == "" {
		t.Errorf("source %+v", src)
	}
	if _, err := os.Stat(filepath.Join(dest, "Makefile")); err != nil {
		t.Error(err)
	}
}

func TestModulePath(t *testing.T) {
	base := t.TempDir()
	os.MkdirAll(filepath.Join(base, "mods", "x"), 0o755)
	os.WriteFile(filepath.Join(base, "mods", "x", "x.c"), []byte("int x;\n"), 0o644)
	f := &Fetcher{}
	src, err := f.Module(context.Background(), ModuleSpec{Name: "x", Path: "mods/x", BaseDir: base}, "")
	if err != nil {
		t.Fatal(err)
	}
	if src.Kind != "path" || src.Path != filepath.Join(base, "mods", "x") || len(src.SHA256) != 64 {
		t.Errorf("source %+v", src)
	}
	os.WriteFile(filepath.Join(base, "mods", "x", "x.c"), []byte("int y;\n"), 0o644)
	src2, _ := f.Module(context.Background(), ModuleSpec{Name: "x", Path: "mods/x", BaseDir: base}, "")
	if src2.SHA256 == src.SHA256 {
		t.Error("content change not reflected in the pin")
	}
	if _, err := f.Module(context.Background(), ModuleSpec{Name: "x", Path: "nope", BaseDir: base}, ""); err == nil {
		t.Error("missing path accepted")
	}
	if _, err := f.Module(context.Background(), ModuleSpec{Name: "x", Path: "a", URL: "b"}, ""); err == nil {
		t.Error("two kinds accepted")
	}
}
