package intree_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/intree"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// plan612 plans a fragment (its lines from line 4 of wsl-modules.yml)
// over Debian's 6.12 source with the test config.
func plan612(t *testing.T, frag string) (*intree.Plan, error) {
	t.Helper()
	f, err := kconfig.ParseFragment("wsl-modules.yml", 4, frag)
	if err != nil {
		t.Fatal(err)
	}
	return intree.PlanSource(context.Background(), kbuild.KernelOptions{Source: buildtest.SourceDir(t),
		ConfigFile: buildtest.ConfigFile(), Arch: "x86_64", Fragment: f}, t.TempDir(), 0)
}

// TestPlan612ModuleOnly plans options of Debian's 6.12 whose code is in
// modules only, all n in the test config: codepages (three objects of
// fs/nls, a directory the stock config builds), UDF (fs/udf, a directory
// it does not build, and CRC_ITU_T in lib/, which UDF selects as m) and
// exFAT (fs/exfat, with the string option it makes visible).
func TestPlan612ModuleOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("configures the kernel source")
	}
	p, err := plan612(t, "CONFIG_NLS_UTF8=m\nCONFIG_NLS_CODEPAGE_932=m\nCONFIG_UDF_FS=m\nCONFIG_EXFAT_FS=m\n")
	if err != nil {
		t.Fatal(err)
	}
	type unit struct {
		whole    bool
		objects  string
		selected string
	}
	want := map[string]unit{
		"fs/nls":   {false, "nls_cp932.o nls_euc-jp.o nls_utf8.o", "CONFIG_NLS_CODEPAGE_932 CONFIG_NLS_UTF8"},
		"fs/udf":   {true, "", "CONFIG_UDF_FS"},
		"fs/exfat": {true, "", "CONFIG_EXFAT_FS"},
		"lib":      {false, "crc-itu-t.o", "CONFIG_CRC_ITU_T"},
	}
	if len(p.Units) != len(want) {
		t.Fatalf("units %+v", p.Units)
	}
	for _, u := range p.Units {
		w, ok := want[u.Dir]
		if !ok || u.Whole != w.whole || !u.Whole && strings.Join(u.Objects, " ") != w.objects || strings.Join(u.Selected, " ") != w.selected {
			t.Errorf("unit %+v, want %+v", u, w)
		}
		if err := u.Validate(); err != nil {
			t.Error(err)
		}
	}
	lines := p.Units[0].ConfigLines()
	for _, l := range []string{"CONFIG_NLS_UTF8=m", "CONFIG_UDF_FS=m", "CONFIG_CRC_ITU_T=m", `CONFIG_EXFAT_DEFAULT_IOCHARSET="utf8"`} {
		if !slices.Contains(lines, l) {
			t.Errorf("options %v lack %s", lines, l)
		}
	}
}

// TestPlan612Refusals: options of 6.12 whose CONFIG_X=m changes the
// built-in kernel, each refused with the fragment line, the option, the
// file:line that decides and kernel: build.
func TestPlan612Refusals(t *testing.T) {
	if testing.Short() {
		t.Skip("configures the kernel source")
	}
	for frag, wants := range map[string][]string{
		// net/8021q builds vlan_core.o into the kernel for VLAN_8021Q=m,
		// and net/Makefile tests the option.
		"CONFIG_VLAN_8021Q=m": {"wsl-modules.yml:4: config-fragment: CONFIG_VLAN_8021Q: net/8021q/Makefile:5: builds vlan_core.o into the kernel",
			"net/Makefile:42: CONFIG_VLAN_8021Q is used there other than to select a module (`ifneq ($(CONFIG_VLAN_8021Q),)`)"},
		// include/linux/rfkill.h: #if defined(CONFIG_RFKILL) || defined(CONFIG_RFKILL_MODULE)
		"CONFIG_RFKILL=m": {"wsl-modules.yml:4: config-fragment: CONFIG_RFKILL: include/linux/rfkill.h:67: CONFIG_RFKILL and CONFIG_RFKILL_MODULE referenced there"},
		// FUSE_FS selects FS_POSIX_ACL, a bool, which becomes y.
		"CONFIG_FUSE_FS=m": {"wsl-modules.yml:4: config-fragment: CONFIG_FUSE_FS=m would change the built-in kernel", "CONFIG_FS_POSIX_ACL: (absent) -> y"},
		// A bool cannot be m.
		"CONFIG_QUOTA=m": {"wsl-modules.yml:4: config-fragment: CONFIG_QUOTA came out as n after olddefconfig"},
		// The good line plans, the bad one is named by its line.
		"CONFIG_NLS_UTF8=m\nCONFIG_RFKILL=m": {"wsl-modules.yml:5: config-fragment: CONFIG_RFKILL: include/linux/rfkill.h:67"},
	} {
		t.Run(strings.ReplaceAll(frag, "\n", ","), func(t *testing.T) {
			t.Parallel()
			_, err := plan612(t, frag+"\n")
			var pe *intree.Error
			if !errors.As(err, &pe) {
				t.Fatalf("%v, want a refusal", err)
			}
			for _, w := range append(wants, "(use kernel: build)") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}
