package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/release"
)

func init() {
	register(&command{
		Name:    "tags",
		Summary: "list the WSL kernel tags a run would build, and why; --wsl: the kernel each WSL release ships",
		Usage: "tags [--repo owner/name] [--track latest|all-new|6.6|TAG|wsl|wsl-prerelease|wsl-VERSION] [--max-tags N] [--target-repo owner/name] " +
			"[--prefix P] [--arch x86_64|arm64] [--all] [--wsl] [--wsl-repo owner/name] [--wsl-cache FILE]",
		Examples: []string{
			"tags --track 6.6",
			"tags --track all-new --target-repo me/wsl-modules --max-tags 2",
			"tags --wsl",
			"tags --track wsl-prerelease --wsl-cache ~/.cache/wsl-modules-action/wsl-releases.json",
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

// flush writes out what redacting writers hold back (the start of a
// possible token at the end of the output).
func flush(ws ...io.Writer) {
	for _, w := range ws {
		if f, ok := w.(interface{ Flush() error }); ok {
			f.Flush()
		}
	}
}

// redacted returns stdout and stderr writers that hide the token; flush
// them when done.
func redacted(env *cliEnv, token string) (stdout, stderr io.Writer) {
	tok := githubapi.ResolveToken(token, env.Getenv)
	return githubapi.NewRedactor(env.Stdout, tok), githubapi.NewRedactor(env.Stderr, tok)
}

// tagsFlags are the parsed flags of the tags command.
type tagsFlags struct {
	o                               fetch.SelectOptions
	token, targetRepo, prefix, arch string
	all, verbose, wsl               bool
	fs                              *flag.FlagSet
}

func parseTagsFlags(env *cliEnv, args []string) (*tagsFlags, error) {
	c := commands["tags"]
	f := &tagsFlags{fs: newFlagSet(env, c)}
	fs, o := f.fs, &f.o
	fs.StringVar(&o.Repo, "repo", fetch.DefaultRepo, "kernel repository")
	fs.StringVar(&o.Track, "track", fetch.TrackLatest, "latest, all-new, a series (6.6, 6.18), a tag (linux-msft-wsl-6.6.87.2), "+
		"wsl (kernel of the newest stable WSL), wsl-prerelease or wsl-VERSION (wsl-2.6.1)")
	fs.BoolVar(&f.wsl, "wsl", false, "print the WSL releases with the kernel each ships and its MSIs (with --track, then the selection too)")
	fs.StringVar(&o.WSLOptions.Repo, "wsl-repo", fetch.DefaultWSLRepo, "repository of the WSL releases")
	fs.StringVar(&o.WSLOptions.CacheFile, "wsl-cache", "", "file caching the WSL release mapping between runs (ETag; default: none)")
	fs.IntVar(&o.MaxTags, "max-tags", fetch.DefaultMaxTags, "most tags one all-new run builds")
	fs.StringVar(&f.targetRepo, "target-repo", "", "repository whose releases say what was built (default $GITHUB_REPOSITORY)")
	fs.StringVar(&f.prefix, "prefix", release.DefaultPrefix, "release tag prefix")
	fs.StringVar(&f.arch, "arch", "x86_64", "architecture of the builds (x86_64 or arm64)")
	fs.BoolVar(&o.Paginated, "paginated", false, "list tags through the paginated tags endpoint (with commit ids) instead of one matching-refs request")
	fs.BoolVar(&f.all, "all", false, "also list every tag found")
	fs.BoolVar(&f.verbose, "v", false, "show debug lines (ignored tags, retries)")
	fs.StringVar(&f.token, "token", "", "GitHub token (default $GITHUB_TOKEN or $INPUT_TOKEN)")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return nil, err
	}
	switch {
	case len(pos) > 0:
		return nil, usagef("tags: unexpected argument %q (see 'tags --help')", pos[0])
	case o.MaxTags < 1:
		return nil, usagef("tags: --max-tags must be at least 1")
	}
	if err := fetch.CheckTrack(o.Track); err != nil {
		return nil, usagef("tags: %v", err)
	}
	if f.targetRepo == "" {
		f.targetRepo = env.Getenv("GITHUB_REPOSITORY")
	}
	if o.Track == fetch.TrackAllNew && f.targetRepo == "" {
		return nil, usagef("tags: --track all-new needs --target-repo (or GITHUB_REPOSITORY)")
	}
	return f, nil
}

func runTags(ctx context.Context, env *cliEnv, args []string) error {
	f, err := parseTagsFlags(env, args)
	if err != nil {
		return err
	}
	o := &f.o
	stdout, stderr := redacted(env, f.token)
	defer flush(stdout, stderr)
	var log *progress.Reporter
	if f.verbose {
		log = progress.New(stderr)
	}
	cl, err := githubClient(env, f.token, log)
	if err != nil {
		return err
	}
	o.Log, o.WSLOptions.Log = log, log
	if f.wsl {
		if o.WSL, err = fetch.WSLReleases(ctx, cl, o.WSLOptions); err != nil {
			return err
		}
		printWSLTable(stdout, o.WSLOptions.Repo, o.WSL)
		if !flagGiven(f.fs, "track") {
			return nil
		}
		fmt.Fprintln(stdout)
	}
	var releasedTag string
	if o.Track == fetch.TrackAllNew {
		x, err := release.List(ctx, cl, f.targetRepo, f.prefix)
		if err != nil {
			return err
		}
		if o.Released, releasedTag, err = x.NewestKernel(ctx, f.arch); err != nil {
			return err
		}
	}
	sel, err := fetch.Select(ctx, cl, *o)
	if err != nil {
		return err
	}
	if log == nil { // with -v, Select has logged them
		for _, w := range sel.Warnings {
			fmt.Fprintf(stderr, "warning: %s\n", w)
		}
	}
	printSelection(stdout, f, sel, releasedTag)
	return nil
}

// printSelection writes the outcome of Select.
func printSelection(stdout io.Writer, f *tagsFlags, sel *fetch.Selection, releasedTag string) {
	if n := len(sel.Tags); n > 0 {
		fmt.Fprintf(stdout, "%s: %d tags, %s … %s\n", f.o.Repo, n, sel.Tags[0].Name, sel.Tags[n-1].Name)
	}
	if f.o.Track == fetch.TrackAllNew {
		if releasedTag == "" {
			releasedTag = "none"
		}
		fmt.Fprintf(stdout, "newest release in %s: %s\n", f.targetRepo, releasedTag)
	}
	fmt.Fprintf(stdout, "track %s: %s\n", f.o.Track, sel.Summary)
	for _, s := range sel.Selected {
		fmt.Fprintf(stdout, "build %-28s %s\n", s.Tag.Name, s.Reason)
	}
	if f.all {
		for _, t := range sel.Tags {
			fmt.Fprintf(stdout, "tag %-28s %s\n", t.Name, t.Commit)
		}
	}
}

// flagGiven reports whether the flag was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// printWSLTable writes the WSL releases, newest first: version, stable or
// pre-release, the kernel tag (or "-" and why it is unknown) and the MSI
// asset names.
func printWSLTable(w io.Writer, repo string, rels []fetch.WSLRelease) {
	stable, newest := "none", "none"
	for _, r := range rels {
		if newest == "none" {
			newest = r.Version
		}
		if !r.Prerelease && stable == "none" {
			stable = r.Version
		}
	}
	fmt.Fprintf(w, "%s: %d releases from %s on (newest %s, newest stable %s)\n", repo, len(rels), fetch.MinWSLVersion, newest, stable)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WSL\tRELEASE\tKERNEL\tMSI\t")
	for _, r := range rels {
		kind := "stable"
		if r.Prerelease {
			kind = "pre-release"
		}
		var msis []string
		for _, arch := range []string{"x86_64", "arm64"} {
			if a, err := r.MSIFor(arch); err == nil {
				msis = append(msis, a.Name)
			}
		}
		kernel, msi := r.KernelTag, strings.Join(msis, " ")
		if kernel == "" {
			kernel = "-"
		}
		if msi == "" {
			msi = "-"
		}
		note := ""
		if r.KernelError != "" {
			note = "kernel unknown: " + r.KernelError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Version, kind, kernel, msi, note)
	}
	tw.Flush()
}
