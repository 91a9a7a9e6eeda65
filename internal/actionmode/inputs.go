package actionmode

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sethvargo/go-githubactions"
	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/pipeline"
	"github.com/wsl-modules/wsl-modules-action/internal/runenv"
)

// Annotation caps: compiler errors per module and in total.
const (
	maxAnnotationsPerModule = 10
	maxAnnotations          = 50
	// maxLogInGroup bounds the module log printed in its log group.
	maxLogInGroup = 4 << 20
)

// actionInput reads an input as the runner passes it (INPUT_KERNEL-REPO)
// or with underscores (INPUT_KERNEL_REPO), trimmed, with a default.
func actionInput(a *githubactions.Action, getenv func(string) string, name, def string) string {
	v := a.GetInput(name)
	if v == "" {
		v = strings.TrimSpace(getenv("INPUT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))))
	}
	if v == "" {
		return def
	}
	return v
}

func parseBool(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "yes", "1", "on":
		return true, nil
	case "false", "no", "0", "off", "":
		return false, nil
	}
	return false, fmt.Errorf("input %s: %q is not a boolean (true or false)", name, v)
}

// Options maps the action's inputs (read through a, as the runner passes
// them) and the runner's variables to pipeline options. Relative paths are
// taken from GITHUB_WORKSPACE; the token, the output streams and the hooks
// are left to the caller.
func Options(a *githubactions.Action, getenv func(string) string) (pipeline.Options, error) {
	in := func(name, def string) string { return actionInput(a, getenv, name, def) }
	workspace := getenv("GITHUB_WORKSPACE")
	runnerTemp := getenv("RUNNER_TEMP")
	if runnerTemp == "" {
		runnerTemp = os.TempDir()
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) || workspace == "" {
			return p
		}
		return filepath.Join(workspace, p)
	}
	o := pipeline.Options{
		ModulesFile:   abs(in("modules", ".github/wsl-modules.yml")),
		ModulesRoot:   workspace,
		ActionMode:    true,
		KernelRepo:    in("kernel-repo", ""),
		KernelSource:  in("kernel-source", ""),
		Track:         in("track", fetch.TrackWSL),
		KernelMode:    in("kernel-mode", ""),
		Arch:          in("arch", ""),
		ConfigFile:    abs(in("config", "")),
		Layout:        in("layout", "flat"),
		Headers:       in("headers", pipeline.HeadersDevel),
		ReleasePrefix: in("release-prefix", ""),
		TargetRepo:    getenv("GITHUB_REPOSITORY"),
		Target:        getenv("GITHUB_SHA"),
		Getenv:        getenv,
		CacheDir:      abs(in("cache-dir", "")),
		WorkDir:       abs(in("work-dir", filepath.Join(runnerTemp, "wsl-modules"))),
		Stage:         in("stage", pipeline.StageAll),
		Shard:         in("shard", ""),
		Tool:          "wsl-modules-action",
	}
	var err error
	if o.CacheDir == "" {
		if o.CacheDir, err = runenv.DefaultCacheDir(func(k string) string {
			if k == "RUNNER_TEMP" {
				return runnerTemp
			}
			if k == "GITHUB_ACTIONS" {
				return "true"
			}
			return getenv(k)
		}); err != nil {
			return o, inputErr(err)
		}
	}
	if o.KeepGoing, err = parseBool("keep-going", in("keep-going", "false")); err != nil {
		return o, inputErr(err)
	}
	if o.Publish, err = parseBool("publish", in("publish", "true")); err != nil {
		return o, inputErr(err)
	}
	if o.MaxTags, err = strconv.Atoi(in("max-tags", "3")); err != nil || o.MaxTags < 1 {
		return o, inputErr(fmt.Errorf("input max-tags: %q is not a positive number", in("max-tags", "3")))
	}
	if o.Jobs, err = strconv.Atoi(in("jobs", "0")); err != nil || o.Jobs < 0 {
		return o, inputErr(fmt.Errorf("input jobs: %q is not a number (0 = all CPUs)", in("jobs", "0")))
	}
	if o.SourceDateEpoch, _, err = runenv.SourceDateEpoch("", getenv); err != nil {
		return o, inputErr(err)
	}
	return o, nil
}
