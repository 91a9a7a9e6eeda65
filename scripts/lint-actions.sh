#!/usr/bin/env bash
# Lints the GitHub Actions files:
#
#  1. actionlint (run from the Go module proxy, pinned) on
#     .github/workflows/*.yml, with shellcheck on their run: scripts when
#     shellcheck is installed;
#  2. a check of action.yml (actionlint does not read action metadata):
#     input and output names; every ${{ }} expression refers to something
#     that exists (inputs.*, steps.<id>.outputs.* of an earlier step or of
#     the outputs action mode sets, env.* of the step, github.*, runner.*,
#     known functions); every INPUT_* a step sets names a declared input;
#     the token (inputs.token, INPUT_TOKEN) only in steps that run no build
#     stage; and the shell of each run: step parses (bash -n, shellcheck
#     when installed);
#  3. the workflows' hardening: actions/checkout with
#     persist-credentials: false, and permissions: on every job.
#
# Usage: bash scripts/lint-actions.sh   (from anywhere; exits non-zero on
# any finding). Needs Go; the first run downloads actionlint.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

ACTIONLINT_VERSION=v1.7.12

echo "actionlint $ACTIONLINT_VERSION: .github/workflows/*.yml"
go run "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" -no-color .github/workflows/*.yml

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/main.go" <<'GO'
// Command lint-actions checks action.yml and the workflows' hardening (see
// scripts/lint-actions.sh).
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
)

// step is one step of the composite action.
type step struct {
	ID   string            `yaml:"id"`
	Name string            `yaml:"name"`
	If   string            `yaml:"if"`
	Uses string            `yaml:"uses"`
	Run  string            `yaml:"run"`
	Env  map[string]string `yaml:"env"`
	With map[string]string `yaml:"with"`
	Dir  string            `yaml:"working-directory"`
}

// action is the part of action.yml checked.
type action struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Inputs      map[string]struct {
		Description string  `yaml:"description"`
		Default     *string `yaml:"default"`
	} `yaml:"inputs"`
	Outputs map[string]struct {
		Description string `yaml:"description"`
		Value       string `yaml:"value"`
	} `yaml:"outputs"`
	Runs struct {
		Using string `yaml:"using"`
		Steps []step `yaml:"steps"`
	} `yaml:"runs"`
}

var (
	findings []string
	nameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)
	exprRE   = regexp.MustCompile(`\$\{\{(.*?)\}\}`)
	strRE    = regexp.MustCompile(`'(?:[^']|'')*'`)
	refRE    = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_*-]+)*`)
	setOutRE = regexp.MustCompile(`SetOutput\("([a-z0-9-]+)"`)
	echoRE   = regexp.MustCompile(`(?m)(?:echo|printf)\s+"?([a-z][a-z0-9-]*)(?:=|<<)`)
	// functions and literals that may appear in expressions.
	words = map[string]bool{"always": true, "cancelled": true, "success": true, "failure": true, "contains": true,
		"startsWith": true, "endsWith": true, "format": true, "join": true, "toJSON": true, "fromJSON": true,
		"hashFiles": true, "true": true, "false": true, "null": true}
	// known outputs of the actions action.yml uses.
	usesOutputs = map[string][]string{"actions/cache/restore": {"cache-hit", "cache-primary-key", "cache-matched-key"},
		"actions/setup-go": {"go-version", "cache-hit"}}
	githubCtx = map[string]bool{"action_path": true, "token": true, "workspace": true, "repository": true, "sha": true,
		"ref": true, "event_name": true, "run_id": true, "run_attempt": true, "server_url": true, "api_url": true, "action_ref": true}
	runnerCtx = map[string]bool{"temp": true, "os": true, "arch": true, "tool_cache": true, "name": true}
)

func finding(format string, a ...any) { findings = append(findings, fmt.Sprintf(format, a...)) }

func main() {
	checkAction("action.yml")
	files, _ := filepath.Glob(".github/workflows/*.yml")
	for _, f := range files {
		checkWorkflow(f)
	}
	for _, f := range findings {
		fmt.Println(f)
	}
	if len(findings) > 0 {
		fmt.Printf("%d findings\n", len(findings))
		os.Exit(1)
	}
	fmt.Printf("action.yml and %d workflows: ok\n", len(files))
}

// checkAction checks the metadata, the expressions, the inputs passed and
// the token's reach in the action file p.
func checkAction(p string) {
	b, err := os.ReadFile(p)
	if err != nil {
		finding("%s: %v", p, err)
		return
	}
	var a action
	if err := yaml.Unmarshal(b, &a); err != nil {
		finding("%s: %v", p, err)
		return
	}
	if a.Name == "" || a.Description == "" || a.Runs.Using != "composite" {
		finding("%s: want name, description and runs.using: composite", p)
	}
	for n, in := range a.Inputs {
		if !nameRE.MatchString(n) || in.Description == "" {
			finding("%s: input %q: bad name or no description", p, n)
		}
	}
	actionOutputs := actionModeOutputs()
	known := map[string]map[string]bool{} // step id -> outputs it can set
	for i, s := range a.Runs.Steps {
		where := fmt.Sprintf("%s: step %d (%s)", p, i+1, firstNonEmpty(s.ID, s.Name, s.Uses))
		for _, e := range exprsOf(s) {
			checkExpr(where, e, a, known, s.Env)
		}
		checkInputEnv(where, s, a)
		checkToken(where, s)
		checkShell(where, s)
		if s.ID != "" {
			if known[s.ID] != nil {
				finding("%s: duplicate step id %s", where, s.ID)
			}
			known[s.ID] = stepOutputs(s, actionOutputs)
		}
	}
	used := strings.Join(exprsOfAll(a), "\n")
	for n := range a.Inputs {
		if !strings.Contains(used, "inputs."+n) {
			finding("%s: input %s is declared but no step uses it", p, n)
		}
	}
	for n, o := range a.Outputs {
		if !nameRE.MatchString(n) || o.Description == "" || !exprRE.MatchString(o.Value) {
			finding("%s: output %q: bad name, no description or no ${{ }} value", p, n)
		}
		for _, e := range exprRE.FindAllStringSubmatch(o.Value, -1) {
			checkExpr(p+": output "+n, e[1], a, known, nil)
		}
	}
}

// exprsOf returns the expressions of a step: its if: (an expression even
// without ${{ }}) and every ${{ }} in its fields.
func exprsOf(s step) []string {
	var out []string
	if s.If != "" {
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s.If), "${{"), "}}"))
	}
	fields := []string{s.Run, s.Uses, s.Dir}
	for _, m := range []map[string]string{s.Env, s.With} {
		for _, v := range m {
			fields = append(fields, v)
		}
	}
	for _, f := range fields {
		for _, m := range exprRE.FindAllStringSubmatch(f, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

func exprsOfAll(a action) []string {
	var out []string
	for _, s := range a.Runs.Steps {
		out = append(out, exprsOf(s)...)
	}
	return out
}

// checkExpr checks that every context reference in the expression e
// exists: declared inputs, outputs of earlier steps, the step's env.
func checkExpr(where, e string, a action, known map[string]map[string]bool, env map[string]string) {
	e = strRE.ReplaceAllString(e, "''")
	for _, ref := range refRE.FindAllString(e, -1) {
		parts := strings.Split(ref, ".")
		switch parts[0] {
		case "inputs":
			if _, ok := a.Inputs[at(parts, 1)]; !ok {
				finding("%s: %s: no such input", where, ref)
			}
		case "steps":
			outs, ok := known[at(parts, 1)]
			switch {
			case !ok:
				finding("%s: %s: no earlier step with id %s", where, ref, at(parts, 1))
			case at(parts, 2) == "outcome" || at(parts, 2) == "conclusion":
			case at(parts, 2) != "outputs" || outs != nil && !outs[at(parts, 3)]:
				finding("%s: %s: step %s sets no such output", where, ref, at(parts, 1))
			}
		case "github":
			if !githubCtx[at(parts, 1)] {
				finding("%s: %s: unknown github context property", where, ref)
			}
		case "runner":
			if !runnerCtx[at(parts, 1)] {
				finding("%s: %s: unknown runner context property", where, ref)
			}
		case "env":
			if _, ok := env[at(parts, 1)]; !ok {
				finding("%s: %s: not in the step's env", where, ref)
			}
		default:
			if !words[parts[0]] {
				finding("%s: %s: unknown context or function in a composite action", where, ref)
			}
		}
	}
}

func at(parts []string, i int) string {
	if i < len(parts) {
		return parts[i]
	}
	return ""
}

// stepOutputs returns the outputs a step can set: for one running the
// binary, those action mode sets; for a run: step, the names it echoes
// to $GITHUB_OUTPUT; for a uses: step, its known outputs (nil: unknown).
func stepOutputs(s step, actionMode map[string]bool) map[string]bool {
	if s.Uses != "" {
		name, _, _ := strings.Cut(s.Uses, "@")
		outs, ok := usesOutputs[name]
		if !ok {
			return nil
		}
		m := map[string]bool{}
		for _, o := range outs {
			m[o] = true
		}
		return m
	}
	m := map[string]bool{}
	if strings.Contains(s.Run, "wsl-modules-action-bin") {
		for o := range actionMode {
			m[o] = true
		}
	}
	for _, x := range echoRE.FindAllStringSubmatch(s.Run, -1) {
		m[x[1]] = true
	}
	return m
}

// actionModeOutputs returns the outputs internal/actionmode sets.
func actionModeOutputs() map[string]bool {
	m := map[string]bool{}
	files, _ := filepath.Glob("internal/actionmode/*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, _ := os.ReadFile(f)
		for _, x := range setOutRE.FindAllStringSubmatch(string(b), -1) {
			m[x[1]] = true
		}
	}
	if len(m) == 0 {
		finding("internal/actionmode: no SetOutput calls found")
	}
	return m
}

// checkInputEnv checks that every INPUT_* variable a step sets names a
// declared input (or kernel-source, which the build steps set per kernel)
// and, when it is an expression, that of the same input.
func checkInputEnv(where string, s step, a action) {
	for k, v := range s.Env {
		name, ok := strings.CutPrefix(k, "INPUT_")
		if !ok {
			continue
		}
		in := strings.ToLower(name)
		if _, ok := a.Inputs[in]; !ok {
			finding("%s: %s names no input", where, k)
			continue
		}
		if strings.Contains(v, "${{") && v != "${{ inputs."+in+" }}" {
			finding("%s: %s=%q, want ${{ inputs.%s }}", where, k, v, in)
		}
	}
}

// checkToken: the token only in steps that run no build stage of the
// binary (INPUT_STAGE unset, or literally plan, fetch or package): build code
// must not find it in its ancestors' environment.
func checkToken(where string, s step) {
	has := s.Env["INPUT_TOKEN"] != ""
	for _, v := range s.Env {
		has = has || strings.Contains(v, "inputs.token")
	}
	stage, set := s.Env["INPUT_STAGE"]
	if has && set && stage != "plan" && stage != "fetch" && stage != "package" {
		finding("%s: has the token but runs stage %q (build code)", where, stage)
	}
}

// checkShell parses a run: script with bash -n, and with shellcheck when
// it is installed (expressions replaced by a placeholder).
func checkShell(where string, s step) {
	if s.Run == "" {
		return
	}
	script := exprRE.ReplaceAllString(s.Run, "EXPR")
	f, err := os.CreateTemp("", "step-*.sh")
	if err != nil {
		finding("%s: %v", where, err)
		return
	}
	defer os.Remove(f.Name())
	f.WriteString("#!/bin/bash\nset -eo pipefail\n" + script + "\n")
	f.Close()
	if out, err := exec.Command("bash", "-n", f.Name()).CombinedOutput(); err != nil {
		finding("%s: bash -n: %s", where, out)
	}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(sc, "-s", "bash", f.Name()).CombinedOutput(); err != nil {
			finding("%s: shellcheck:\n%s", where, out)
		}
	}
}

// checkWorkflow checks that every job declares permissions and every
// actions/checkout step sets persist-credentials: false.
func checkWorkflow(p string) {
	b, err := os.ReadFile(p)
	if err != nil {
		finding("%s: %v", p, err)
		return
	}
	var w struct {
		Jobs map[string]struct {
			Permissions any `yaml:"permissions"`
			Steps       []struct {
				Uses string         `yaml:"uses"`
				With map[string]any `yaml:"with"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(b, &w); err != nil {
		finding("%s: %v", p, err)
		return
	}
	names := make([]string, 0, len(w.Jobs))
	for n := range w.Jobs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		j := w.Jobs[n]
		if j.Permissions == nil {
			finding("%s: job %s: no permissions: (least privilege per job)", p, n)
		}
		for i, s := range j.Steps {
			if strings.HasPrefix(s.Uses, "actions/checkout@") && fmt.Sprint(s.With["persist-credentials"]) != "false" {
				finding("%s: job %s step %d: actions/checkout without persist-credentials: false", p, n, i+1)
			}
		}
	}
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}
GO
echo "action.yml and workflow hardening"
go run "$tmp/main.go"
