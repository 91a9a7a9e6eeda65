package release

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kver"
)

// DefaultPrefix is the default prefix of release tags.
const DefaultPrefix = "wsl-modules-"

// TagName returns the release tag for a kernel tag and arch:
// linux-msft-wsl-6.6.87.2 becomes wsl-modules-6.6.87.2 (prefix
// DefaultPrefix when empty), with "-arm64" appended for arm64 (aarch64).
func TagName(kernelTag, arch, prefix string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	s := prefix + strings.TrimPrefix(kernelTag, kver.TagPrefix)
	if isARM64(arch) {
		s += "-arm64"
	}
	return s
}

// RevisionTag returns the tag of revision rev (>= 2) of a release tag:
// base-r<rev>. Revision 1 is the base tag itself.
func RevisionTag(base string, rev int) string {
	if rev <= 1 {
		return base
	}
	return base + "-r" + strconv.Itoa(rev)
}

// TagInfo is a parsed release tag.
type TagInfo struct {
	// KernelTag is the kernel tag, e.g. linux-msft-wsl-6.6.87.2.
	KernelTag string
	// ARM64 is true for an arm64 release.
	ARM64 bool
	// Revision is 1 for the base tag, N for a "-rN" suffix.
	Revision int
}

var releaseTagRE = regexp.MustCompile(`^([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)(-arm64)?(?:-r([0-9]+))?$`)

// ParseTagName parses a release tag made by TagName and RevisionTag.
func ParseTagName(name, prefix string) (TagInfo, bool) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return TagInfo{}, false
	}
	m := releaseTagRE.FindStringSubmatch(rest)
	if m == nil {
		return TagInfo{}, false
	}
	info := TagInfo{KernelTag: kver.TagPrefix + m[1], ARM64: m[2] != "", Revision: 1}
	if m[3] != "" {
		n, err := strconv.Atoi(m[3])
		if err != nil || n < 2 {
			return TagInfo{}, false
		}
		info.Revision = n
	}
	return info, true
}

// MatchesArch reports whether the tag is for arch.
func (t TagInfo) MatchesArch(arch string) bool { return t.ARM64 == isARM64(arch) }

func isARM64(arch string) bool { return arch == "arm64" || arch == "aarch64" }

// CheckPrefix rejects prefixes that would make tags ambiguous or invalid.
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if strings.ContainsAny(prefix, " ~^:?*[\\") || strings.Contains(prefix, "..") {
		return fmt.Errorf("release prefix %q: not valid in a git tag name", prefix)
	}
	return nil
}
