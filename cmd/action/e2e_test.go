package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/boottest"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// e2eTag is the kernel tag the fake GitHub serves: Debian's
// linux-source-6.12 repacked as GitHub's tarball of it, with the test
// kernel config at Microsoft/config-wsl.
const e2eTag = buildtest.Tag

const e2eToken = "ghs_E2EsecretTOKEN_0123456789abcdefghijkl"

// e2eCommit is the commit the fake's tag points to: the commit id the
// repacked tarball's pax header carries (githubfake.RepackKernelTarball).
func e2eCommit() string {
	s := sha256.Sum256([]byte(e2eTag))
	return hex.EncodeToString(s[:20])
}

// TestActionEndToEnd runs the real binary in action mode against a fake
// GitHub (the only fake): it selects the tag, fetches the kernel tarball,
// builds the kernel and three modules (two from this repository, one a
// Debian DKMS package fetched as a url source), writes modules.vhdx and
// publishes a release. A second run is "up to date". Then the released
// bzImage boots under qemu with the released modules.vhdx attached the way
// WSL attaches it, and loads our modules and a stock one.
func TestActionEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds a kernel (cached) and boots it")
	}
	for _, tool := range []string{"qemu-system-x86_64", "busybox", "modprobe", "git", "make", "gcc"} {
		testenv.Tool(t, tool)
	}
	ctx := context.Background()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "wsl-modules-action")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The same tarball the test kernel is built from: its cache entry is
	// reused, so this run does no kernel build when the test kernel exists.
	tarball := buildtest.GitHubTarball(t)
	fake := githubfake.NewT(t, githubfake.Options{Token: e2eToken})
	fake.AddTags("microsoft/WSL2-Linux-Kernel", githubfake.Tag{Name: "linux-msft-wsl-6.6.87.2"}, githubfake.Tag{Name: e2eTag, Commit: e2eCommit()})
	fake.SetTarball("microsoft/WSL2-Linux-Kernel", e2eTag, tarball)
	fake.AddTags("me/wsl-kernel")

	// The workspace: the module list, our two test modules, and
	// v4l2loopback (Debian's DKMS package) as a url source with sha256.
	ws := filepath.Join(tmp, "workspace")
	for _, m := range []string{"provider", "consumer"} {
		if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules", m), filepath.Join(ws, "modules", m), atomicfile.CopyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	v4l := filepath.Join(tmp, "v4l2loopback-0.12.7")
	if err := buildtest.PrepareV4L2Loopback(testenv.DKMSSource(t, "v4l2loopback"), v4l); err != nil {
		t.Fatal(err)
	}
	tgz := tarGz(t, v4l)
	sum := sha256.Sum256(tgz)
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("the token was sent to the module download host")
		}
		w.Write(tgz)
	}))
	t.Cleanup(files.Close)
	list := "kernel:\n  arch: x86_64\nmodules:\n" +
		"  - name: provider\n    path: modules/provider\n" +
		"  - name: consumer\n    path: modules/consumer\n    depends: [provider]\n" +
		"  - name: v4l2loopback\n    url: " + files.URL + "/v4l2loopback-0.12.7.tar.gz\n    sha256: " + hex.EncodeToString(sum[:]) + "\n"
	// Path modules are relative to the list's directory (and inside it).
	if err := os.WriteFile(filepath.Join(ws, "wsl-modules.yml"), []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}

	runnerTemp := filepath.Join(tmp, "runner-temp")
	os.MkdirAll(runnerTemp, 0o755)
	runAction := func(name string) (outputs map[string]string, summary, logs string) {
		t.Helper()
		outFile := filepath.Join(tmp, name+".output")
		sumFile := filepath.Join(tmp, name+".summary")
		for _, f := range []string{outFile, sumFile} {
			os.WriteFile(f, nil, 0o644)
		}
		// The environment as the runner sets it for the composite
		// action's step (INPUT_* passed explicitly by action.yml).
		env := []string{
			"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
			"GITHUB_ACTIONS=true", "CI=true",
			"GITHUB_OUTPUT=" + outFile, "GITHUB_STEP_SUMMARY=" + sumFile,
			"GITHUB_REPOSITORY=me/wsl-kernel", "GITHUB_SHA=" + strings.Repeat("a", 40),
			"GITHUB_API_URL=" + fake.APIURL(), "GITHUB_SERVER_URL=" + fake.ServerURL(),
			"GITHUB_WORKSPACE=" + ws, "RUNNER_TEMP=" + runnerTemp,
			"INPUT_MODULES=wsl-modules.yml", "INPUT_KERNEL-REPO=microsoft/WSL2-Linux-Kernel",
			"INPUT_TRACK=6.12", "INPUT_MAX-TAGS=3", "INPUT_ARCH=", "INPUT_LAYOUT=flat", "INPUT_HEADERS=devel",
			"INPUT_KEEP-GOING=false", "INPUT_PUBLISH=true", "INPUT_RELEASE-PREFIX=wsl-modules-",
			"INPUT_TOKEN=" + e2eToken, "INPUT_CACHE-DIR=" + buildtest.CacheDir(), "INPUT_JOBS=0",
			"INPUT_STAGE=all", "INPUT_SHARD=", "INPUT_WORK-DIR=" + filepath.Join(runnerTemp, "wsl-modules"),
		}
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env, cmd.Dir = env, ws
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		logs = stdout.String() + stderr.String()
		// The mask command itself (consumed by the runner, never shown)
		// is the only place the token may appear, once, first.
		mask := "::add-mask::" + e2eToken + "\n"
		if !strings.HasPrefix(stdout.String(), mask) {
			t.Errorf("%s: the output does not start with the token's mask command", name)
		}
		if strings.Contains(strings.Replace(logs, mask, "", 1), e2eToken) {
			t.Errorf("%s: the token appears in the output", name)
		}
		if err != nil {
			t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", name, err, stdout.String(), stderr.String())
		}
		b, _ := os.ReadFile(sumFile)
		return parseOutputs(t, outFile), string(b), logs
	}

	start := time.Now()
	out, summary, logs := runAction("first")
	t.Logf("first run: %s", time.Since(start).Round(time.Second))
	rels := fake.Releases("me/wsl-kernel")
	if len(rels) != 1 || rels[0].Draft {
		t.Fatalf("releases: %+v\n%s", rels, logs)
	}
	rel := rels[0]
	if rel.Tag != release.TagName(e2eTag, "x86_64", "") || rel.Name != e2eTag {
		t.Errorf("release %q named %q", rel.Tag, rel.Name)
	}
	assets := map[string][]byte{}
	var names []string
	for _, a := range rel.Assets {
		b, err := fake.AssetBytes("me/wsl-kernel", a.ID)
		if err != nil {
			t.Fatal(err)
		}
		assets[a.Name] = b
		names = append(names, a.Name)
	}
	sort.Strings(names)
	if want := []string{"SHA256SUMS", "SOURCES.md", "build-logs.tar.gz", "build-manifest.json", "bzImage", "kernel.config",
		"module-sources.tar.gz", "modules.vhdx", "wslconfig.txt"}; strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("assets %v, want %v", names, want)
	}
	// SHA256SUMS lists every other asset with its real sha256.
	listed := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(assets["SHA256SUMS"])), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("SHA256SUMS line %q", line)
		}
		listed[f[1]] = f[0]
	}
	for name, b := range assets {
		if name == "SHA256SUMS" {
			continue
		}
		s := sha256.Sum256(b)
		if listed[name] != hex.EncodeToString(s[:]) {
			t.Errorf("SHA256SUMS: %s %q, asset sha256 %x", name, listed[name], s)
		}
	}
	m, err := manifest.Decode("build-manifest.json", assets["build-manifest.json"])
	if err != nil {
		t.Fatal(err)
	}
	if m.Kernel.Tag != e2eTag || m.Kernel.Source.Commit != e2eCommit() || m.Kernel.Source.Kind != "github-tarball" {
		t.Errorf("manifest kernel %+v", m.Kernel)
	}
	for _, mod := range m.Modules {
		if mod.Status != manifest.StatusOK {
			t.Errorf("module %s: %s %s", mod.Name, mod.Status, mod.Error)
		}
	}
	if len(m.Modules) != 3 {
		t.Errorf("%d modules in the manifest", len(m.Modules))
	}
	if release.HashFromBody(rel.Body) != m.Hash() {
		t.Errorf("release body hash %q, manifest hash %q", release.HashFromBody(rel.Body), m.Hash())
	}

	// Outputs and step summary.
	if out["built"] != "true" || out["kernel-tag"] != e2eTag || out["kernel-release"] != m.Kernel.Release ||
		!strings.HasSuffix(out["release-url"], "/me/wsl-kernel/releases/tag/"+release.TagName(e2eTag, "x86_64", "")) {
		t.Errorf("outputs %v", out)
	}
	for _, k := range []string{"vhdx-path", "bzimage-path"} {
		b, err := os.ReadFile(out[k])
		if err != nil {
			t.Errorf("output %s: %v", k, err)
			continue
		}
		name := map[string]string{"vhdx-path": "modules.vhdx", "bzimage-path": "bzImage"}[k]
		if !bytes.Equal(b, assets[name]) {
			t.Errorf("output %s (%s) differs from the published %s", k, out[k], name)
		}
	}
	if !strings.Contains(summary, m.Kernel.Release) || !strings.Contains(summary, "| Module | Status | Size | Time | kbuild steps |") {
		t.Errorf("step summary:\n%s", summary)
	}
	// The timing table: every stage, the kernel row saying what served it.
	for _, re := range []string{`(?m)^\| kernel \| [0-9.hms]+ \| (kernel cache hit|built: [0-9]+ kbuild steps) \|$`,
		`(?m)^\| modules \| [0-9.hms]+ \|`, `(?m)^\| image \| [0-9.hms]+ \|`, `(?m)^\| \*\*total\*\* \| \*\*[0-9.hms]+\*\* \|`} {
		if !regexp.MustCompile(re).MatchString(summary) {
			t.Errorf("step summary has no line matching %s:\n%s", re, summary)
		}
	}
	for _, mod := range []string{"provider", "consumer", "v4l2loopback"} {
		if !strings.Contains(summary, "| "+mod+" | :white_check_mark: ok |") {
			t.Errorf("step summary has no ok row for %s:\n%s", mod, summary)
		}
		if !strings.Contains(logs, "::group::module "+mod+": ok") {
			t.Errorf("no log group for module %s", mod)
		}
	}

	// The second run finds the published release up to date, with a
	// couple of API requests and nothing built.
	fake.ResetRequests()
	out2, summary2, logs2 := runAction("second")
	if out2["built"] != "false" {
		t.Errorf("second run outputs %v\n%s", out2, logs2)
	}
	if !strings.Contains(summary2, "Up to date") {
		t.Errorf("second run summary:\n%s", summary2)
	}
	var reqs []string
	for _, r := range fake.Requests() {
		reqs = append(reqs, r.Method+" "+r.Path)
		if r.Method != http.MethodGet {
			t.Errorf("second run made a %s request: %s", r.Method, r.Path)
		}
	}
	if len(reqs) > 3 {
		t.Errorf("second run made %d requests: %v", len(reqs), reqs)
	}
	if len(fake.Releases("me/wsl-kernel")) != 1 {
		t.Errorf("second run changed the releases")
	}

	// Boot the released kernel with the released modules.vhdx, mounted
	// the way WSL's init mounts it.
	bootDir := filepath.Join(tmp, "boot")
	os.MkdirAll(bootDir, 0o755)
	for _, name := range []string{"bzImage", "modules.vhdx"} {
		if err := os.WriteFile(filepath.Join(bootDir, name), assets[name], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bootStart := time.Now()
	res, err := boottest.Boot(ctx, boottest.Config{Kernel: filepath.Join(bootDir, "bzImage"), Disk: filepath.Join(bootDir, "modules.vhdx"),
		Format: "vhdx", Modules: []string{"wslt_consumer", "v4l2loopback", "vfat"}, Timeout: 8 * time.Minute})
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	t.Logf("boot: %s", time.Since(bootStart).Round(time.Second))
	if !res.Done || res.Release != out["kernel-release"] || res.Layout != "flat" {
		t.Errorf("boot: done %v, uname -r %q (want %q), layout %q\n%s", res.Done, res.Release, out["kernel-release"], res.Layout, res.Console)
	}
	if len(res.Failed) > 0 || strings.Join(res.Loaded, " ") != "wslt_consumer v4l2loopback vfat" {
		t.Errorf("boot: loaded %v, failed %v\n%s", res.Loaded, res.Failed, res.Console)
	}
	// Build mode signs our modules with the build's key (the test config
	// has CONFIG_MODULE_SIG): loading them does not taint the kernel.
	if res.Tainted&boottest.TaintUnsignedModule != 0 {
		t.Errorf("boot: tainted %#x: a module without a valid signature was loaded", res.Tainted)
	}
	lsmod := map[string]bool{}
	for _, n := range res.Lsmod {
		lsmod[n] = true
	}
	for _, n := range []string{"wslt_consumer", "wslt_provider", "v4l2loopback", "videodev", "vfat", "fat"} {
		if !lsmod[n] {
			t.Errorf("boot: %s not in lsmod %v", n, res.Lsmod)
		}
	}
}

// parseOutputs reads a GITHUB_OUTPUT file (name<<delimiter blocks, or
// name=value lines).
func parseOutputs(t *testing.T, path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if name, delim, ok := strings.Cut(line, "<<"); ok {
			var val []string
			for sc.Scan() && sc.Text() != delim {
				val = append(val, sc.Text())
			}
			out[name] = strings.Join(val, "\n")
		} else if name, val, ok := strings.Cut(line, "="); ok {
			out[name] = val
		}
	}
	return out
}

// tarGz packs dir as a .tar.gz with dir's base name as the top directory.
func tarGz(t *testing.T, dir string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	top := filepath.Base(dir)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(filepath.Join(top, rel))
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
