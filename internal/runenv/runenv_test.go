package runenv

import (
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSourceDateEpoch(t *testing.T) {
	for _, tc := range []struct {
		flag, envv string
		want       int64
		ok         bool
		err        string
	}{
		{"", "", 0, false, ""},
		{"", "1749148246", 1749148246, true, ""},
		{"0", "1749148246", 0, true, ""},
		{" 12 ", "", 12, true, ""},
		{"", "yesterday", 0, false, `SOURCE_DATE_EPOCH "yesterday" is not a Unix time`},
		{"-5", "", 0, false, `--source-date-epoch "-5" is not a Unix time`},
	} {
		got, ok, err := SourceDateEpoch(tc.flag, env(map[string]string{"SOURCE_DATE_EPOCH": tc.envv}))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q/%q: error %v, want %q", tc.flag, tc.envv, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want || ok != tc.ok {
			t.Errorf("%q/%q = %d, %v, %v; want %d, %v", tc.flag, tc.envv, got, ok, err, tc.want, tc.ok)
		}
	}
}

func TestDefaultCacheDir(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HOME": "/home/u"}, "/home/u/.cache/wsl-modules-action"},
		{map[string]string{"HOME": "/home/u", "XDG_CACHE_HOME": "/c"}, "/c/wsl-modules-action"},
		{map[string]string{"HOME": "/home/u", "GITHUB_ACTIONS": "true", "RUNNER_TEMP": "/rt"}, "/rt/wsl-modules-cache"},
		{map[string]string{"HOME": "/home/u", "RUNNER_TEMP": "/rt"}, "/home/u/.cache/wsl-modules-action"},
	} {
		got, err := DefaultCacheDir(env(tc.env))
		if err != nil || got != tc.want {
			t.Errorf("%v: %q, %v; want %q", tc.env, got, err, tc.want)
		}
	}
	if _, err := DefaultCacheDir(env(nil)); err == nil {
		t.Error("no HOME: no error")
	}
}
