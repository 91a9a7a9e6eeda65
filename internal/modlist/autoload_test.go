package modlist

import (
	"reflect"
	"strings"
	"testing"
)

const autoloadList = `modules:
  - name: ddcci
    path: ddcci
    autoload: true
  - name: jool
    path: jool
    autoload: [jool, jool_siit]
  - name: quiet
    path: quiet
  - name: off
    path: off
    autoload: false
  - name: failed
    path: failed
    autoload: true
  - name: again
    path: again
    autoload: [ddcci-backlight]
`

// TestAutoload: autoload: true takes the entry's built modules (named as
// modprobe knows them), a list is taken as written, false and absent add
// nothing, entries without a build are left out, each name comes once,
// and CheckAutoload reports unknown names at their position.
func TestAutoload(t *testing.T) {
	l, err := Parse("w.yml", []byte(autoloadList))
	if err != nil {
		t.Fatal(err)
	}
	built := map[string][]string{
		"ddcci": {"extra/ddcci/ddcci.ko", "extra/ddcci/ddcci-backlight.ko"},
		"jool":  {"extra/jool/jool.ko", "extra/jool/jool_siit.ko", "extra/jool/jool_common.ko"},
		"quiet": {"extra/quiet/quiet.ko"},
		"off":   {"extra/off/off.ko"},
		"again": {"extra/again/ddcci_backlight.ko.zst"},
		// "failed" was not built.
	}
	want := []string{"ddcci", "ddcci_backlight", "jool", "jool_siit"}
	if got := l.AutoloadNames(built); !reflect.DeepEqual(got, want) {
		t.Errorf("AutoloadNames = %q, want %q", got, want)
	}
	known := map[string]bool{"ddcci": true, "ddcci_backlight": true, "jool": true, "jool_siit": true}
	if err := l.CheckAutoload(built, func(n string) bool { return known[n] }); err != nil {
		t.Errorf("CheckAutoload: %v", err)
	}
	delete(known, "jool_siit")
	delete(known, "ddcci_backlight")
	err = l.CheckAutoload(built, func(n string) bool { return known[n] })
	if err == nil {
		t.Fatal("unknown names accepted")
	}
	for _, w := range []string{
		`w.yml:4:15: modules[0].autoload: module "ddcci_backlight" (built by ddcci) is not in the image`,
		`w.yml:7:22: modules[1].autoload[1]: module "jool_siit" is not in the image`,
		`w.yml:18:16: modules[5].autoload[0]: module "ddcci_backlight" is not in the image`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error:\n%v\nwant it to contain %q", err, w)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 3 {
		t.Errorf("%d errors, want 3:\n%v", n, err)
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"extra/ddcci/ddcci-backlight.ko": "ddcci_backlight",
		"updates/x/xt_ACCOUNT.ko.xz":     "xt_ACCOUNT",
		"v4l2loopback":                   "v4l2loopback",
		"a.ko.gz":                        "a",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}
