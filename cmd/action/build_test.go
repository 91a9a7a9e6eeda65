package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/pack"
)

func runBuildCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	env := &cliEnv{Stdout: &o, Stderr: &e, Getenv: func(k string) string {
		if k == "HOME" {
			return os.TempDir()
		}
		return ""
	}}
	code = run(context.Background(), env, append([]string{"build"}, args...))
	return code, o.String(), e.String()
}

func TestBuildCLIUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--kernel-source is required"},
		{[]string{"--kernel-source", "k.tar.xz"}, "--modules is required"},
		{[]string{"--kernel-source", "k.tar.xz", "--modules", "m.yml"}, "--out is required"},
		{[]string{"--kernel-source", "k", "--modules", "m.yml", "--out", "o", "--jobs", "0"}, "--jobs must be at least 1"},
		{[]string{"--kernel-source", "k", "--modules", "m.yml", "--out", "o", "extra"}, `unexpected argument "extra"`},
		{[]string{"--bogus"}, "flag provided but not defined"},
	} {
		code, _, stderr := runBuildCLI(tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("build %v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestBuildCLIBadModuleList(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yml, want string }{
		{"modules:\n  - name: a\n    path: a\n    colour: red\n", `wsl-modules.yml:4:5: unknown field: "colour"`},
		{"modules:\n  - name: [oops\n", "wsl-modules.yml:"},
		{"modules:\n  - name: a\n    url: https://x/a.tgz\n    sha256: nothex\n", `wsl-modules.yml:4:13: modules[0].sha256: want 64 hex digits`},
	} {
		p := filepath.Join(dir, "wsl-modules.yml")
		os.WriteFile(p, []byte(tc.yml), 0o644)
		code, _, stderr := runBuildCLI("--kernel-source", dir, "--modules", p, "--out", filepath.Join(dir, "out"), "--cache", filepath.Join(dir, "cache"))
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 1 and %q", tc.yml, code, stderr, tc.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
			t.Errorf("output created for a bad list")
		}
	}
}

// TestBuildEmitPacks builds the testdata provider and consumer modules
// against the cached test kernel through the CLI and checks the packs it
// emits: one per module, and one combined with --pack-name.
func TestBuildEmitPacks(t *testing.T) {
	k := buildtest.TestKernel(t)
	dir := t.TempDir()
	list := filepath.Join(dir, "wsl-modules.yml")
	for _, m := range []string{"provider", "consumer"} {
		if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules", m), filepath.Join(dir, "src", m), atomicfile.CopyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	yml := "modules:\n  - name: provider\n    path: src/provider\n  - name: consumer\n    path: src/consumer\n"
	if err := os.WriteFile(list, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := buildtest.Options(t)
	for _, combined := range []bool{false, true} {
		out := filepath.Join(dir, fmt.Sprintf("out-%v", combined))
		packs := filepath.Join(dir, fmt.Sprintf("packs-%v", combined))
		args := []string{"--kernel-source", opts.Source, "--config", opts.ConfigFile, "--cache", opts.CacheDir,
			"--modules", list, "--out", out, "--emit-packs", packs}
		if combined {
			args = append(args, "--pack-name", "testpack")
		}
		code, stdout, stderr := runBuildCLI(args...)
		if code != 0 {
			t.Fatalf("build: exit %d\n%s\n%s", code, stdout, stderr)
		}
		files, _ := filepath.Glob(filepath.Join(packs, "*.tar.zst"))
		want := map[string][]string{"consumer": {"wslt_consumer"}, "provider": {"wslt_provider"}}
		if combined {
			want = map[string][]string{"testpack": {"wslt_consumer", "wslt_provider"}}
		}
		if len(files) != len(want) {
			t.Fatalf("packs %v, want %d", files, len(want))
		}
		for _, f := range files {
			pk, err := pack.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range pk.Meta.Modules {
				names = append(names, m.Name)
				if m.Vermagic != k.Meta.Vermagic {
					t.Errorf("%s: vermagic %q, kernel %q", m.File, m.Vermagic, k.Meta.Vermagic)
				}
			}
			sort.Strings(names)
			if pk.Meta.KernelRelease != k.Meta.Release || !slices.Equal(names, want[pk.Meta.Name]) {
				t.Errorf("%s: pack %s release %s modules %v", f, pk.Meta.Name, pk.Meta.KernelRelease, names)
			}
			if !strings.Contains(stdout, "pack: "+f) {
				t.Errorf("stdout does not name %s:\n%s", f, stdout)
			}
		}
	}
}
