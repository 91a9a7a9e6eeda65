package depmod

import (
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// TestGoldenBuiltKernel compares with kmod 30 on the stock modules of the
// kernel our own build stage produces (built once and cached by
// buildtest), including the -e -E check against its Module.symvers.
func TestGoldenBuiltKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the built test kernel")
	}
	k := buildtest.TestKernel(t)
	rel := k.Meta.Release
	ref := linkModuleTree(t, k.ModulesDir(), rel)
	ours := cloneTree(t, ref)
	conf := emptyConf(t)
	out := kmodDepmod(t, ref, rel, conf, "-e", "-E", k.Symvers())
	rep := runOurs(t, ours, rel, Options{Symvers: k.Symvers(), ErrSyms: true, Strict: out == ""})
	if rep.Modules == 0 {
		t.Fatal("no modules in the built kernel")
	}
	compareOutputs(t, modDir(ref, rel), modDir(ours, rel))
	unr, crc := testenv.KmodProblems(t, out, modDir(ref, rel))
	if len(unr) != len(rep.Unresolved) || len(crc) != len(rep.CRCMismatches) {
		t.Errorf("kmod reports %d unresolved / %d CRC problems, we report %d / %d",
			len(unr), len(crc), len(rep.Unresolved), len(rep.CRCMismatches))
	}
	t.Logf("%d modules of %s identical to kmod's output", rep.Modules, rel)
}
