package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
