package depmod

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// kmodFiles are the files kmod 30's depmod writes (all of ours but
// modules.weakdep).
var kmodFiles = []string{
	FileDep, FileDepBin, FileAlias, FileAliasBin, FileSoftdep,
	FileSymbols, FileSymbolsBin, FileBuiltinBin, FileBuiltinAliasBn, FileDevname,
}

// linkFile hard-links src to dst, copying when linking is not possible.
func linkFile(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// debianTree hard-links the Debian module tree into a new base directory
// (the cache is never modified: depmod only adds files by rename).
func debianTree(t testing.TB) (base, rel string) {
	t.Helper()
	root, rel := testenv.DebianModules(t)
	return linkModuleTree(t, filepath.Join(root, "lib", "modules", rel), rel), rel
}

// linkModuleTree hard-links the module directory src into
// base/lib/modules/rel of a new base directory. Only the inputs are
// linked, not any depmod output already present.
func linkModuleTree(t testing.TB, src, rel string) (base string) {
	t.Helper()
	base = t.TempDir()
	dst := filepath.Join(base, "lib", "modules", rel)
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if r == "build" || r == "source" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, r), 0o755)
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), "modules.") && !isInput(d.Name()) {
			return nil
		}
		return linkFile(p, filepath.Join(dst, r))
	})
	if err != nil {
		t.Fatal(err)
	}
	return base
}

func isInput(name string) bool {
	return name == "modules.order" || name == "modules.builtin" || name == "modules.builtin.modinfo"
}

// subsetTree builds a base directory holding only the given modules of the
// Debian tree (paths relative to the module directory), a modules.order
// listing them in the original order, and the builtin files.
func subsetTree(t testing.TB, paths ...string) (base, rel string) {
	t.Helper()
	root, rel := testenv.DebianModules(t)
	src := filepath.Join(root, "lib", "modules", rel)
	base = t.TempDir()
	dst := filepath.Join(base, "lib", "modules", rel)
	want := map[string]bool{}
	for _, p := range paths {
		want[p] = true
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := linkFile(filepath.Join(src, p), filepath.Join(dst, p)); err != nil {
			t.Fatal(err)
		}
	}
	order, err := os.ReadFile(filepath.Join(src, "modules.order"))
	if err != nil {
		t.Fatal(err)
	}
	var sub []string
	for _, l := range modtree.ParseOrder(order) {
		if want[l] {
			sub = append(sub, l+"\n")
		}
	}
	if len(sub) != len(paths) {
		t.Fatalf("modules.order lists %d of the %d modules", len(sub), len(paths))
	}
	testenv.WriteFile(t, filepath.Join(dst, "modules.order"), strings.Join(sub, ""))
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo"} {
		if err := linkFile(filepath.Join(src, f), filepath.Join(dst, f)); err != nil {
			t.Fatal(err)
		}
	}
	return base, rel
}

// cloneTree hard-links every file of base into a new base directory.
func cloneTree(t testing.TB, base string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(base, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, r), 0o755)
		}
		return linkFile(p, filepath.Join(dst, r))
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// emptyConf returns an empty depmod.d / modprobe.d directory, so the host's
// configuration does not apply.
func emptyConf(t testing.TB) string { return t.TempDir() }

// kmod runs kmod's depmod (or another kmod tool) and returns its combined
// output.
func kmod(t testing.TB, tool string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testenv.Tool(t, tool), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// kmodDepmod runs kmod's depmod -b base -C conf [extra] rel and fails on
// error.
func kmodDepmod(t testing.TB, base, rel, conf string, extra ...string) string {
	t.Helper()
	args := append([]string{"-b", base, "-C", conf}, extra...)
	args = append(args, rel)
	out, err := kmod(t, "depmod", args...)
	if err != nil {
		t.Fatalf("kmod depmod %v: %v\n%s", args, err, out)
	}
	return out
}

// modDir returns base/lib/modules/rel.
func modDir(base, rel string) string { return filepath.Join(base, "lib", "modules", rel) }

// runOurs runs Run on base and fails on error.
func runOurs(t testing.TB, base, rel string, o Options) *Report {
	t.Helper()
	o.BaseDir, o.Release = base, rel
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

// compareOutputs requires every file kmod writes to be byte-identical in
// both module directories.
func compareOutputs(t testing.TB, kmodDir, ourDir string) {
	t.Helper()
	for _, f := range kmodFiles {
		want, err := os.ReadFile(filepath.Join(kmodDir, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(ourDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from kmod's (%d vs %d bytes): %s", f, len(got), len(want), firstDiff(got, want))
		}
	}
}

// firstDiff describes where two outputs first differ.
func firstDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	line := bytes.Count(want[:i], []byte("\n")) + 1
	ctx := func(b []byte) string {
		s := max(0, i-40)
		e := min(len(b), i+40)
		return fmt.Sprintf("%q", b[s:e])
	}
	return fmt.Sprintf("first difference at byte %d (line %d): got %s, want %s", i, line, ctx(got), ctx(want))
}

// outputsPresent lists the depmod output files (and temporary files) in
// dir.
func outputsPresent(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if (strings.HasPrefix(n, "modules.") || strings.HasPrefix(n, ".modules.")) && !isInput(n) {
			out = append(out, n)
		}
	}
	return out
}
