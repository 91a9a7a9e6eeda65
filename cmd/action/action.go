package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sethvargo/go-githubactions"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/pipeline"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

func init() {
	register(&command{
		Name:    "action",
		Summary: "GitHub Action mode: read INPUT_*, run the pipeline, write outputs and the step summary (default with GITHUB_ACTIONS=true and no arguments)",
		Usage:   "action   (configured by INPUT_* and GITHUB_* variables, as action.yml passes them)",
		Examples: []string{
			"action   # e.g. INPUT_MODULES=.github/wsl-modules.yml INPUT_TRACK=latest INPUT_PUBLISH=false GITHUB_ACTIONS=true",
		},
		Run: runAction,
	})
}

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

func runAction(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 {
		return usagef("action: takes no arguments (it reads INPUT_* variables)")
	}
	getenv := env.Getenv
	// Mask the token before anything is printed.
	pre := githubactions.New(githubactions.WithGetenv(githubactions.GetenvFunc(getenv)), githubactions.WithWriter(env.Stdout))
	token := actionInput(pre, getenv, "token", "")
	if token != "" {
		pre.AddMask(token)
	}
	tok := githubapi.ResolveToken(token, getenv)
	stdout := githubapi.NewRedactor(env.Stdout, tok)
	a := githubactions.New(githubactions.WithGetenv(githubactions.GetenvFunc(getenv)), githubactions.WithWriter(stdout))
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
		KernelRepo:    in("kernel-repo", ""),
		KernelSource:  in("kernel-source", ""),
		Track:         in("track", "latest"),
		Arch:          in("arch", ""),
		ConfigFile:    abs(in("config", "")),
		Layout:        in("layout", "flat"),
		Headers:       in("headers", pipeline.HeadersDevel),
		ReleasePrefix: in("release-prefix", ""),
		TargetRepo:    getenv("GITHUB_REPOSITORY"),
		Target:        getenv("GITHUB_SHA"),
		Token:         token,
		Getenv:        getenv,
		CacheDir:      abs(in("cache-dir", filepath.Join(runnerTemp, "wsl-modules-cache"))),
		WorkDir:       abs(in("work-dir", filepath.Join(runnerTemp, "wsl-modules"))),
		Stage:         in("stage", pipeline.StageAll),
		Shard:         in("shard", ""),
		Tool:          "wsl-modules-action",
	}
	var err error
	if o.KeepGoing, err = parseBool("keep-going", in("keep-going", "false")); err != nil {
		return usagef("action: %v", err)
	}
	if o.Publish, err = parseBool("publish", in("publish", "true")); err != nil {
		return usagef("action: %v", err)
	}
	if o.MaxTags, err = strconv.Atoi(in("max-tags", "3")); err != nil || o.MaxTags < 1 {
		return usagef("action: input max-tags: %q is not a positive number", in("max-tags", "3"))
	}
	if o.Jobs, err = strconv.Atoi(in("jobs", "0")); err != nil || o.Jobs < 0 {
		return usagef("action: input jobs: %q is not a number (0 = all CPUs)", in("jobs", "0"))
	}
	if e := getenv("SOURCE_DATE_EPOCH"); e != "" {
		if o.SourceDateEpoch, err = strconv.ParseInt(e, 10, 64); err != nil {
			return usagef("action: SOURCE_DATE_EPOCH %q is not a number", e)
		}
	}
	o.Progress = progress.New(stdout)
	o.Out = stdout
	g := &groups{a: a, out: stdout, workspace: workspace}
	o.Hooks = pipeline.Hooks{Stage: g.stage, Module: g.module}

	res, err := pipeline.Run(ctx, o)
	g.close()
	writeActionResults(a, o, res, err)
	if err != nil {
		msg := err.Error()
		if tok != "" {
			msg = strings.ReplaceAll(msg, tok, "***")
		}
		a.Errorf("%s", msg)
		return errors.New(msg)
	}
	return nil
}

// groups prints the pipeline's stages and module builds as log groups.
// GitHub does not nest groups, so a module's group closes the stage's.
type groups struct {
	a         *githubactions.Action
	out       io.Writer
	workspace string
	open      bool
	// annotations counts the compiler error annotations written.
	annotations int
}

func (g *groups) close() {
	if g.open {
		g.a.EndGroup()
		g.open = false
	}
}

func (g *groups) stage(kernel, stage string) func(error) {
	g.close()
	g.a.Group(kernel + ": " + stage)
	g.open = true
	return func(err error) {
		if err != nil {
			fmt.Fprintf(g.out, "%s: %s failed: %v\n", kernel, stage, err)
		}
		g.close()
	}
}

