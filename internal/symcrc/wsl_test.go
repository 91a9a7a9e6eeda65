package symcrc

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// wslConfig is Microsoft's x86 config of 6.6.87.1 (a third-party copy,
// see the reference's §7.1); override with $SYMCRC_WSL_CONFIG.
func wslConfig(t *testing.T) []byte {
	p := os.Getenv("SYMCRC_WSL_CONFIG")
	if p == "" {
		p = "/work/shared/reference/configs/config-wsl-6.6.87.1"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Skipf("no WSL config (%v); set SYMCRC_WSL_CONFIG", err)
	}
	return b
}

// TestProveWSLConfig runs the proof on a tree prepared with Microsoft's
// option set (SMP, BTF, GCC plugins when the compiler has them, ...) for
// the symbols fat and vfat import. There is no full build of that config
// to compare with, so kbuild itself is the oracle: in a copy of the tree,
// a single-object build of the exporting files records kbuild's own CRCs
// (#SYMVER lines in .<file>.o.cmd), and the proof must give the same.
func TestProveWSLConfig(t *testing.T) {
	skipShort(t)
	k := buildtest.TestKernel(t)
	tree := prepared(t, "x86_64", wslConfig(t))
	logOptions(t, tree)
	want := stockImports(t, k, "fat", "vfat")
	sampleVmlinux(t, k, want, 0, "iput", "kfree", "memcpy")
	rep, err := Prove(context.Background(), tree.options(t, testenv.LogWriter(t)), want)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) > 0 || len(rep.Unlocated) > 0 {
		t.Fatalf("failed %v, unlocated %v", rep.Failed, rep.Unlocated)
	}
	source := map[string]uint32{}
	files := map[string]string{}
	for _, c := range rep.Checked {
		source[c.Symbol], files[c.Symbol] = c.CRC, c.File
	}
	for _, m := range rep.Mismatches {
		if m.Kind == CRCDiffers {
			source[m.Symbol], files[m.Symbol] = m.Source, m.File
		}
	}
	t.Logf("WSL config: %d symbols, %d with the test kernel's CRC, %d not (expected: another config), %d files, kbuild %s",
		len(want), len(rep.Checked), len(rep.Mismatches), rep.Files, rep.KbuildTime)

	// kbuild's own CRCs for a dozen of the exporting files, with the
	// assembly one (memcpy) among them.
	sample := []string{files["memcpy"], files["iput"], files["kfree"]}
	for _, f := range keysOf(setOf(invert(files))) {
		if len(sample) < 12 && !contains(sample, f) {
			sample = append(sample, f)
		}
	}
	oracle := kbuildOracle(t, tree, sample)
	compared := 0
	for sym, crc := range source {
		if o, ok := oracle[files[sym]][sym]; ok {
			compared++
			if o != crc {
				t.Errorf("%s (%s): proof 0x%08x, kbuild 0x%08x", sym, files[sym], crc, o)
			}
		}
	}
	if compared < 10 {
		t.Fatalf("only %d symbols compared with kbuild's own CRCs", compared)
	}
	t.Logf("%d CRCs equal to kbuild's own for %v", compared, keysOf(oracle))
}

// logOptions logs what olddefconfig made of the options that matter to
// CRCs and module loading.
func logOptions(t *testing.T, tree preparedTree) {
	conf := readConfig(t, filepath.Join(tree.obj, ".config"))
	var got []string
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		for _, o := range []string{"CONFIG_SMP=", "CONFIG_GCC_PLUGINS", "CONFIG_DEBUG_INFO_BTF", "CONFIG_RANDSTRUCT",
			"CONFIG_MODVERSIONS", "CONFIG_ASM_MODVERSIONS", "CONFIG_FAT_FS", "CONFIG_VFAT_FS"} {
			if strings.Contains(sc.Text(), o) {
				got = append(got, sc.Text())
			}
		}
	}
	t.Logf("prepared WSL tree %s (release %s): %s", tree.obj, tree.release(t), strings.Join(got, "; "))
}

// kbuildOracle builds the objects of files with kbuild in a copy of the
// tree and returns the CRCs kbuild recorded for each file.
func kbuildOracle(t *testing.T, tree preparedTree, files []string) map[string]map[string]uint32 {
	t.Helper()
	cp := tree
	cp.obj = filepath.Join(t.TempDir(), "obj")
	if out, err := exec.Command("cp", "-a", tree.obj, cp.obj).CombinedOutput(); err != nil {
		t.Fatalf("copying the tree: %v\n%s", err, out)
	}
	var goals, uniq []string
	for _, f := range files {
		if f == "" || contains(uniq, f) {
			continue
		}
		uniq = append(uniq, f)
		goals = append(goals, strings.TrimSuffix(f, path.Ext(f))+".o")
	}
	files = uniq
	for _, g := range goals {
		// One at a time and -j1: kbuild's single-target walk reaches
		// arch/x86/lib twice (core-y and libs-y) and builds its objects
		// twice at once with -j2.
		var log bytes.Buffer
		if err := cp.makeJobs(context.Background(), &log, 1, g); err != nil {
			t.Fatalf("kbuild %s: %v\n%s", g, err, tail(log.String(), 30))
		}
	}
	out := map[string]map[string]uint32{}
	for i, f := range files {
		o := goals[i]
		cmd := readConfig(t, filepath.Join(cp.obj, path.Dir(o), "."+path.Base(o)+".cmd"))
		out[f] = map[string]uint32{}
		for _, line := range strings.Split(string(cmd), "\n") {
			if fl := strings.Fields(line); len(fl) == 3 && fl[0] == "#SYMVER" {
				v, err := strconv.ParseUint(fl[2], 0, 32)
				if err != nil {
					t.Fatal(err)
				}
				out[f][fl[1]] = uint32(v)
			}
		}
		if len(out[f]) == 0 {
			t.Fatalf("kbuild recorded no CRCs for %s", f)
		}
	}
	return out
}

// invert maps each file of symbol → file to its symbols.
func invert(m map[string]string) map[string][]string {
	out := map[string][]string{}
	for sym, f := range m {
		out[f] = append(out[f], sym)
	}
	return out
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
