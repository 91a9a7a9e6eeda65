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
)

// DefaultMaxTags bounds the tags one all-new run builds.
const DefaultMaxTags = 3

// Selected is a tag chosen for building, with the reason.
type Selected struct {
	Tag    Tag
	Reason string
}

// SelectOptions configure Select.
type SelectOptions struct {
	// Repo is the kernel repository (default DefaultRepo).
	Repo string
	// Track is latest (default), a series such as 6.6 or 6.18, an exact
	// tag (linux-msft-wsl-6.6.87.2 or 6.6.87.2), or all-new.
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
}

var (
	seriesRE   = regexp.MustCompile(`^[0-9]+\.[0-9]+$`)
	exactTagRE = regexp.MustCompile(`^(linux-msft-wsl-)?[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$`)
)

// CheckTrack validates a track value without any request.
func CheckTrack(track string) error {
	switch {
	case track == "", track == TrackLatest, track == TrackAllNew, seriesRE.MatchString(track), exactTagRE.MatchString(track):
		return nil
	}
	return fmt.Errorf("track %q: want latest, all-new, a series such as 6.6, or a tag such as linux-msft-wsl-6.6.87.2", track)
}

// Select lists the kernel tags (one matching-refs request) and chooses
// the ones to build.
func Select(ctx context.Context, c *githubapi.Client, o SelectOptions) (*Selection, error) {
	if o.Repo == "" {
		o.Repo = DefaultRepo
	}
	if err := CheckTrack(o.Track); err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	sel := &Selection{}
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
		return []Selected{{newest, "latest: the newest tag of all series"}}, "latest is " + newest.Name, nil

	case track == TrackAllNew:
		if released == nil {
			return []Selected{{newest, "all-new: nothing released yet, starting from the newest tag"}},
				"no release yet; building the newest tag", nil
		}
		var out []Selected
		for _, t := range tags {
			if t.Version.Compare(*released) > 0 {
				out = append(out, Selected{t, "all-new: newer than the newest release (" + released.Tag() + ")"})
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
		return []Selected{{*pick, "series " + track + ": its newest tag"}}, "newest in " + track + " is " + pick.Name, nil

	default:
		name := track
		if !strings.HasPrefix(name, kver.TagPrefix) {
			name = kver.TagPrefix + name
		}
		for _, t := range tags {
			if t.Name == name {
				return []Selected{{t, "exact tag requested"}}, name, nil
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