func (g *groups) module(r pipeline.ModuleReport) {
	g.close()
	g.a.Group(fmt.Sprintf("module %s: %s (%s, %.1fs)", r.Name, r.Status, progress.Bytes(r.Bytes), r.Seconds))
	if f, err := os.Open(r.LogPath); err == nil {
		n, _ := io.Copy(g.out, io.LimitReader(f, maxLogInGroup))
		if n == maxLogInGroup {
			fmt.Fprintf(g.out, "\n[log truncated; the whole log is in build-logs.tar.gz: %s]\n", r.LogPath)
		}
		f.Close()
	}
	g.a.EndGroup()
	if r.Status != manifest.StatusFailed {
		return
	}
	var errs []pipeline.CompileError
	if f, err := os.Open(r.LogPath); err == nil {
		errs = pipeline.CompileErrors(f, r.BuildDir, r.SourceDir, maxAnnotationsPerModule)
		f.Close()
	}
	for _, e := range errs {
		if g.annotations >= maxAnnotations {
			break
		}
		g.annotations++
		fields := map[string]string{"file": g.relative(e.File), "line": strconv.Itoa(e.Line), "title": "module " + r.Name}
		if e.Column > 0 {
			fields["col"] = strconv.Itoa(e.Column)
		}
		g.a.WithFieldsMap(fields).Errorf("%s: %s", e.Severity, e.Message)
	}
	if len(errs) == 0 {
		g.a.Errorf("module %s failed on kernel %s: %s", r.Name, r.Kernel, r.Error)
	}
}

// relative makes a path relative to the workspace when it is inside it,
// as annotations need.
func (g *groups) relative(p string) string {
	if g.workspace == "" {
		return p
	}
	if rel, err := filepath.Rel(g.workspace, p); err == nil && !strings.HasPrefix(rel, "..") {
		return filepath.ToSlash(rel)
	}
	return p
}

// writeActionResults sets the outputs and writes the step summary.
func writeActionResults(a *githubactions.Action, o pipeline.Options, res *pipeline.Result, runErr error) {
	if res == nil {
		a.SetOutput("built", "false")
		a.AddStepSummary(fmt.Sprintf("## WSL kernel modules\n\n:x: failed before building: %s\n", summaryText(runErr)))
		return
	}
	// Resolved directories, for action.yml's actions/cache steps.
	a.SetOutput("cache-dir", o.CacheDir)
	a.SetOutput("work-dir", o.WorkDir)
	if p := res.Plan; p != nil {
		a.SetOutput("cache-key", p.CacheKey)
		a.SetOutput("cache-restore-prefix", p.CacheRestorePrefix)
		tags, _ := json.Marshal(append([]string{}, p.Build...))
		a.SetOutput("tags", string(tags))
	}
	if o.Stage == pipeline.StagePlan {
		return
	}
	built := "false"
	if res.Built() {
		built = "true"
	}
	a.SetOutput("built", built)
	written := "false"
	for _, k := range res.Kernels {
		if k.KernelCacheWritten {
			written = "true"
		}
	}
	a.SetOutput("kernel-cache-written", written)
	if k := res.Last(); k != nil {
		a.SetOutput("kernel-tag", k.Tag)
		a.SetOutput("kernel-release", k.Release)
		url := ""
		if k.Publish != nil {
			url = k.Publish.URL
		}
		a.SetOutput("release-url", url)
		a.SetOutput("vhdx-path", k.VHDX)
		a.SetOutput("bzimage-path", k.KernelImage)
	}

	var b strings.Builder
	b.WriteString("## WSL kernel modules\n\n")
	if res.Plan != nil && res.Plan.Summary != "" {
		fmt.Fprintf(&b, "Selection: %s\n\n", res.Plan.Summary)
	}
	if len(res.Kernels) == 0 {
		b.WriteString("Nothing to build.\n")
	}
	for _, k := range res.Kernels {
		fmt.Fprintf(&b, "### %s\n\n", k.Tag)
		switch {
		case k.UpToDate:
			b.WriteString("Up to date: a published release already has this build; nothing was built.\n\n")
			continue
		case k.Release != "":
			fmt.Fprintf(&b, "- Kernel release (`uname -r`): `%s`\n", k.Release)
		}
		if k.Publish != nil {
			if k.Publish.URL != "" {
				fmt.Fprintf(&b, "- Release: [%s](%s) (%s)\n", k.Publish.Tag, k.Publish.URL, k.Publish.Status)
			} else {
				fmt.Fprintf(&b, "- Release: %s (%s)\n", k.Publish.Tag, k.Publish.Status)
			}
		}
		if k.Manifest != nil && k.Manifest.Image != nil {
			fmt.Fprintf(&b, "- `modules.vhdx`: %s, sha256 `%s`\n", progress.Bytes(k.Manifest.Image.Size), k.Manifest.Image.SHA256)
		}
		if len(k.Modules) > 0 {
			b.WriteString("\n| Module | Status | Size | Time |\n|---|---|---:|---:|\n")
			for _, m := range k.Modules {
				status := m.Status
				switch m.Status {
				case manifest.StatusOK:
					status = ":white_check_mark: ok"
				case manifest.StatusFailed:
					status = ":x: failed: " + strings.ReplaceAll(m.Error, "|", "\\|")
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %.1f s |\n", m.Name, status, progress.Bytes(m.Bytes), m.Seconds)
			}
		}
		b.WriteString("\n")
	}
	if runErr != nil {
		fmt.Fprintf(&b, ":x: **Failed:** %s\n", summaryText(runErr))
	}
	a.AddStepSummary(b.String())
}

func summaryText(err error) string {
	if err == nil {
		return ""
	}
	return "\n```\n" + err.Error() + "\n```\n"
}
