package release

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// srcTree writes a module source tree with a subdirectory, an executable,
// a symlink and a .git directory (left out), with the given mtime.
func srcTree(t *testing.T, mtime time.Time) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mydriver")
	files := map[string]string{"Makefile": "obj-m += mydriver.o\n", "mydriver.c": "// driver\n", "sub/helper.h": "#define X 1\n",
		"scripts/gen.sh": "#!/bin/sh\n", ".git/HEAD": "ref: refs/heads/main\n"}
	for n, c := range files {
		p := filepath.Join(dir, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		mode := os.FileMode(0o644)
		if strings.HasSuffix(n, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(c), mode); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("sub/helper.h", filepath.Join(dir, "helper.h"))
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, mtime, mtime) })
	return dir
}

// The source archive is byte-identical for the same trees whatever their
// mtimes (and directory paths), and lists exactly the files.
func TestSourceArchiveReproducible(t *testing.T) {
	const epoch = 1700000000
	var archives [][]byte
	for _, mtime := range []time.Time{time.Unix(1, 0), time.Now()} {
		dst := filepath.Join(t.TempDir(), ModuleSourcesFile)
		dirs := map[string]string{"mydriver": srcTree(t, mtime), "other": srcTree(t, mtime)}
		if err := WriteSourceArchive(dst, dirs, epoch); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		archives = append(archives, b)
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Fatal("two runs over the same trees gave different archives")
	}
	gz := archives[0]
	if gz[3]&0x08 != 0 || !bytes.Equal(gz[4:8], []byte{0, 0, 0, 0}) {
		t.Errorf("gzip header has a name (flags %#x) or an mtime (% x)", gz[3], gz[4:8])
	}
	p := filepath.Join(t.TempDir(), "a.tar.gz")
	os.WriteFile(p, gz, 0o644)
	out, err := exec.Command("tar", "--utc", "-tvzf", p).Output()
	if err != nil {
		t.Fatalf("tar -tvzf: %v", err)
	}
	date := time.Unix(epoch, 0).UTC().Format("2006-01-02 15:04")
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		// mode owner size date time name [-> target]
		if len(f) < 6 || f[1] != "0/0" || f[3]+" "+f[4] != date {
			t.Errorf("entry %q: want owner 0/0 and date %s", l, date)
			continue
		}
		got = append(got, f[0]+" "+strings.Join(f[5:], " "))
	}
	var want []string
	for _, n := range []string{"mydriver", "other"} {
		want = append(want, "drwxr-xr-x "+n+"/", "-rw-r--r-- "+n+"/Makefile", "lrwxrwxrwx "+n+"/helper.h -> sub/helper.h",
			"-rw-r--r-- "+n+"/mydriver.c", "drwxr-xr-x "+n+"/scripts/", "-rwxr-xr-x "+n+"/scripts/gen.sh",
			"drwxr-xr-x "+n+"/sub/", "-rw-r--r-- "+n+"/sub/helper.h")
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tar -tvzf lists:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(string(out), ".git") {
		t.Error("the archive holds .git")
	}
	if err := WriteSourceArchive(filepath.Join(t.TempDir(), "x.tar.gz"), map[string]string{"../x": t.TempDir()}, 0); err == nil {
		t.Error("a module name with a slash was accepted")
	}
}

// PrepareDist attaches the path modules' sources and the config, records
// the archive in the manifest, lists both in SHA256SUMS and SOURCES.md;
// Publish refuses a path module without it.
func TestPrepareDistSources(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfg, []byte("CONFIG_MODULES=y\n"), 0o644)
	withPath := func(dir string) {
		m, _ := manifest.Read(filepath.Join(dir, manifest.FileName))
		m.Modules = append(m.Modules, manifest.Module{Name: "mydriver", Status: manifest.StatusOK,
			Source: manifest.Source{Kind: "path", Path: "drivers/mydriver", SHA256: strings.Repeat("4", 64)}})
		m.Kernel.ConfigSHA256 = "5a3e5f0d3f9f0f0b4c7c5a0a6a1e6d1c9b0b6b8c3a2a1e0f9d8c7b6a5f4e3d2c"
		m.Write(filepath.Join(dir, manifest.FileName))
	}
	src := srcTree(t, time.Now())
	dir := smallDist(t, distSpec{prepare: func(o *PrepareOptions) { withPath(o.Dir) }})
	// Without the source: prepared (a dry run works), but not published.
	if _, err := Publish(ctx, nil, Options{Repo: target, Dir: dir, DryRun: true}); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	r := newRig(t, true)
	if _, err := r.publish(t, dir); err == nil || !strings.Contains(err.Error(), "mydriver have no source archive") {
		t.Errorf("publishing a path module without its source: err = %v", err)
	}
	// A config that is not the manifest's is refused before anything is
	// written.
	if _, err := PrepareDist(PrepareOptions{Dir: dir, Config: cfg, ModuleSources: map[string]string{"mydriver": src}}); err == nil ||
		!strings.Contains(err.Error(), "config_sha256") {
		t.Errorf("wrong config: err = %v", err)
	}
	if _, err := PrepareDist(PrepareOptions{Dir: dir, ModuleSources: map[string]string{"v4l2loopback": src}}); err == nil || !strings.Contains(err.Error(), "not path") {
		t.Errorf("source for a git module: err = %v", err)
	}
	m, _ := manifest.Read(filepath.Join(dir, manifest.FileName))
	m.Kernel.ConfigSHA256 = testenv.SHA256File(t, cfg)
	m.Write(filepath.Join(dir, manifest.FileName))
	if _, err := PrepareDist(PrepareOptions{Dir: dir, Config: cfg, ModuleSources: map[string]string{"mydriver": src}, SourceDateEpoch: 1700000000}); err != nil {
		t.Fatal(err)
	}
	m, _ = manifest.Read(filepath.Join(dir, manifest.FileName))
	if m.Modules[1].SourceArchive != ModuleSourcesFile || m.Modules[0].SourceArchive != "" {
		t.Errorf("source archives in the manifest: %q, %q", m.Modules[0].SourceArchive, m.Modules[1].SourceArchive)
	}
	cmd := exec.Command("sha256sum", "-c", "--strict", SumsFile)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	sums := readSums(t, dir)
	for _, n := range []string{ModuleSourcesFile, ConfigFile, SourcesFile, manifest.FileName} {
		if sums[n] == "" {
			t.Errorf("SHA256SUMS lacks %s", n)
		}
	}
	srcMD, _ := os.ReadFile(filepath.Join(dir, SourcesFile))
	wantAll(t, SourcesFile, string(srcMD), "- `mydriver`: attached as `module-sources.tar.gz`, directory `mydriver/`", "is attached as `kernel.config`")
	res, err := r.publish(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	rels := r.fake.Releases(target)
	if len(rels) != 1 || rels[0].ID != res.ReleaseID {
		t.Fatalf("releases %+v", rels)
	}
	assertRelease(t, r.fake, rels[0], dir)
	r.check(t)
}
