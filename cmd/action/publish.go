package main

import (
	"context"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
	"github.com/wsl-modules/wsl-modules-action/internal/runenv"
)

func init() {
	register(&command{
		Name:    "publish",
		Summary: "publish a dist directory as a GitHub release: draft, upload, verify, then publish (idempotent)",
		Usage:   "publish --repo owner/name --dir DIST [--dry-run] [--prefix P] [--logs DIR] [--target COMMITISH]",
		Examples: []string{
			"publish --repo me/wsl-modules --dir work/dist",
			"publish --dir work/dist --dry-run",
		},
		Run: runPublish,
	})
}

func runPublish(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["publish"]
	fs := newFlagSet(env, c)
	var o release.Options
	var token, logs string
	var sources stringList
	fs.StringVar(&o.Repo, "repo", "", "target repository (default $GITHUB_REPOSITORY)")
	fs.StringVar(&o.Dir, "dir", "", "dist directory with build-manifest.json, the kernel image and modules.vhdx")
	fs.BoolVar(&o.DryRun, "dry-run", false, "write SHA256SUMS, wslconfig.txt and release-notes.md and print what would be published, without any API request")
	fs.StringVar(&o.Prefix, "prefix", release.DefaultPrefix, "release tag prefix")
	fs.StringVar(&logs, "logs", "", "directory of build logs to pack as build-logs.tar.gz")
	fs.StringVar(&o.Target, "target", "", "commitish for the release tag (default $GITHUB_SHA, else the default branch)")
	fs.StringVar(&token, "token", "", "GitHub token (default $GITHUB_TOKEN or $INPUT_TOKEN)")
	fs.Var(&sources, "module-source", "NAME=DIR: the source of path: module NAME, attached as module-sources.tar.gz (repeatable)")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("publish: unexpected argument %q (see 'publish --help')", pos[0])
	}
	if o.Dir == "" {
		return usagef("publish: --dir is required (see 'publish --help')")
	}
	if err := release.CheckPrefix(o.Prefix); err != nil {
		return usagef("publish: %v", err)
	}
	if o.Repo == "" {
		o.Repo = env.Getenv("GITHUB_REPOSITORY")
	}
	if o.Repo == "" && !o.DryRun {
		return usagef("publish: --repo is required (or GITHUB_REPOSITORY)")
	}
	if o.Target == "" {
		o.Target = env.Getenv("GITHUB_SHA")
	}
	stdout, stderr := redacted(env, token)
	defer flush(stdout, stderr)
	rep := progress.New(stderr)
	po := release.PrepareOptions{Dir: o.Dir, LogsDir: logs, Prefix: o.Prefix, Repo: o.Repo, ModuleSources: map[string]string{}}
	if tok := githubapi.ResolveToken(token, env.Getenv); tok != "" {
		po.Secrets = []string{tok}
	}
	for _, s := range sources {
		name, dir, ok := strings.Cut(s, "=")
		if !ok || name == "" || dir == "" {
			return usagef("publish: --module-source %q: want NAME=DIR", s)
		}
		po.ModuleSources[name] = dir
	}
	if po.SourceDateEpoch, _, err = runenv.SourceDateEpoch("", env.Getenv); err != nil {
		return usagef("publish: %v", err)
	}
	if _, err := release.PrepareDist(po); err != nil {
		return err
	}
	o.Out, o.Progress = stdout, rep
	if o.DryRun {
		_, err := release.Publish(ctx, nil, o)
		return err
	}
	cl, err := githubClient(env, token, rep)
	if err != nil {
		return err
	}
	_, err = release.Publish(ctx, cl, o)
	return err
}
