// Package kver names WSL kernel versions: the tags of
// microsoft/WSL2-Linux-Kernel (linux-msft-wsl-<a>.<b>.<c>.<d>), their order
// and the release string (uname -r) of the stock kernel built from them.
package kver

import (
	"fmt"
	"regexp"
	"strconv"
)

// TagPrefix is the prefix of WSL kernel tags.
const TagPrefix = "linux-msft-wsl-"

// Version is the version of a WSL kernel tag, linux-msft-wsl-<a>.<b>.<c>.<d>.
type Version [4]int

var tagRE = regexp.MustCompile(`^linux-msft-wsl-([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)$`)

// Parse parses a kernel tag name; ok is false if it does not have the
// form linux-msft-wsl-<a>.<b>.<c>.<d>.
func Parse(name string) (v Version, ok bool) {
	m := tagRE.FindStringSubmatch(name)
	if m == nil {
		return v, false
	}
	for i := range v {
		n, err := strconv.Atoi(m[i+1])
		if err != nil || len(m[i+1]) > 9 {
			return Version{}, false
		}
		v[i] = n
	}
	return v, true
}

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than w.
func (v Version) Compare(w Version) int {
	for i := range v {
		switch {
		case v[i] < w[i]:
			return -1
		case v[i] > w[i]:
			return 1
		}
	}
	return 0
}

// String is "a.b.c.d".
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d.%d", v[0], v[1], v[2], v[3]) }

// Series is "a.b", e.g. "6.6".
func (v Version) Series() string { return fmt.Sprintf("%d.%d", v[0], v[1]) }

// Tag is the kernel tag name of v.
func (v Version) Tag() string { return TagPrefix + v.String() }

// Release is the `uname -r` of the stock kernel built from v.
func (v Version) Release() string { return v.String() + "-microsoft-standard-WSL2" }
