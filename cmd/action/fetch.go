package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/wsl-modules/wsl-modules-action/internal/kver"

	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

func init() {
	register(&command{
		Name:    "fetch",
		Summary: "download and unpack the kernel source of a tag (streamed, atomic); print its pinned source as JSON",
		Usage:   "fetch --tag linux-msft-wsl-X.Y.Z.N --out DIR [--repo owner/name] [--force]",
		Examples: []string{
			"fetch --tag linux-msft-wsl-6.6.87.2 --out work/source",
		},
		Run: runFetch,
	})
}

func runFetch(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["fetch"]
	fs := newFlagSet(env, c)
	var repo, tag, out, token string
	var force bool
	fs.StringVar(&repo, "repo", fetch.DefaultRepo, "kernel repository")
	fs.StringVar(&tag, "tag", "", "kernel tag, e.g. linux-msft-wsl-6.6.87.2")
	fs.StringVar(&out, "out", "", "directory to create with the source tree (written atomically)")
	fs.BoolVar(&force, "force", false, "replace an existing --out directory")
	fs.StringVar(&token, "token", "", "GitHub token (default $GITHUB_TOKEN or $INPUT_TOKEN)")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("fetch: unexpected argument %q (see 'fetch --help')", pos[0])
	}
	if tag == "" || out == "" {
		return usagef("fetch: --tag and --out are required (see 'fetch --help')")
	}
	if _, ok := kver.Parse(tag); !ok {
		return usagef("fetch: --tag %q: want linux-msft-wsl-<a>.<b>.<c>.<d>", tag)
	}
	stdout, stderr := redacted(env, token)
	defer flush(stdout, stderr)
	rep := progress.New(stderr)
	cl, err := githubClient(env, token, rep)
	if err != nil {
		return err
	}
	f := &fetch.Fetcher{Client: cl, Progress: rep, Force: force}
	src, err := f.Kernel(ctx, repo, tag, out)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(src, "", "  ")
	fmt.Fprintf(stdout, "%s\n", b)
	return nil
}
