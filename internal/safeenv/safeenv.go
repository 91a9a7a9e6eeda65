// Package safeenv keeps the CI secrets this process holds away from its
// child processes (make, git, DKMS scripts): Environ builds their
// environment without the action's inputs (INPUT_TOKEN among them), GitHub
// tokens, the Actions runtime and OIDC tokens, and the runner's file
// commands (GITHUB_ENV, GITHUB_OUTPUT, GITHUB_PATH, GITHUB_STATE,
// GITHUB_STEP_SUMMARY), through which a child could set variables, PATH
// entries or outputs for the steps after this one; and Protect makes this
// process's own memory and environment unreadable to them (Linux:
// not dumpable). Third-party Makefiles and DKMS scripts run with what
// remains, so a build that prints its environment cannot leak a token into
// its log, which is published in build-logs.tar.gz.
package safeenv

import (
	"os"
	"strings"
)

// Secret reports whether an environment variable name must not reach a
// child process: a secret, or a runner file command.
func Secret(name string) bool {
	switch name {
	case "GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN",
		"ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL",
		"ACTIONS_RUNTIME_URL", "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL":
		return true
	}
	return strings.HasPrefix(name, "INPUT_") || strings.HasPrefix(name, "GITHUB_PAT") || FileCommand(name)
}

// FileCommand reports whether name is one of the runner's file-command
// variables: the paths of files the runner reads after the step to set
// environment variables, PATH entries, outputs, state and the summary of
// the later steps.
func FileCommand(name string) bool {
	switch name {
	case "GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_STATE", "GITHUB_STEP_SUMMARY":
		return true
	}
	return false
}

// Environ returns os.Environ() without the secrets and file commands, and
// without the names in drop (variables the caller sets itself).
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

// Git low-speed limits: a git transfer slower than GitLowSpeedLimit bytes
// per second for GitLowSpeedTime seconds is aborted, so a stalled
// connection fails instead of hanging until the job's timeout.
const (
	GitLowSpeedLimit = "1000"
	GitLowSpeedTime  = "60"
)

// GitEnviron is Environ for git: no terminal prompt, no system config,
// and the low-speed abort (GIT_HTTP_LOW_SPEED_LIMIT and _TIME, which take
// precedence over http.lowSpeedLimit and http.lowSpeedTime in any config)
// unless the environment already sets it.
func GitEnviron(drop ...string) []string {
	env := append(Environ(append(drop, "GIT_TERMINAL_PROMPT", "GIT_CONFIG_NOSYSTEM")...),
		"GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
	if os.Getenv("GIT_HTTP_LOW_SPEED_LIMIT") == "" {
		env = append(env, "GIT_HTTP_LOW_SPEED_LIMIT="+GitLowSpeedLimit)
	}
	if os.Getenv("GIT_HTTP_LOW_SPEED_TIME") == "" {
		env = append(env, "GIT_HTTP_LOW_SPEED_TIME="+GitLowSpeedTime)
	}
	return env
}
