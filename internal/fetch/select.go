package fetch

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/kver"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Track values other than a series or a tag.
const (
	TrackLatest = "latest"
	TrackAllNew = "all-new"
	// TrackWSL is the kernel of the newest stable WSL release (by
	// version), TrackWSLPrerelease that of the newest release,
	// pre-releases included. TrackWSLPrefix + a version (wsl-2.6.1) is the
	// kernel of that WSL release.
	TrackWSL           = "wsl"
	TrackWSLPrerelease = "wsl-prerelease"
	TrackWSLPrefix     = "wsl-"
)

// DefaultMaxTags bounds the tags one all-new run builds.
const DefaultMaxTags = 3

// Selected is a tag chosen for building, with the reason.
type Selected struct {
	Tag    Tag
	Reason string
	// WSL are the WSL releases, among those seen (SelectOptions.WSL or
	// the ones a wsl track listed), that ship exactly this kernel, newest
	// first; empty when none does or no WSL releases were given. The
	// pipeline builds over Microsoft's kernel (stock mode) when one does.
	WSL []WSLRelease
}

// SelectOptions configure Select.
type SelectOptions struct {
	// Repo is the kernel repository (default DefaultRepo).
	Repo string
	// Track is latest (default), a series such as 6.6 or 6.18, an exact
	// tag (linux-msft-wsl-6.6.87.2 or 6.6.87.2), all-new, or a wsl track:
	// wsl (the kernel of the newest stable WSL release), wsl-prerelease
	// (of the newest release, pre-releases included) or wsl-<version>
	// (wsl-2.6.1), see SelectWSL.
	Track string
	// MaxTags bounds an all-new selection (default DefaultMaxTags).
	MaxTags int
	// Released is the newest kernel tag already released for the arch
	// ("" if none); all-new builds the tags after it. The caller reads it
	// from the target repository's releases (release.List), so that one
	// listing serves the selection and the up-to-date check.
	Released string
	// Paginated lists tags through the paginated tags endpoint instead of
	// one matching-refs request.
	Paginated bool
	// WSL is the WSL release mapping (WSLReleases), newest first. Every
	// track uses it to fill Selected.WSL; the wsl tracks choose from it.
	// When it is nil and the track is a wsl track, Select calls
	// WSLReleases(WSLOptions) itself (set WSLOptions.CacheFile so that a
	// run with nothing new costs one conditional request); for the other
	// tracks a nil WSL makes no request and leaves Selected.WSL empty.
	WSL []WSLRelease
	// WSLOptions configure the listing Select makes for a wsl track
	// without WSL (its Log defaults to Log).
	WSLOptions WSLOptions
	// Log receives debug lines (ignored tags, the newest release found).
	Log *progress.Reporter
}

// Selection is the result of Select.
type Selection struct {
	// Selected are the tags to build, oldest first.
	Selected []Selected
	// Tags are all kernel tags found, oldest first.
	Tags []Tag
	// Released is SelectOptions.Released (all-new only).
	Released string
	// Summary explains the outcome in one line, e.g. "nothing new".
	Summary string
	// WSL is the WSL release mapping used (SelectOptions.WSL, or the one
	// listed for a wsl track), so the caller can reuse it.
	WSL []WSLRelease
	// Warnings are problems that did not stop the selection, e.g. a newer
	// WSL release skipped because its kernel is unknown.
	Warnings []string
}

var (
	seriesRE     = regexp.MustCompile(`^[0-9]+\.[0-9]+$`)
	exactTagRE   = regexp.MustCompile(`^(linux-msft-wsl-)?[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$`)
	wslVersionRE = regexp.MustCompile(`^wsl-[0-9]+(\.[0-9]+){1,3}$`)
)

// CheckTrack validates a track value without any request.
func CheckTrack(track string) error {
	switch {
	case track == "", track == TrackLatest, track == TrackAllNew, seriesRE.MatchString(track), exactTagRE.MatchString(track),
		IsWSLTrack(track):
		return nil
	}
	return fmt.Errorf("track %q: want latest, all-new, a series such as 6.6, a tag such as linux-msft-wsl-6.6.87.2, "+
		"wsl, wsl-prerelease or a WSL version such as wsl-2.6.1", track)
}

// IsWSLTrack reports whether track chooses the kernel of a WSL release
// (wsl, wsl-prerelease, wsl-<version>): such a track needs the WSL
// releases, not the kernel repository's tags.
func IsWSLTrack(track string) bool {
	return track == TrackWSL || track == TrackWSLPrerelease || wslVersionRE.MatchString(track)
}

