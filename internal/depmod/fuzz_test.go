package depmod

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv/memlimit"
)

const fuzzMaxAlloc = 1 << 30 // allocations allowed per input

var fuzzLimitOnce sync.Once

// FuzzGenerate runs Generate, with the -e -E checks, on a tree of two
// arbitrary modules and arbitrary modules.order, modules.builtin and
// modules.builtin.modinfo. The seeds are real Debian modules, one
// depending on the other, and their real neighbours' files. Generate
// must not panic, must keep memory bounded, and what it accepts must be
// deterministic and closed: every module in modules.dep once, every
// dependency itself a line of modules.dep.
func FuzzGenerate(f *testing.F) {
	root, rel := testenv.DebianModules(f)
	dir := filepath.Join(root, "lib", "modules", rel)
	read := func(p string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	core, pci := read("kernel/drivers/misc/pvpanic/pvpanic.ko"), read("kernel/drivers/misc/pvpanic/pvpanic-pci.ko")
	order := []byte("kernel/drivers/misc/pvpanic/pvpanic.ko\nkernel/drivers/misc/pvpanic/pvpanic-pci.ko\n")
	builtin := []byte("kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n")
	modinfo := []byte("ext4.alias=fs-ext4\x00ext4.softdep=pre: crc32c\x00crc32c_generic.alias=crypto-crc32c\x00")
	f.Add(core, pci, order, builtin, modinfo)
	f.Add(pci, core, []byte{}, []byte{}, []byte{})
	vmlinux := map[string]VmlinuxSymbol{"printk": {CRC: 0x1}, "__fentry__": {CRC: 0x2}}
	f.Fuzz(func(t *testing.T, a, b, order, builtin, modinfo []byte) {
		fuzzLimitOnce.Do(func() { memlimit.LimitProcess(2 << 30) })
		before := memlimit.TotalAlloc()
		fsys := fstest.MapFS{
			"kernel/drivers/misc/pvpanic/pvpanic.ko": {Data: a},
			"extra/pvpanic-pci.ko":                   {Data: b},
			modtree.OrderFile:                        {Data: order},
			"modules.builtin":                        {Data: builtin},
			"modules.builtin.modinfo":                {Data: modinfo},
		}
		o := GenerateOptions{Dir: "/lib/modules/" + rel, Vmlinux: vmlinux, ErrSyms: true, CheckCRCs: true}
		first, err := generateFS(fsys, rel, o)
		if got := memlimit.TotalAlloc() - before; got > fuzzMaxAlloc {
			t.Fatalf("one input allocated %d MiB", got>>20)
		}
		if err != nil {
			return
		}
		checkClosed(t, first)
		again, err := generateFS(fsys, rel, o)
		if err != nil {
			t.Fatalf("second run failed: %v", err)
		}
		for i, f := range first.Files {
			if !bytes.Equal(f.Data, again.Files[i].Data) {
				t.Fatalf("%s differs between two runs on the same tree", f.Name)
			}
		}
	})
}

// generateFS loads fsys as a tree and generates its indexes.
func generateFS(fsys fstest.MapFS, rel string, o GenerateOptions) (*Result, error) {
	tree, err := modtree.Load(context.Background(), fsys, rel)
	if err != nil {
		return nil, err
	}
	return Generate(tree, o)
}

// checkClosed checks modules.dep against the result's order: one line per
// module, and every dependency a module of its own line.
func checkClosed(t *testing.T, res *Result) {
	lines := strings.Split(strings.TrimSuffix(string(res.File(FileDep)), "\n"), "\n")
	if len(res.Order) == 0 {
		lines = nil
	}
	if len(lines) != len(res.Order) {
		t.Fatalf("modules.dep has %d lines for %d modules", len(lines), len(res.Order))
	}
	have := map[string]bool{}
	for i, l := range lines {
		mod, _, ok := strings.Cut(l, ":")
		if !ok || mod != res.Order[i] || have[mod] {
			t.Fatalf("modules.dep line %d %q, want module %s once", i+1, l, res.Order[i])
		}
		have[mod] = true
	}
	for _, l := range lines {
		_, deps, _ := strings.Cut(l, ":")
		for _, d := range strings.Fields(deps) {
			if !have[d] {
				t.Fatalf("modules.dep line %q depends on %s, which has no line", l, d)
			}
		}
	}
}
