// Package runenv holds the process-level conventions the CLI and action
// mode share: how SOURCE_DATE_EPOCH is read, and where the kernel cache
// lives by default.
package runenv

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// SourceDateEpoch returns the timestamp (Unix seconds) of the value given
// on the command line, else of $SOURCE_DATE_EPOCH. ok is false when
// neither is set; each caller then uses its own fallback (the kernel
// source's date for builds, 0 for images), never the clock. A value that
// is not a non-negative decimal integer is an error naming its origin.
func SourceDateEpoch(flagValue string, getenv func(string) string) (epoch int64, ok bool, err error) {
	v, from := strings.TrimSpace(flagValue), "--source-date-epoch"
	if v == "" && getenv != nil {
		v, from = strings.TrimSpace(getenv("SOURCE_DATE_EPOCH")), "SOURCE_DATE_EPOCH"
	}
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("%s %q is not a Unix time (a non-negative integer of seconds)", from, v)
	}
	return n, true, nil
}

// DefaultCacheDir is the kernel cache directory when none is given: in
// action mode (RUNNER_TEMP set) $RUNNER_TEMP/wsl-modules-cache, which
// action.yml saves with actions/cache; otherwise
// $XDG_CACHE_HOME/wsl-modules-action, else ~/.cache/wsl-modules-action.
func DefaultCacheDir(getenv func(string) string) (string, error) {
	if getenv("GITHUB_ACTIONS") == "true" && getenv("RUNNER_TEMP") != "" {
		return filepath.Join(getenv("RUNNER_TEMP"), "wsl-modules-cache"), nil
	}
	base := getenv("XDG_CACHE_HOME")
	if base == "" {
		home := getenv("HOME")
		if home == "" {
			return "", errors.New("no cache directory given, and neither XDG_CACHE_HOME nor HOME is set")
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "wsl-modules-action"), nil
}