// Select chooses the kernels to build. The wsl tracks choose from the WSL
// releases (SelectOptions.WSL, or listed by WSLReleases) and list no
// kernel tags; the other tracks list the kernel tags (one matching-refs
// request) and mark the WSL releases that ship each chosen kernel.
func Select(ctx context.Context, c *githubapi.Client, o SelectOptions) (*Selection, error) {
	if o.Repo == "" {
		o.Repo = DefaultRepo
	}
	if err := CheckTrack(o.Track); err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	if IsWSLTrack(o.Track) {
		return selectWSLTrack(ctx, c, o)
	}
	sel := &Selection{WSL: o.WSL}
	var released *kver.Version
	if o.Track == TrackAllNew && o.Released != "" {
		v, ok := kver.Parse(o.Released)
		if !ok {
			return nil, fmt.Errorf("fetch: released kernel tag %q: want %s<a>.<b>.<c>.<d>", o.Released, kver.TagPrefix)
		}
		released, sel.Released = &v, o.Released
		o.Log.Printf("debug: newest kernel released: %s", o.Released)
	}
	var err error
	if o.Paginated {
		sel.Tags, err = ListTags(ctx, c, o.Repo, o.Log)
	} else {
		sel.Tags, err = ListTagRefs(ctx, c, o.Repo, o.Log)
	}
	if err != nil {
		return nil, err
	}
	sel.Selected, sel.Summary, err = SelectFrom(sel.Tags, o.Track, released, o.MaxTags)
	if err != nil {
		return nil, fmt.Errorf("fetch: %s: %w", o.Repo, err)
	}
	if o.WSL != nil {
		for i := range sel.Selected {
			markShipped(&sel.Selected[i], o.WSL)
		}
	}
	return sel, nil
}

// SelectFrom chooses tags from a version-sorted list. released is the
// newest version already released (for all-new; nil if none). With
// all-new and nothing released yet, only the latest tag is chosen: a new
// target repository starts from the newest kernel instead of building
// years of history.
func SelectFrom(tags []Tag, track string, released *kver.Version, maxTags int) ([]Selected, string, error) {
	if maxTags <= 0 {
		maxTags = DefaultMaxTags
	}
	if len(tags) == 0 {
		return nil, "", errors.New("no linux-msft-wsl-<a>.<b>.<c>.<d> tags found")
	}
	newest := tags[len(tags)-1]
	switch {
	case track == "" || track == TrackLatest:
		return []Selected{{Tag: newest, Reason: "latest: the newest tag of all series"}}, "latest is " + newest.Name, nil

	case track == TrackAllNew:
		if released == nil {
			return []Selected{{Tag: newest, Reason: "all-new: nothing released yet, starting from the newest tag"}},
				"no release yet; building the newest tag", nil
		}
		var out []Selected
		for _, t := range tags {
			if t.Version.Compare(*released) > 0 {
				out = append(out, Selected{Tag: t, Reason: "all-new: newer than the newest release (" + released.Tag() + ")"})
			}
		}
		if len(out) == 0 {
			return nil, "nothing new: " + released.Tag() + " is the newest tag and is released", nil
		}
		summary := fmt.Sprintf("%d new tag(s) after %s", len(out), released.Tag())
		if len(out) > maxTags {
			summary += fmt.Sprintf("; building the oldest %d now (max-tags), the rest in later runs", maxTags)
			out = out[:maxTags]
		}
		return out, summary, nil

	case seriesRE.MatchString(track):
		var pick *Tag
		for i := range tags {
			if tags[i].Version.Series() == track {
				pick = &tags[i]
			}
		}
		if pick == nil {
			return nil, "", fmt.Errorf("no tag in series %s (series found: %s)", track, strings.Join(seriesList(tags), ", "))
		}
		return []Selected{{Tag: *pick, Reason: "series " + track + ": its newest tag"}}, "newest in " + track + " is " + pick.Name, nil

	default:
		name := track
		if !strings.HasPrefix(name, kver.TagPrefix) {
			name = kver.TagPrefix + name
		}
		for _, t := range tags {
			if t.Name == name {
				return []Selected{{Tag: t, Reason: "exact tag requested"}}, name, nil
			}
		}
		hint := ""
		if v, ok := kver.Parse(name); ok {
			for _, t := range tags {
				if t.Version.Series() == v.Series() {
					hint = "; newest in series " + v.Series() + " is " + t.Name
				}
			}
		}
		return nil, "", fmt.Errorf("tag %s not found%s", name, hint)
	}
}

func seriesList(tags []Tag) []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range tags {
		if s := t.Version.Series(); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
