package modbuild_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// dkmsCorpus are Debian bookworm's *-dkms packages the corpus test builds
// (scripts/setup.sh installs them), by the name of their /usr/src
// directory without the version. openrazer-driver-dkms is left out: it
// pulls in udev and a systemd upgrade.
var dkmsCorpus = []string{
	"acpi-call", "bbswitch", "ddcci", "dm-writeboost", "evdi", "gost-crypto", "ipt-netflow", "jool-dkms",
	"lime-forensics", "linux-apfs-rw", "nat-rtsp", "ovpn-dco", "rapiddisk-dkms", "tp_smapi", "v4l2loopback",
	"vpoll", "xtables-addons",
}

// TestDKMSCorpus builds Debian's DKMS packages through a module list
// (path: /usr/src/<pkg>-<ver>, one shared jobserver) and with Debian's
// own dkms build (private --dkmstree and --sourcetree, one package after
// the other), against the test kernel's tree and against Microsoft's WSL
// config prepared on the same source, and checks that the same packages
// succeed, are excluded (BUILD_EXCLUSIVE, dkms exit 77) or fail (with
// DKMS's wording for the failure), and that the built modules have the
// same names and modinfo fields.
func TestDKMSCorpus(t *testing.T) {
	dkmsBin := testenv.Tool(t, "dkms")
	testenv.Tool(t, "modinfo")
	var srcs []corpusSource
	for _, p := range dkmsCorpus {
		srcs = append(srcs, corpusSource{p, testenv.DKMSSource(t, p)})
	}
	// Two packages made to build on 6.12 the DKMS way: a patch in
	// patches/ and a PATCH[] line (strlcpy is gone since 6.8).
	patched := t.TempDir()
	for _, p := range []struct{ name, patch string }{
		{"v4l2loopback", "v4l2loopback-0.12.7-strscpy.patch"}, {"nat-rtsp", "nat-rtsp-0.7+5.3-strscpy.patch"},
	} {
		src := testenv.DKMSSource(t, p.name)
		dst := filepath.Join(patched, filepath.Base(src))
		addDKMSPatch(t, src, dst, buildtest.Testdata("dkms", p.patch))
		srcs = append(srcs, corpusSource{p.name + "-patched", dst})
	}
	trees := []struct {
		name   string
		kernel func(t *testing.T) *kbuild.Kernel
	}{
		{"test-kernel", func(t *testing.T) *kbuild.Kernel { return buildtest.TestKernel(t) }},
		{"wsl-config", func(t *testing.T) *kbuild.Kernel { return buildtest.PreparedKernel(t, buildtest.WSLConfig()) }},
	}
	for _, tree := range trees {
		t.Run(tree.name, func(t *testing.T) {
			k := tree.kernel(t)
			ours, oursTime := buildCorpus(t, k, srcs)
			theirs, theirsTime := dkmsCorpusBuild(t, dkmsBin, k, srcs)
			t.Logf("%s (%s): our build %.0fs (2 jobs, shared jobserver), dkms build %.0fs (-j%d, one package at a time)",
				tree.name, k.Meta.Vermagic, oursTime.Seconds(), theirsTime.Seconds(), nproc())
			compareCorpus(t, k, srcs, ours, theirs)
		})
	}
}

// corpusSource is a package of the corpus: its list name and sources.
type corpusSource struct{ name, dir string }

