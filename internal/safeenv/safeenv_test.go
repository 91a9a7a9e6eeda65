package safeenv

import (
	"os/exec"
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
