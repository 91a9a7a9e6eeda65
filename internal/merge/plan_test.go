package merge

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/pack"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

var (
	baseOnce sync.Once
	baseTree *modtree.Tree
	baseErr  error
)

// debianBase loads the real Debian module tree once.
func debianBase(t *testing.T) (*modtree.Tree, string) {
	t.Helper()
	root, rel := testenv.DebianModules(t)
	dir := filepath.Join(root, "lib", "modules", rel)
	baseOnce.Do(func() { baseTree, baseErr = modtree.LoadDir(dir, rel) })
	if baseErr != nil {
		t.Fatal(baseErr)
	}
	return baseTree, dir
}

// without returns a copy of tree without the named modules.
func without(t *modtree.Tree, names ...string) *modtree.Tree {
	drop := map[string]bool{}
	for _, n := range names {
		drop[n] = true
	}
	out := &modtree.Tree{Release: t.Release, Symvers: t.Symvers}
	for _, e := range t.Modules {
		if !drop[e.Name] {
			out.Modules = append(out.Modules, e)
		}
	}
	return out
}

func mkPack(t *testing.T, name, release string, mods map[string]string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+pack.Ext)
	if _, err := pack.Create(out, pack.CreateOptions{Name: name, Version: "1.0", KernelRelease: release, Modules: mods}); err != nil {
		t.Fatal(err)
	}
	return out
}

// corruptVersion flips the CRC of the first real symbol in __versions and
// returns the symbol's name.
func corruptVersion(t *testing.T, data []byte) string {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section("__versions")
	if s == nil {
		t.Fatal("no __versions")
	}
	for off := uint64(0); off+64 <= s.Size; off += 64 {
		e := data[s.Offset+off : s.Offset+off+64]
		name := string(bytes.TrimRight(e[8:], "\x00"))
		if name == "module_layout" {
			continue
		}
		e[0] ^= 0xff
		return name
	}
	t.Fatal("empty __versions")
	return ""
}

func wantErr(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", substr)
	}
	if !errors.Is(err, ErrCheck) && !errors.Is(err, pack.ErrCorrupt) {
		t.Errorf("error does not wrap ErrCheck/ErrCorrupt: %v", err)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q\ndoes not contain %q", err, substr)
	}
}

func TestPlanShadowAndResolve(t *testing.T) {
	base, dir := debianBase(t)
	// A pack providing fat and vfat over a base without them: vfat's needs
	// resolve against the other pack module.
	b := without(base, "fat", "vfat")
	p1 := open(t, mkPack(t, "fatcore", base.Release, map[string]string{"fat.ko": filepath.Join(dir, "kernel/fs/fat/fat.ko")}))
	p2 := open(t, mkPack(t, "vfat", base.Release, map[string]string{"vfat.ko": filepath.Join(dir, "kernel/fs/fat/vfat.ko")}))
	plan, err := PlanMerge(b, []*pack.Pack{p2, p1}, MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Add) != 2 || plan.Add[0].Dest != "extra/fatcore/fat.ko" || plan.Add[1].Dest != "extra/vfat/vfat.ko" {
		t.Fatalf("placements: %+v", plan.Add)
	}
	if len(plan.Shadows) != 0 {
		t.Fatalf("shadows %v", plan.Shadows)
	}
	// Without Module.symvers, vmlinux symbols that no stock module imports
	// cannot be verified: they are warnings, and only for fat.ko (vfat's
	// needs all resolve against the fatcore pack or stock __versions).
	for _, w := range plan.Warnings {
		if !strings.Contains(w, "extra/fatcore/fat.ko needs unknown symbol") {
			t.Errorf("unexpected warning %s", w)
		}
	}
	// Over the full base the same pack shadows the stock module.
	plan, err = PlanMerge(base, []*pack.Pack{p2}, MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Shadows) != 1 || plan.Shadows[0].Stock != "kernel/fs/fat/vfat.ko" || plan.Shadows[0].Pack != "vfat" {
		t.Fatalf("shadows: %+v", plan.Shadows)
	}
}

func TestPlanRefusals(t *testing.T) {
	base, dir := debianBase(t)
	vfat := filepath.Join(dir, "kernel/fs/fat/vfat.ko")
	symvers := map[string]modtree.SymverEntry{}
	for _, e := range base.Modules {
		for _, n := range e.Needs {
			if n.HasCRC {
				symvers[n.Name] = modtree.SymverEntry{CRC: n.CRC, Module: "vmlinux"}
			}
		}
	}
	for _, e := range base.Modules {
		for _, s := range e.Exports {
			delete(symvers, s.Name)
		}
	}

	t.Run("other-release", func(t *testing.T) {
		p := open(t, mkPack(t, "x", "6.1.0-99-amd64", map[string]string{"vfat.ko": vfat}))
		_, err := PlanMerge(base, []*pack.Pack{p}, MergeOptions{})
		wantErr(t, err, "pack x: built for kernel release 6.1.0-99-amd64, base is "+base.Release)
	})
	t.Run("unresolved", func(t *testing.T) {
		p := open(t, mkPack(t, "vfat", base.Release, map[string]string{"vfat.ko": vfat}))
		_, err := PlanMerge(without(base, "fat"), []*pack.Pack{p}, MergeOptions{Symvers: symvers})
		wantErr(t, err, "pack vfat: extra/vfat/vfat.ko needs unknown symbol fat_")
	})
	t.Run("duplicate", func(t *testing.T) {
		a := open(t, mkPack(t, "a", base.Release, map[string]string{"vfat.ko": vfat}))
		b := open(t, mkPack(t, "b", base.Release, map[string]string{"sub/vfat.ko": vfat}))
		_, err := PlanMerge(base, []*pack.Pack{a, b}, MergeOptions{})
		wantErr(t, err, "module vfat is provided by several packs: a (a/vfat.ko), b (b/sub/vfat.ko)")
		plan, err := PlanMerge(base, []*pack.Pack{b, a}, MergeOptions{Prefer: []string{"b"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Add) != 1 || plan.Add[0].Pack != "b" || len(plan.Dropped) != 1 || plan.Dropped[0].Pack != "a" {
			t.Fatalf("prefer: add %+v dropped %+v", plan.Add, plan.Dropped)
		}
	})
	t.Run("crc-mismatch", func(t *testing.T) {
		data, err := os.ReadFile(vfat)
		if err != nil {
			t.Fatal(err)
		}
		sym := corruptVersion(t, data)
		p := filepath.Join(t.TempDir(), "vfat.ko")
		os.WriteFile(p, data, 0o644)
		pk := open(t, mkPack(t, "bad", base.Release, map[string]string{"vfat.ko": p}))
		_, err = PlanMerge(base, []*pack.Pack{pk}, MergeOptions{})
		wantErr(t, err, "pack bad: extra/bad/vfat.ko disagrees about version of symbol "+sym)
	})
	t.Run("vermagic", func(t *testing.T) {
		data, _ := os.ReadFile(vfat)
		i := bytes.Index(data, []byte("vermagic="+base.Release))
		if i < 0 {
			t.Fatal("no vermagic in vfat.ko")
		}
		// Same length, another release: the first character changed.
		other := "9" + base.Release[1:]
		copy(data[i+len("vermagic="):], other)
		p := filepath.Join(t.TempDir(), "vfat.ko")
		os.WriteFile(p, data, 0o644)
		pk := open(t, mkPack(t, "vm", base.Release, map[string]string{"vfat.ko": p}))
		_, err := PlanMerge(base, []*pack.Pack{pk}, MergeOptions{})
		wantErr(t, err, `pack vm: extra/vm/vfat.ko: vermagic "`+other)
	})
}