// addDKMSPatch copies the package at src to dst and adds patch to it as a
// package author would: in patches/, with a PATCH[] line in dkms.conf.
func addDKMSPatch(t *testing.T, src, dst, patch string) {
	if err := atomicfile.CopyTree(context.Background(), src, dst, atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(patch)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WriteFiles(t, dst, map[string]string{"patches/" + filepath.Base(patch): string(b)})
	f, err := os.OpenFile(filepath.Join(dst, "dkms.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "\nPATCH[0]=%q\n", filepath.Base(patch)); err != nil {
		t.Fatal(err)
	}
}

// corpusResult is one package's outcome: "ok", "excluded" or "failed".
type corpusResult struct {
	pkg, outcome, detail string
	// modules maps a .ko file name to its modinfo fields.
	modules map[string]string
}

func buildCorpus(t *testing.T, k *kbuild.Kernel, srcs []corpusSource) (map[string]*corpusResult, time.Duration) {
	dir := t.TempDir()
	var yml strings.Builder
	yml.WriteString("# Debian's DKMS packages, where Debian installs them\nmodules:\n")
	for _, s := range srcs {
		fmt.Fprintf(&yml, "  - name: %s\n    path: %s\n", s.name, s.dir)
	}
	l := buildtest.ModuleList(t, dir, yml.String())
	mdir := filepath.Join(dir, "lib", "modules", k.Meta.Release)
	start := time.Now()
	res, err := modbuild.BuildModules(context.Background(), modbuild.ModulesOptions{Kernel: k, List: l,
		WorkDir: filepath.Join(dir, "work"), ModulesDir: mdir, LogDir: filepath.Join(dir, "logs"), Jobs: nproc(),
		Progress: progress.New(testenv.LogWriter(t))})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*corpusResult{}
	for _, r := range res {
		c := &corpusResult{pkg: r.Name, detail: r.Error, modules: map[string]string{}}
		switch r.Status {
		case manifest.StatusOK:
			c.outcome = "ok"
			for _, f := range r.Files {
				c.modules[filepath.Base(f)] = modinfo(t, filepath.Join(mdir, f))
			}
		case manifest.StatusSkipped:
			c.outcome = "excluded"
		default:
			c.outcome = "failed"
		}
		out[r.Name] = c
	}
	return out, elapsed
}

func dkmsCorpusBuild(t *testing.T, dkmsBin string, k *kbuild.Kernel, srcs []corpusSource) (map[string]*corpusResult, time.Duration) {
	root := t.TempDir()
	out := map[string]*corpusResult{}
	var elapsed time.Duration
	for _, s := range srcs {
		// A tree per package: the patched copies have the names of the
		// originals.
		tree, source := filepath.Join(root, s.name, "tree"), filepath.Join(root, s.name, "source")
		for _, d := range []string{tree, source} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		name := dkmsPackageName(t, s.dir)
		version := strings.TrimPrefix(filepath.Base(s.dir), name+"-")
		if cp, err := exec.Command("cp", "-a", s.dir, source+"/").CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, cp)
		}
		cmd := exec.Command(dkmsBin, "build", "-m", name, "-v", version, "-k", k.Meta.Release, "-a", "x86_64",
			"--kernelsourcedir", k.DevelDir(), "--dkmstree", tree, "--sourcetree", source)
		cmd.Dir = root
		start := time.Now()
		b, err := cmd.CombinedOutput()
		elapsed += time.Since(start)
		c := &corpusResult{pkg: s.name, outcome: "ok", detail: string(b), modules: map[string]string{}}
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee) && ee.ExitCode() == 77:
			c.outcome = "excluded"
		case err != nil:
			c.outcome = "failed"
			c.detail = fmt.Sprintf("exit %v: %s", err, b)
		default:
			mods, _ := filepath.Glob(filepath.Join(tree, name, version, k.Meta.Release, "x86_64", "module", "*.ko"))
			for _, m := range mods {
				c.modules[filepath.Base(m)] = modinfo(t, m)
			}
		}
		out[s.name] = c
	}
	return out, elapsed
}

// dkmsPackageName reads PACKAGE_NAME as DKMS would (the dkms.conf of
// ipt-netflow needs bash and its own directory).
func dkmsPackageName(t *testing.T, dir string) string {
	b, err := exec.Command("bash", "-c", `cd "$1" && . ./dkms.conf >/dev/null 2>&1; printf %s "$PACKAGE_NAME"`, "x", dir).Output()
	if err != nil || len(b) == 0 {
		t.Fatalf("%s: PACKAGE_NAME: %v", dir, err)
	}
	return string(b)
}

