package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/wsl-modules/wsl-modules-action/internal/actionmode"
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

func runAction(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 {
		return usagef("action: takes no arguments (it reads INPUT_* variables)")
	}
	err := actionmode.Run(ctx, actionmode.Env{Stdout: env.Stdout, Getenv: env.Getenv})
	if errors.Is(err, actionmode.ErrInput) {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	return err
}
