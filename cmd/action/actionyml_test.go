package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// actionYML is the part of action.yml this test checks.
type actionYML struct {
	Inputs  map[string]struct{ Default string } `yaml:"inputs"`
	Outputs map[string]struct{ Value string }   `yaml:"outputs"`
	Runs    struct {
		Using string `yaml:"using"`
		Steps []struct {
			ID   string            `yaml:"id"`
			Uses string            `yaml:"uses"`
			Run  string            `yaml:"run"`
			Env  map[string]string `yaml:"env"`
		} `yaml:"steps"`
	} `yaml:"runs"`
}

// actionModeSource returns the Go source of action mode.
func actionModeSource(t *testing.T) string {
	t.Helper()
	files, err := filepath.Glob("../../internal/actionmode/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("action mode sources: %v", err)
	}
	var b strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(src)
	}
	return b.String()
}

// TestActionYMLMatchesActionMode checks action.yml against action mode:
// every input is read by action mode and passed (as INPUT_*, composite
// actions get none by themselves) by at least one step that runs the
// binary; every declared output is one action mode sets, taken from steps
// that exist. (scripts/lint-actions.sh checks the expressions and the
// token's steps in depth.)
func TestActionYMLMatchesActionMode(t *testing.T) {
	b, err := os.ReadFile("../../action.yml")
	if err != nil {
		t.Fatal(err)
	}
	var a actionYML
	if err := yaml.Unmarshal(b, &a); err != nil {
		t.Fatalf("action.yml: %v", err)
	}
	if a.Runs.Using != "composite" {
		t.Fatalf("runs.using = %q, want composite", a.Runs.Using)
	}
	code := actionModeSource(t)
	passed := map[string]bool{}
	steps := map[string]bool{}
	for _, s := range a.Runs.Steps {
		steps[s.ID] = true
		for k := range s.Env {
			if name, ok := strings.CutPrefix(k, "INPUT_"); ok {
				passed[strings.ToLower(name)] = true
			}
		}
	}
	for name := range a.Inputs {
		if !strings.Contains(code, `in("`+name+`"`) && !strings.Contains(code, `"`+name+`", ""`) {
			t.Errorf("input %s is declared in action.yml but action mode never reads it", name)
		}
		if !passed[name] {
			t.Errorf("input %s is passed to no step as INPUT_%s", name, strings.ToUpper(name))
		}
	}
	set := regexp.MustCompile(`SetOutput\("([a-z-]+)"`)
	outs := map[string]bool{}
	for _, m := range set.FindAllStringSubmatch(code, -1) {
		outs[m[1]] = true
	}
	ref := regexp.MustCompile(`steps\.([a-z0-9_-]+)\.outputs\.([a-z0-9_-]+)`)
	for name, o := range a.Outputs {
		if !outs[name] && name != "checksums-path" {
			t.Errorf("output %s is declared in action.yml but action mode never sets it", name)
		}
		refs := ref.FindAllStringSubmatch(o.Value, -1)
		if len(refs) == 0 {
			t.Errorf("output %s has value %q, which reads no step output", name, o.Value)
		}
		for _, m := range refs {
			if !steps[m[1]] {
				t.Errorf("output %s reads step %q, which action.yml does not have", name, m[1])
			}
		}
	}
}