// modinfo returns kmod's modinfo fields of a module but its file name,
// sorted.
func modinfo(t *testing.T, path string) string {
	b, err := exec.Command(testenv.Tool(t, "modinfo"), path).Output()
	if err != nil {
		t.Fatalf("modinfo %s: %v", path, err)
	}
	var keep []string
	signed, inSig := false, false
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		key, _, _ := strings.Cut(l, ":")
		switch {
		case inSig && (l == "" || l[0] == ' ' || l[0] == '\t'):
			continue // the signature's and key's hex lines
		case sigField[key]:
			// The signature is ours (build mode signs with the build's
			// key, dkms build here with none): compared as a fact.
			signed, inSig = true, true
			continue
		}
		inSig = false
		if key != "filename" {
			keep = append(keep, strings.Join(strings.Fields(l), " "))
		}
	}
	if signed {
		keep = append(keep, "(signed)")
	}
	sort.Strings(keep)
	return strings.Join(keep, "\n")
}

// sigField are modinfo's fields of an appended module signature.
var sigField = map[string]bool{"sig_id": true, "signer": true, "sig_key": true, "sig_hashalgo": true, "signature": true}

// dkmsFailure maps DKMS's failure messages to ours.
var dkmsFailure = []struct{ dkms, ours string }{
	{"Bad return status for module build on kernel", "dkms: Bad return status for module build on kernel"},
	{"Build of ", "dkms: Build of "},
	{"Application of patch", "dkms: Application of patch"},
}

func compareCorpus(t *testing.T, k *kbuild.Kernel, srcs []corpusSource, ours, theirs map[string]*corpusResult) {
	var table strings.Builder
	counts := map[string]int{}
	for _, s := range srcs {
		p := s.name
		o, d := ours[p], theirs[p]
		counts[o.outcome]++
		fmt.Fprintf(&table, "  %-21s ours %-8s dkms %-8s %d module(s)\n", p, o.outcome, d.outcome, len(o.modules))
		if o.outcome != d.outcome {
			t.Errorf("%s: ours %s (%s), dkms build %s:\n%s", p, o.outcome, o.detail, d.outcome, d.detail)
			continue
		}
		switch o.outcome {
		case "excluded":
			if !strings.Contains(o.detail, "includes a BUILD_EXCLUSIVE directive which does not match this kernel/arch/config") ||
				!strings.Contains(d.detail, "includes a BUILD_EXCLUSIVE directive which does not match this kernel/arch/config") {
				t.Errorf("%s: exclusion messages:\nours: %s\ndkms: %s", p, o.detail, d.detail)
			}
		case "failed":
			matched := false
			for _, f := range dkmsFailure {
				if strings.Contains(d.detail, f.dkms) {
					matched = true
					if !strings.Contains(o.detail, f.ours) {
						t.Errorf("%s: dkms says %q, ours: %s", p, f.dkms, o.detail)
					}
				}
			}
			if !matched {
				t.Errorf("%s: unexpected dkms failure: %s", p, d.detail)
			}
		case "ok":
			if strings.Join(sortedKeys(o.modules), " ") != strings.Join(sortedKeys(d.modules), " ") {
				t.Errorf("%s: modules: ours %v, dkms %v", p, sortedKeys(o.modules), sortedKeys(d.modules))
				continue
			}
			for ko, info := range o.modules {
				// Ours are signed exactly when the kernel signs its own
				// ("(signed)" sorts before every field line).
				info, signed := strings.CutPrefix(info, "(signed)\n")
				if signed != (k.Meta.Signing == "signed") {
					t.Errorf("%s: %s: signed %v, kernel signing %q", p, ko, signed, k.Meta.Signing)
				}
				if info != d.modules[ko] {
					t.Errorf("%s: %s: modinfo differs\nours:\n%s\ndkms:\n%s", p, ko, info, d.modules[ko])
				}
				if !strings.Contains(info, "vermagic: "+strings.TrimSpace(k.Meta.Vermagic)) {
					t.Errorf("%s: %s: vermagic is not the kernel's %q:\n%s", p, ko, k.Meta.Vermagic, info)
				}
			}
		}
	}
	t.Logf("%d ok, %d excluded, %d failed:\n%s", counts["ok"], counts["excluded"], counts["failed"], table.String())
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func nproc() int {
	b, err := exec.Command("nproc").Output()
	n := 0
	if err == nil {
		fmt.Sscan(string(b), &n)
	}
	return max(n, 1)
}
