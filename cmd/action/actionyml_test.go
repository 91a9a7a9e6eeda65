package main

import (
	"os"
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

// TestActionYMLMatchesActionMode checks action.yml against action mode:
// composite actions get no INPUT_* variables, so every step that runs the
// binary must pass every input explicitly, every input must be read by
// action.go, and every declared output must be one action mode sets.
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
	src, err := os.ReadFile("action.go")
	if err != nil {
		t.Fatal(err)
	}
	code := string(src)
	binSteps := 0
	for _, s := range a.Runs.Steps {
		if !strings.Contains(s.Run, "wsl-modules-action-bin") || strings.Contains(s.Run, "go build") {
			continue
		}
		binSteps++
		for name := range a.Inputs {
			v, ok := s.Env["INPUT_"+strings.ToUpper(name)]
			if !ok {
				t.Errorf("step %q does not pass input %s as INPUT_%s", s.ID, name, strings.ToUpper(name))
				continue
			}
			if name != "stage" && v != "${{ inputs."+name+" }}" {
				t.Errorf("step %q passes INPUT_%s=%q", s.ID, strings.ToUpper(name), v)
			}
		}
	}
	if binSteps < 2 {
		t.Fatalf("found %d steps running the binary, want the plan and run steps", binSteps)
	}
	for name := range a.Inputs {
		if !strings.Contains(code, `in("`+name+`"`) && !strings.Contains(code, `actionInput(pre, getenv, "`+name+`"`) {
			t.Errorf("input %s is declared in action.yml but action.go never reads it", name)
		}
	}
	set := regexp.MustCompile(`SetOutput\("([a-z-]+)"`)
	outs := map[string]bool{}
	for _, m := range set.FindAllStringSubmatch(code, -1) {
		outs[m[1]] = true
	}
	for name, o := range a.Outputs {
		if !outs[name] {
			t.Errorf("output %s is declared in action.yml but action mode never sets it", name)
		}
		if o.Value != "${{ steps.run.outputs."+name+" }}" && o.Value != "${{ steps.plan.outputs."+name+" }}" {
			t.Errorf("output %s has value %q", name, o.Value)
		}
	}
}
