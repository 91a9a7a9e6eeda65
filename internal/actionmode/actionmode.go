// Package actionmode runs the pipeline as a GitHub Action: it maps the
// INPUT_* variables action.yml passes to pipeline options, masks the token,
// prints stages and module builds as log groups with compiler errors as
// annotations, and writes the step summary and the outputs. cmd/action only
// dispatches to Run.
package actionmode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sethvargo/go-githubactions"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/pipeline"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Env is what action mode reads and writes: the step's standard output
// (where workflow commands go) and its environment.
type Env struct {
	Stdout io.Writer
	Getenv func(string) string
}

// ErrInput is wrapped by errors about the action's inputs.
var ErrInput = errors.New("bad action input")

func inputErr(err error) error { return fmt.Errorf("action: %w: %w", ErrInput, err) }

// Run runs the pipeline as the GitHub Action: it masks the token before
// anything is printed, maps the inputs to pipeline options (Options),
// prints each stage and module build as a log group with compiler errors
// as annotations, and writes the step summary and the outputs, also when
// the run fails. Errors in the inputs wrap ErrInput.
func Run(ctx context.Context, env Env) error {
	getenv := env.Getenv
	// Mask the token before anything is printed.
	pre := githubactions.New(githubactions.WithGetenv(githubactions.GetenvFunc(getenv)), githubactions.WithWriter(env.Stdout))
	token := actionInput(pre, getenv, "token", "")
	if token != "" {
		pre.AddMask(token)
	}
	tok := githubapi.ResolveToken(token, getenv)
	stdout := githubapi.NewRedactor(env.Stdout, tok)
	if f, ok := stdout.(interface{ Flush() error }); ok {
		defer f.Flush()
	}
	a := githubactions.New(githubactions.WithGetenv(githubactions.GetenvFunc(getenv)), githubactions.WithWriter(stdout))

	o, err := Options(a, getenv)
	if err != nil {
		return err
	}
	o.Token = token
	workspace := getenv("GITHUB_WORKSPACE")
	o.Progress = progress.New(stdout)
	o.Out = stdout
	g := &groups{a: a, out: stdout, workspace: workspace}
	o.Hooks = pipeline.Hooks{Stage: g.stage, Module: g.module}

	res, err := pipeline.Run(ctx, o)
	g.close()
	writeActionResults(a, o, res, err, g.timings)
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
