package main

import (
	"context"
	"fmt"
	"io"

	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
)

func init() {
	register(&command{
		Name:    "tags",
		Summary: "list the WSL kernel tags a run would build, and why",
		Usage:   "tags [--repo owner/name] [--track latest|all-new|6.6|TAG] [--max-tags N] [--target-repo owner/name] [--prefix P] [--arch x86_64|arm64] [--all]",
		Examples: []string{
			"tags --track 6.6",
			"tags --track all-new --target-repo me/wsl-modules --max-tags 2",
		},
		Run: runTags,
	})
}

// githubClient builds the API client for a subcommand: environment from
// env, token from the flag or GITHUB_TOKEN / INPUT_TOKEN, retries and
// rate-limit waits reported on log.
func githubClient(env *cliEnv, token string, log *progress.Reporter) (*githubapi.Client, error) {
	return githubapi.New(githubapi.Options{Token: token, Getenv: env.Getenv, Log: log})
}

// redacted returns stdout and stderr writers that hide the token.
func redacted(env *cliEnv, token string) (stdout, stderr io.Writer) {
	tok := githubapi.ResolveToken(token, env.Getenv)
	return githubapi.NewRedactor(env.Stdout, tok), githubapi.NewRedactor(env.Stderr, tok)
}

func runTags(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["tags"]
	fs := newFlagSet(env, c)
	var o fetch.SelectOptions
	var token, targetRepo, prefix, arch string
	var all, verbose bool
	fs.StringVar(&o.Repo, "repo", fetch.DefaultRepo, "kernel repository")
	fs.StringVar(&o.Track, "track", fetch.TrackLatest, "latest, all-new, a series (6.6, 6.18) or a tag (linux-msft-wsl-6.6.87.2)")
	fs.IntVar(&o.MaxTags, "max-tags", fetch.DefaultMaxTags, "most tags one all-new run builds")
	fs.StringVar(&targetRepo, "target-repo", "", "repository whose releases say what was built (default $GITHUB_REPOSITORY)")
	fs.StringVar(&prefix, "prefix", release.DefaultPrefix, "release tag prefix")
	fs.StringVar(&arch, "arch", "x86_64", "architecture of the builds (x86_64 or arm64)")
	fs.BoolVar(&o.Paginated, "paginated", false, "list tags through the paginated tags endpoint (with commit ids) instead of one matching-refs request")
	fs.BoolVar(&all, "all", false, "also list every tag found")
	fs.BoolVar(&verbose, "v", false, "show debug lines (ignored tags, retries)")
	fs.StringVar(&token, "token", "", "GitHub token (default $GITHUB_TOKEN or $INPUT_TOKEN)")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("tags: unexpected argument %q (see 'tags --help')", pos[0])
	}
	if err := fetch.CheckTrack(o.Track); err != nil {
		return usagef("tags: %v", err)
	}
	if o.MaxTags < 1 {
		return usagef("tags: --max-tags must be at least 1")
	}
	if targetRepo == "" {
		targetRepo = env.Getenv("GITHUB_REPOSITORY")
	}
	if o.Track == fetch.TrackAllNew && targetRepo == "" {
		return usagef("tags: --track all-new needs --target-repo (or GITHUB_REPOSITORY)")
	}
	stdout, stderr := redacted(env, token)
	var log *progress.Reporter
	if verbose {
		log = progress.New(stderr)
	}
	cl, err := githubClient(env, token, log)
	if err != nil {
		return err
	}
	o.Log = log
	var releasedTag string
	if o.Track == fetch.TrackAllNew {
		x, err := release.List(ctx, cl, targetRepo, prefix)
		if err != nil {
			return err
		}
		if o.Released, releasedTag, err = x.NewestKernel(ctx, arch); err != nil {
			return err
		}
	}
	sel, err := fetch.Select(ctx, cl, o)
	if err != nil {
		return err
	}
	if n := len(sel.Tags); n > 0 {
		fmt.Fprintf(stdout, "%s: %d tags, %s … %s\n", o.Repo, n, sel.Tags[0].Name, sel.Tags[n-1].Name)
	}
	if o.Track == fetch.TrackAllNew {
		if releasedTag == "" {
			releasedTag = "none"
		}
		fmt.Fprintf(stdout, "newest release in %s: %s\n", targetRepo, releasedTag)
	}
	fmt.Fprintf(stdout, "track %s: %s\n", o.Track, sel.Summary)
	for _, s := range sel.Selected {
		fmt.Fprintf(stdout, "build %-28s %s\n", s.Tag.Name, s.Reason)
	}
	if all {
		for _, t := range sel.Tags {
			fmt.Fprintf(stdout, "tag %-28s %s\n", t.Name, t.Commit)
		}
	}
	return nil
}
