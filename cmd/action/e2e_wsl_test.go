package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/boottest"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// wslEnv is the environment of an action step for track: wsl.
func wslEnv(fake *githubfake.Server, ws, runnerTemp, out, sum string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"GITHUB_ACTIONS=true", "CI=true", "GITHUB_OUTPUT=" + out, "GITHUB_STEP_SUMMARY=" + sum,
		"GITHUB_REPOSITORY=me/wsl-kernel", "GITHUB_SHA=" + strings.Repeat("b", 40),
		"GITHUB_API_URL=" + fake.APIURL(), "GITHUB_SERVER_URL=" + fake.ServerURL(),
		"GITHUB_WORKSPACE=" + ws, "RUNNER_TEMP=" + runnerTemp,
		"INPUT_MODULES=wsl-modules.yml", "INPUT_TRACK=wsl", "INPUT_PUBLISH=true", "INPUT_TOKEN=" + e2eToken,
		"INPUT_CACHE-DIR=" + buildtest.CacheDir(), "INPUT_WORK-DIR=" + filepath.Join(runnerTemp, "wsl-modules"),
	}
}

// TestActionEndToEndWSL follows WSL releases in action mode against the
// fake GitHub: track wsl picks the kernel of the newest stable WSL
// release from its packages.config, fetches the kernel source and that
// release's installer (a real MSI built with wixl around the test
// kernel's stock files), builds the modules in stock mode and publishes.
// The released bzImage is the MSI's kernel bit for bit; the pair boots in
// qemu and loads a listed module and a stock one; a second run is up to
// date within three API requests.
func TestActionEndToEndWSL(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: prepares a stock kernel (cached) and boots it")
	}
	testenv.Tool(t, "qemu-system-x86_64")
	ctx := context.Background()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "wsl-modules-action")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	stock := buildtest.Stock(t)
	msi := buildtest.WSLMSI(t, buildtest.MSISpec{Version: "2.6.1.0", Kernel: stock.Kernel, Modules: stock.Modules})
	msiBytes, err := os.ReadFile(msi)
	if err != nil {
		t.Fatal(err)
	}
	kernelPkg := strings.TrimPrefix(e2eTag, "linux-msft-wsl-") + "-1"
	fake := githubfake.NewT(t, githubfake.Options{Token: e2eToken})
	fake.AddTags("microsoft/WSL2-Linux-Kernel", githubfake.Tag{Name: e2eTag, Commit: e2eCommit()})
	fake.SetTarball("microsoft/WSL2-Linux-Kernel", e2eTag, buildtest.GitHubTarball(t))
	fake.AddTags("me/wsl-kernel")
	if _, err := fake.AddWSLReleases("microsoft/WSL",
		githubfake.WSLRelease{Version: "2.6.0", KernelPackage: "6.6.87.2-1"},
		githubfake.WSLRelease{Version: "2.6.1", KernelPackage: kernelPkg, Assets: map[string][]byte{"wsl.2.6.1.0.x64.msi": msiBytes}},
		githubfake.WSLRelease{Version: "2.7.0", Prerelease: true, KernelPackage: "6.18.35.2-1"},
	); err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(tmp, "workspace")
	for _, m := range []string{"provider", "consumer"} {
		if err := atomicfile.CopyTree(ctx, buildtest.Testdata("modules", m), filepath.Join(ws, "modules", m), atomicfile.CopyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	list := "modules:\n  - name: provider\n    path: modules/provider\n  - name: consumer\n    path: modules/consumer\n    depends: [provider]\n    autoload: true\n"
	os.WriteFile(filepath.Join(ws, "wsl-modules.yml"), []byte(list), 0o644)
	runnerTemp := filepath.Join(tmp, "runner-temp")
	os.MkdirAll(runnerTemp, 0o755)
	run := func(name string) map[string]string {
		t.Helper()
		out, sum := filepath.Join(tmp, name+".out"), filepath.Join(tmp, name+".sum")
		os.WriteFile(out, nil, 0o644)
		os.WriteFile(sum, nil, 0o644)
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env, cmd.Dir = wslEnv(fake, ws, runnerTemp, out, sum), ws
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, logs.String())
		}
		if b, _ := os.ReadFile(sum); name == "first" && (!strings.Contains(string(b), "Mode: **stock**") ||
			!regexp.MustCompile(`(?m)^\| kernel \| [0-9.hms]+ \| (kernel cache hit|modules_prepare: [0-9]+ kbuild steps) \|$`).Match(b)) {
			t.Errorf("%s: step summary does not name stock mode or the kernel stage's work:\n%s", name, b)
		}
		return parseOutputs(t, out)
	}
	out := run("first")
	rels := fake.Releases("me/wsl-kernel")
	if len(rels) != 1 || rels[0].Draft || rels[0].Tag != release.TagName(e2eTag, "x86_64", "") {
		t.Fatalf("releases: %+v (outputs %v)", rels, out)
	}
	assets := map[string][]byte{}
	for _, a := range rels[0].Assets {
		b, err := fake.AssetBytes("me/wsl-kernel", a.ID)
		if err != nil {
			t.Fatal(err)
		}
		assets[a.Name] = b
	}
	want, _ := os.ReadFile(stock.Kernel)
	if sha256.Sum256(assets["bzImage"]) != sha256.Sum256(want) {
		t.Error("the released bzImage is not the MSI's kernel")
	}
	m, err := manifest.Decode("build-manifest.json", assets["build-manifest.json"])
	if err != nil {
		t.Fatal(err)
	}
	ms := sha256.Sum256(msiBytes)
	if m.Kernel.Mode != manifest.ModeStock || m.Kernel.Stock == nil || m.Kernel.Stock.MSI == nil ||
		m.Kernel.Stock.MSI.SHA256 != hex.EncodeToString(ms[:]) || m.Kernel.Stock.MSI.WSLVersion != "2.6.1" {
		t.Errorf("manifest kernel: %+v stock %+v", m.Kernel, m.Kernel.Stock)
	}
	if len(m.Kernel.WSL) != 1 || m.Kernel.WSL[0].Version != "2.6.1" || !strings.Contains(rels[0].Body, "2.6.1") {
		t.Errorf("WSL releases shipping the kernel: %+v; notes:\n%s", m.Kernel.WSL, rels[0].Body)
	}
	if !strings.Contains(string(assets["wslconfig.txt"]), "loadKernelModules=wslt_consumer") {
		t.Errorf("wslconfig.txt does not load the autoload module:\n%s", assets["wslconfig.txt"])
	}
	boot(t, ctx, tmp, assets, m.Kernel.Release)

	fake.ResetRequests()
	out = run("second")
	if out["built"] != "false" {
		t.Errorf("second run built: %v", out)
	}
	if n := fake.CountRequests(githubfake.HostAPI); n > 3 {
		for _, r := range fake.Requests() {
			t.Logf("%s %s %s?%s", r.Host, r.Method, r.Path, r.Query)
		}
		t.Errorf("second run made %d API requests, want at most 3", n)
	}
}

// boot boots the released pair the way WSL mounts the image and loads a
// listed module (with the listed module it depends on) and a stock one.
func boot(t *testing.T, ctx context.Context, tmp string, assets map[string][]byte, rel string) {
	t.Helper()
	dir := filepath.Join(tmp, "boot")
	os.MkdirAll(dir, 0o755)
	for _, n := range []string{"bzImage", "modules.vhdx"} {
		os.WriteFile(filepath.Join(dir, n), assets[n], 0o644)
	}
	res, err := boottest.Boot(ctx, boottest.Config{Kernel: filepath.Join(dir, "bzImage"), Disk: filepath.Join(dir, "modules.vhdx"),
		Format: "vhdx", Modules: []string{"wslt_consumer", "vfat"}})
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	if res.Release != rel || len(res.Failed) > 0 || strings.Join(res.Loaded, " ") != "wslt_consumer vfat" {
		t.Errorf("boot: uname -r %q (want %q), loaded %v, failed %v\n%s", res.Release, rel, res.Loaded, res.Failed, res.Console)
	}
}
