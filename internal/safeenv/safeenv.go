// Package safeenv builds environments for child processes (make, git,
// DKMS scripts) without the CI secrets this process holds: the action's
// inputs (INPUT_TOKEN among them), GitHub tokens and the Actions runtime
// tokens. Third-party Makefiles and DKMS scripts run with what remains, so a
// build that prints its environment cannot leak a token into its log, which
// is published in build-logs.tar.gz.
package safeenv

import (
	"os"
	"strings"
)

// Secret reports whether an environment variable name must not reach a
// child process.
func Secret(name string) bool {
	switch name {
	case "GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN",
		"ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL",
		"ACTIONS_RUNTIME_URL", "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL":
		return true
	}
	return strings.HasPrefix(name, "INPUT_") || strings.HasPrefix(name, "GITHUB_PAT")
}

// Environ returns os.Environ() without the secrets, and without the names
// in drop (variables the caller sets itself).
func Environ(drop ...string) []string {
	skip := make(map[string]bool, len(drop))
	for _, d := range drop {
		skip[d] = true
	}
	var out []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		if Secret(k) || skip[k] {
			continue
		}
		out = append(out, e)
	}
	return out
}
