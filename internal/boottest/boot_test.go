package boottest

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// TestBootStockModules boots the test kernel with its own modules in a VHDX
// of ours, in both layouts, and modprobes modules with dependencies.
func TestBootStockModules(t *testing.T) {
	testenv.Tool(t, "qemu-system-x86_64")
	testenv.Tool(t, "busybox")
	k := buildtest.TestKernel(t)
	for _, layout := range []image.Layout{image.LayoutFlat, image.LayoutNested} {
		t.Run(string(layout), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "modules.vhdx")
			if _, err := image.Build(context.Background(), image.Options{ModuleDir: k.ModulesDir(), Release: k.Meta.Release, Layout: layout}, out, nil); err != nil {
				t.Fatal(err)
			}
			res, err := Boot(context.Background(), Config{Kernel: k.Image(), Disk: out, Format: "vhdx",
				Modules: []string{"vfat", "isofs", "no_such_module"}, Timeout: 5 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if res.Release != k.Meta.Release {
				t.Errorf("uname -r = %q, want %q", res.Release, k.Meta.Release)
			}
			if res.Layout != string(layout) {
				t.Errorf("guest saw layout %q, want %q", res.Layout, layout)
			}
			if !slices.Equal(res.Loaded, []string{"vfat", "isofs"}) || !slices.Equal(res.Failed, []string{"no_such_module"}) {
				t.Errorf("loaded %v failed %v\n%s", res.Loaded, res.Failed, res.Console)
			}
			for _, m := range []string{"vfat", "fat", "isofs"} {
				if !slices.Contains(res.Lsmod, m) {
					t.Errorf("lsmod lacks %s: %v", m, res.Lsmod)
				}
			}
		})
	}
}
