package safeenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestChildSeesNoSecrets runs a real child process with Environ and checks
// with env(1) that no secret and no dropped variable reaches it, while
// ordinary variables do.
func TestChildSeesNoSecrets(t *testing.T) {
	secret := "ghs_SECRETsecretSECRET0123456789"
	t.Setenv("INPUT_TOKEN", secret)
	t.Setenv("INPUT_KERNEL-REPO", "me/kernel")
	t.Setenv("GITHUB_TOKEN", secret)
	t.Setenv("ACTIONS_RUNTIME_TOKEN", secret)
	t.Setenv("ARCH", "arm64")
	t.Setenv("WSLMOD_KEEP", "yes")
	cmd := exec.Command("env")
	cmd.Env = Environ("ARCH")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.Contains(s, secret) || strings.Contains(s, "INPUT_") || strings.Contains(s, "ARCH=arm64") {
		t.Fatalf("child environment leaks:\n%s", s)
	}
	if !strings.Contains(s, "WSLMOD_KEEP=yes") || !strings.Contains(s, "PATH=") {
		t.Fatalf("child environment lost ordinary variables:\n%s", s)
	}
}

// TestChildGetsNoFileCommands checks that a child cannot reach the
// runner's file commands: with GITHUB_ENV or GITHUB_PATH it could set
// variables or PATH entries for the steps after this one, with
// GITHUB_OUTPUT the action's outputs.
func TestChildGetsNoFileCommands(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_STATE", "GITHUB_STEP_SUMMARY"} {
		t.Setenv(name, filepath.Join(dir, strings.ToLower(name)))
	}
	t.Setenv("GITHUB_WORKSPACE", dir)
	script := `for v in GITHUB_ENV GITHUB_OUTPUT GITHUB_PATH GITHUB_STATE GITHUB_STEP_SUMMARY; do
		eval f=\${$v:-}; [ -n "$f" ] && echo "$v=$f" && echo "EVIL=1" >> "$f"
	done; echo "workspace=$GITHUB_WORKSPACE"`
	for name, env := range map[string][]string{"Environ": Environ(), "GitEnviron": GitEnviron()} {
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		if string(out) != "workspace="+dir+"\n" {
			t.Errorf("%s: child saw file commands:\n%s", name, out)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a child wrote file commands: %v", ents)
	}
}

// TestGitEnvironLowSpeed checks git's stall abort: set by default, and
// an explicit setting wins.
func TestGitEnvironLowSpeed(t *testing.T) {
	t.Setenv("GIT_HTTP_LOW_SPEED_LIMIT", "")
	os.Unsetenv("GIT_HTTP_LOW_SPEED_LIMIT")
	t.Setenv("GIT_HTTP_LOW_SPEED_TIME", "7")
	t.Setenv("INPUT_TOKEN", "ghs_x")
	got := map[string]string{}
	for _, e := range GitEnviron() {
		k, v, _ := strings.Cut(e, "=")
		got[k] = v
	}
	if got["GIT_HTTP_LOW_SPEED_LIMIT"] != GitLowSpeedLimit || got["GIT_HTTP_LOW_SPEED_TIME"] != "7" ||
		got["GIT_TERMINAL_PROMPT"] != "0" || got["INPUT_TOKEN"] != "" {
		t.Fatalf("GitEnviron: %v", got)
	}
}
