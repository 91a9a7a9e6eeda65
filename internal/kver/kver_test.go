package kver

import "testing"

func TestParseCompare(t *testing.T) {
	for _, bad := range []string{"linux-msft-5.4.72", "linux-msft-wsl-6.6", "linux-msft-wsl-6.6.87.2-rc1", "v6.6.87.2", "linux-msft-wsl-6.6.87.x", ""} {
		if _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	v, ok := Parse("linux-msft-wsl-6.18.40.1")
	if !ok || v != (Version{6, 18, 40, 1}) || v.Series() != "6.18" || v.Tag() != "linux-msft-wsl-6.18.40.1" || v.Release() != "6.18.40.1-microsoft-standard-WSL2" {
		t.Errorf("Parse: %v %v", v, ok)
	}
	a, _ := Parse("linux-msft-wsl-6.6.87.2")
	b, _ := Parse("linux-msft-wsl-6.6.114.1")
	if a.Compare(b) != -1 || b.Compare(a) != 1 || a.Compare(a) != 0 || v.Compare(b) != 1 {
		t.Error("Compare does not order by version")
	}
}
