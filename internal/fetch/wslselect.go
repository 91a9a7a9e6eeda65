package fetch

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/kver"
)

// selectWSLTrack serves the wsl tracks: the mapping from o.WSL or, when
// nil, from WSLReleases; no kernel tags are listed.
func selectWSLTrack(ctx context.Context, c *githubapi.Client, o SelectOptions) (*Selection, error) {
	rels := o.WSL
	if rels == nil {
		wo := o.WSLOptions
		if wo.Log == nil {
			wo.Log = o.Log
		}
		var err error
		if rels, err = WSLReleases(ctx, c, wo); err != nil {
			return nil, err
		}
	}
	s, summary, warnings, err := SelectWSL(rels, o.Track)
	if err != nil {
		return nil, fmt.Errorf("fetch: track %s: %w", o.Track, err)
	}
	for _, w := range warnings {
		o.Log.Printf("warning: %s", w)
	}
	return &Selection{Selected: []Selected{s}, Summary: summary, WSL: rels, Warnings: warnings}, nil
}

// SelectWSL chooses the kernel for a wsl track from WSL releases (any
// order; newest means highest version):
//
//   - wsl: the newest stable release whose kernel is known;
//   - wsl-prerelease: the newest release, pre-releases included, whose
//     kernel is known;
//   - wsl-<version>: that release (2.6.1 and 2.6.1.0 are the same); an
//     error if it is not among rels or its kernel is unknown.
//
// For wsl and wsl-prerelease, newer candidates whose kernel is unknown
// (KernelError) are skipped and named in the warnings and the Reason; it
// is an error when no candidate has a known kernel. Selected.WSL lists
// every release in rels that ships the chosen kernel.
func SelectWSL(rels []WSLRelease, track string) (s Selected, summary string, warnings []string, err error) {
	sorted := append([]WSLRelease(nil), rels...)
	sortWSL(sorted)
	var pick *WSLRelease
	var why string
	switch {
	case track == TrackWSL || track == TrackWSLPrerelease:
		pick, warnings, err = newestWithKernel(sorted, track == TrackWSLPrerelease)
		if err != nil {
			return Selected{}, "", warnings, err
		}
		why = "the newest stable WSL release"
		if track == TrackWSLPrerelease {
			why = "the newest WSL release, pre-releases included"
		}
	case wslVersionRE.MatchString(track):
		if pick, err = wslVersion(sorted, strings.TrimPrefix(track, TrackWSLPrefix)); err != nil {
			return Selected{}, "", nil, err
		}
		why = "the release requested"
	default:
		return Selected{}, "", nil, fmt.Errorf("track %q is not a wsl track", track)
	}
	v, _ := kver.Parse(pick.KernelTag)
	s = Selected{Tag: Tag{Name: pick.KernelTag, Version: v}, WSL: ShippedBy(sorted, pick.KernelTag)}
	s.Reason = fmt.Sprintf("%s: the kernel of WSL %s, %s (%s %s, published %s)", track, describeWSL(*pick), why,
		WSLKernelPackageID, pick.KernelPackage, pick.Published.UTC().Format("2006-01-02"))
	if len(warnings) > 0 {
		s.Reason += "; skipped: " + strings.Join(warnings, "; ")
	}
	s.Reason += "; shipped by " + wslList(s.WSL)
	return s, fmt.Sprintf("WSL %s ships %s", describeWSL(*pick), pick.KernelTag), warnings, nil
}

// newestWithKernel returns the first (newest) candidate with a known
// kernel; the candidates skipped before it are returned as warnings.
func newestWithKernel(sorted []WSLRelease, prereleases bool) (*WSLRelease, []string, error) {
	var skipped []string
	n := 0
	for i := range sorted {
		r := &sorted[i]
		if r.Prerelease && !prereleases {
			continue
		}
		n++
		if r.KernelTag == "" {
			skipped = append(skipped, fmt.Sprintf("WSL %s: %s", r.Version, orUnknown(r.KernelError)))
			continue
		}
		return r, skipped, nil
	}
	kind := "stable WSL releases"
	if prereleases {
		kind = "WSL releases"
	}
	if n == 0 {
		return nil, nil, fmt.Errorf("no %s found (%d releases seen)", kind, len(sorted))
	}
	return nil, skipped, fmt.Errorf("none of the %d %s seen has a known kernel: %s", n, kind, strings.Join(skipped, "; "))
}

// wslVersion finds one release by version.
func wslVersion(sorted []WSLRelease, version string) (*WSLRelease, error) {
	for i := range sorted {
		r := &sorted[i]
		if CompareWSLVersions(r.Version, version) != 0 {
			continue
		}
		if r.KernelTag == "" {
			return nil, fmt.Errorf("WSL %s: %s", r.Version, orUnknown(r.KernelError))
		}
		return r, nil
	}
	if len(sorted) == 0 {
		return nil, errors.New("no WSL releases seen")
	}
	return nil, fmt.Errorf("WSL %s not found among the %d WSL releases seen (%s … %s; releases before %s are not considered, they cannot load kernelModules)",
		version, len(sorted), sorted[len(sorted)-1].Version, sorted[0].Version, MinWSLVersion)
}

func orUnknown(s string) string {
	if s == "" {
		return "kernel unknown"
	}
	return s
}

// describeWSL is the version, marked when it is a pre-release.
func describeWSL(r WSLRelease) string {
	if r.Prerelease {
		return r.Version + " (pre-release)"
	}
	return r.Version
}

// wslList names releases for a Reason ("WSL 2.9.4 (pre-release), 2.9.3").
func wslList(rels []WSLRelease) string {
	var names []string
	for _, r := range rels {
		names = append(names, describeWSL(r))
	}
	return "WSL " + strings.Join(names, ", ")
}

// markShipped fills s.WSL from rels and says so in the Reason.
func markShipped(s *Selected, rels []WSLRelease) {
	s.WSL = ShippedBy(rels, s.Tag.Name)
	if len(s.WSL) == 0 {
		s.Reason += "; no WSL release seen ships it"
		return
	}
	s.Reason += "; shipped by " + wslList(s.WSL)
}
