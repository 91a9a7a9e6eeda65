package kconfig

import (
	"strings"
	"testing"
)

func testConfig(t *testing.T) Config {
	t.Helper()
	c, err := ReadConfig("../../testdata/kernel/config-test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseFragment(t *testing.T) {
	f, err := ParseFragment("wsl-modules.yml", 4, "CONFIG_NLS_UTF8=m\n# a comment\n\nCONFIG_NLS_ASCII=m\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Lines) != 2 || f.Lines[0] != (FragmentLine{"CONFIG_NLS_UTF8", 4}) || f.Lines[1] != (FragmentLine{"CONFIG_NLS_ASCII", 7}) {
		t.Errorf("lines = %+v", f.Lines)
	}
	for _, tc := range []struct{ in, want string }{
		{"CONFIG_NLS_UTF8=m\nCONFIG_EXT4_FS=y\n", "wsl-modules.yml:5: config-fragment: CONFIG_EXT4_FS=y: only n->m"},
		{"# CONFIG_VFAT_FS is not set\n", "wsl-modules.yml:4: config-fragment: CONFIG_VFAT_FS: only n->m"},
		{"CONFIG_LOCALVERSION=\"-x\"\n", "wsl-modules.yml:4: config-fragment: CONFIG_LOCALVERSION=\"-x\": only n->m"},
		{"USB_SERIAL=m\n", "wsl-modules.yml:4: config-fragment: \"USB_SERIAL=m\" is not a CONFIG_X=m line"},
		{"CONFIG_A=m\nCONFIG_A=m\n", "wsl-modules.yml:5: config-fragment: CONFIG_A repeated (first on line 4)"},
	} {
		_, err := ParseFragment("wsl-modules.yml", 4, tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseFragment(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestFragmentCheckBase(t *testing.T) {
	base := testConfig(t)
	// y->m: EXT4 is built in (=y) in the test config.
	f, _ := ParseFragment("l.yml", 3, "CONFIG_NLS_UTF8=m\nCONFIG_EXT4_FS=m\n")
	err := f.CheckBase(base)
	if err == nil || !strings.Contains(err.Error(), "l.yml:4: config-fragment: CONFIG_EXT4_FS is y in the stock config; only n->m changes are allowed (y->m refused)") {
		t.Errorf("y->m: %v", err)
	}
	// n->m and m->m (no-op) are fine.
	f, _ = ParseFragment("l.yml", 3, "CONFIG_NLS_UTF8=m\nCONFIG_VFAT_FS=m\n")
	if err := f.CheckBase(base); err != nil {
		t.Errorf("n->m: %v", err)
	}
}

func TestFragmentCheckResult(t *testing.T) {
	before := testConfig(t)
	f, _ := ParseFragment("l.yml", 1, "CONFIG_NLS_UTF8=m\n")
	after := Config{}
	for k, v := range before {
		after[k] = v
	}
	// Dependency did not allow m.
	if _, err := f.CheckResult(before, after); err == nil || !strings.Contains(err.Error(), "l.yml:1: config-fragment: CONFIG_NLS_UTF8 came out as n") {
		t.Errorf("unset result: %v", err)
	}
	after["CONFIG_NLS_UTF8"] = "m"
	after["CONFIG_NEW_HELPER"] = "m"       // new dependency as m: fine
	after["CONFIG_NEW_HELPER_DEBUG"] = "n" // newly visible, off: fine
	after["CONFIG_NEW_HELPER_COUNT"] = "4" // newly visible value: fine
	notes, err := f.CheckResult(before, after)
	if err != nil || len(notes) != 2 {
		t.Errorf("allowed changes: notes %q, err %v", notes, err)
	}
	// m->y of another option, or a new =y, changes vmlinux.
	after["CONFIG_VFAT_FS"] = "y"
	after["CONFIG_NEW_BUILTIN"] = "y"
	_, err = f.CheckResult(before, after)
	if err == nil || !strings.Contains(err.Error(), "CONFIG_VFAT_FS: m -> y") || !strings.Contains(err.Error(), "CONFIG_NEW_BUILTIN: (absent) -> y") {
		t.Errorf("refused changes: %v", err)
	}
}

func TestDiffConfig(t *testing.T) {
	a := Config{"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "m"}
	b := Config{"CONFIG_A": "y", "CONFIG_C": "y", "CONFIG_D": `"x"`}
	got := DiffConfig(a, b)
	if len(got) != 2 || got[0].String() != "CONFIG_C: m -> y" || got[1].String() != `CONFIG_D: (absent) -> "x"` {
		t.Errorf("DiffConfig = %v", got)
	}
}
