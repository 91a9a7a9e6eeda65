package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
)

// actionEnv returns an environment as the runner gives action.yml's steps,
// with the inputs passed explicitly (hyphenated names).
func actionEnv(t *testing.T, fake *githubfake.Server, inputs map[string]string) (func(string) string, string, string) {
	dir := t.TempDir()
	out, sum := filepath.Join(dir, "output"), filepath.Join(dir, "summary")
	os.WriteFile(out, nil, 0o644)
	os.WriteFile(sum, nil, 0o644)
	ws := filepath.Join(dir, "ws")
	os.MkdirAll(ws, 0o755)
	os.WriteFile(filepath.Join(ws, "wsl-modules.yml"), []byte("modules: []\n"), 0o644)
	env := map[string]string{
		"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": out, "GITHUB_STEP_SUMMARY": sum,
		"GITHUB_REPOSITORY": "me/wsl-kernel", "GITHUB_WORKSPACE": ws, "RUNNER_TEMP": dir,
		"INPUT_MODULES": "wsl-modules.yml", "INPUT_TOKEN": ghToken,
	}
	for k, v := range inputs {
		env["INPUT_"+strings.ToUpper(k)] = v
	}
	return fake.Getenv(env), out, sum
}

func TestActionModePlan(t *testing.T) {
	fake := githubfake.NewT(t, githubfake.Options{Token: ghToken})
	fake.AddTags("microsoft/WSL2-Linux-Kernel", githubfake.Tag{Name: "linux-msft-wsl-6.6.87.2"}, githubfake.Tag{Name: "linux-msft-wsl-6.6.114.1"})
	fake.AddTags("me/wsl-kernel")
	getenv, outFile, _ := actionEnv(t, fake, map[string]string{"stage": "plan", "track": "all-new", "kernel-repo": "microsoft/WSL2-Linux-Kernel"})
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), &cliEnv{Stdout: &stdout, Stderr: &stderr, Getenv: getenv}, nil)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "::add-mask::"+ghToken+"\n") {
		t.Errorf("the token is not masked first:\n%s", stdout.String())
	}
	if strings.Count(stdout.String()+stderr.String(), ghToken) != 1 {
		t.Errorf("the token appears outside its mask command")
	}
	out := parseOutputs(t, outFile)
	if out["tags"] != `["linux-msft-wsl-6.6.114.1"]` || !strings.HasPrefix(out["cache-key"], "wsl-modules-kernel-v1-x86_64-linux-msft-wsl-6.6.114.1-") ||
		out["cache-restore-prefix"] != "wsl-modules-kernel-v1-x86_64-linux-msft-wsl-6.6.114.1-" || out["cache-dir"] == "" {
		t.Errorf("outputs %v", out)
	}
	// all-new with nothing released: one matching-refs request and one
	// releases page for the selection, one releases page for the
	// up-to-date check.
	if n := fake.CountRequests(githubfake.HostAPI); n > 3 {
		t.Errorf("%d API requests", n)
	}
}

func TestActionModeBadInputs(t *testing.T) {
	fake := githubfake.NewT(t, githubfake.Options{Token: ghToken})
	for input, want := range map[string]string{
		"keep-going": `input keep-going: "maybe" is not a boolean`,
		"publish":    `input publish: "maybe" is not a boolean`,
		"max-tags":   `input max-tags: "maybe" is not a positive number`,
		"jobs":       `input jobs: "maybe" is not a number`,
	} {
		getenv, _, _ := actionEnv(t, fake, map[string]string{input: "maybe"})
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), &cliEnv{Stdout: &stdout, Stderr: &stderr, Getenv: getenv}, nil)
		if code != 2 || !strings.Contains(stderr.String(), want) {
			t.Errorf("%s=maybe: exit %d, stderr %q, want %q", input, code, stderr.String(), want)
		}
	}
	// A broken module list fails with its file and line, as an error
	// annotation, and the step summary says so.
	getenv, _, sum := actionEnv(t, fake, map[string]string{"modules": "bad.yml"})
	os.WriteFile(filepath.Join(getenv("GITHUB_WORKSPACE"), "bad.yml"), []byte("modules:\n  - name: x\n    path: /abs\n"), 0o644)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), &cliEnv{Stdout: &stdout, Stderr: &stderr, Getenv: getenv}, nil)
	if code != 1 || !strings.Contains(stdout.String(), "::error::") || !strings.Contains(stdout.String(), "bad.yml:3:") {
		t.Errorf("bad list: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if b, _ := os.ReadFile(sum); !strings.Contains(string(b), "bad.yml:3:") {
		t.Errorf("summary:\n%s", b)
	}
}
