package depmod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// symbolLines returns the unresolved-symbol and CRC warning lines of a
// depmod output, in order.
func symbolLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if testenv.KmodWarning.MatchString(l) {
			lines = append(lines, l)
		}
	}
	return lines
}

func problems(ps []modtree.Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Module+" "+p.Symbol)
	}
	return out
}

// TestChecksAgainstKmod compares the unresolved-symbol and CRC reports
// with kmod's depmod -e -E / -e -F on the Debian tree: with the kernel's
// real Module.symvers (no problems), with a Module.symvers that has one
// CRC changed and one symbol removed, and with Debian's placeholder
// System.map (every vmlinux symbol unknown).
func TestChecksAgainstKmod(t *testing.T) {
	root, _ := testenv.DebianModules(t)
	base, rel := debianTree(t)
	dir, err := filepath.EvalSymlinks(modDir(base, rel))
	if err != nil {
		t.Fatal(err)
	}
	symvers := testenv.DebianSymvers(t)
	good, err := os.ReadFile(symvers)
	if err != nil {
		t.Fatal(err)
	}
	badText := regexp.MustCompile(`(?m)^0x[0-9a-f]+\t_printk\t`).ReplaceAllString(string(good), "0x12345678\t_printk\t")
	badText = regexp.MustCompile(`(?m)^0x[0-9a-f]+\tkmalloc_caches\t.*\n`).ReplaceAllString(badText, "")
	if badText == string(good) {
		t.Fatal("could not alter Module.symvers")
	}
	bad := filepath.Join(t.TempDir(), "Module.symvers")
	testenv.WriteFile(t, bad, badText)
	sysmap := filepath.Join(root, "boot", "System.map-"+rel)

	tree, err := modtree.LoadDir(dir, rel)
	if err != nil {
		t.Fatal(err)
	}
	conf := emptyConf(t)
	for _, tc := range []struct {
		name   string
		args   []string
		minUnr int
		minCRC int
	}{
		{"symvers", []string{"-e", "-E", symvers}, 0, 0},
		{"bad-symvers", []string{"-e", "-E", bad}, 100, 100},
		{"system-map", []string{"-e", "-F", sysmap}, 10000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := kmodDepmod(t, base, rel, conf, tc.args...)
			wantUnr, wantCRC := testenv.KmodProblems(t, out, dir)
			o := GenerateOptions{Dir: dir, ErrSyms: true}
			if tc.args[1] == "-E" {
				o.Vmlinux, err = ReadSymvers(tc.args[2])
				o.CheckCRCs = true
			} else {
				o.Vmlinux, err = ReadSystemMap(tc.args[2])
			}
			if err != nil {
				t.Fatal(err)
			}
			res, err := Generate(tree, o)
			if err != nil {
				t.Fatal(err)
			}
			gotUnr, gotCRC := problems(res.Unresolved), problems(res.CRCMismatches)
			// The printer gives kmod's lines byte for byte, in kmod's order.
			var printed strings.Builder
			res.WriteWarnings(&printed, dir)
			if got, want := symbolLines(printed.String()), symbolLines(out); !reflect.DeepEqual(got, want) {
				t.Errorf("printed warnings differ from kmod's: %d vs %d lines; first difference: %s", len(got), len(want), listDiff(got, want))
			}
			if !reflect.DeepEqual(gotUnr, wantUnr) {
				t.Errorf("unresolved: %d reported, kmod %d; first difference: %s", len(gotUnr), len(wantUnr), listDiff(gotUnr, wantUnr))
			}
			if !reflect.DeepEqual(gotCRC, wantCRC) {
				t.Errorf("CRC mismatches: %d reported, kmod %d; first difference: %s", len(gotCRC), len(wantCRC), listDiff(gotCRC, wantCRC))
			}
			if len(wantUnr) < tc.minUnr || len(wantCRC) < tc.minCRC {
				t.Errorf("kmod found only %d unresolved / %d CRC problems", len(wantUnr), len(wantCRC))
			}
			t.Logf("%d unresolved, %d CRC mismatches (same as kmod)", len(gotUnr), len(gotCRC))
		})
	}
}

func listDiff(got, want []string) string {
	for i := 0; i < len(got) || i < len(want); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("at %d: got %q, want %q", i, g, w)
		}
	}
	return "none"
}

// TestStrict: with Strict, problems are an error and nothing is written.
func TestStrict(t *testing.T) {
	base, rel := subsetTree(t, "kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko")
	good, err := os.ReadFile(testenv.DebianSymvers(t))
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "Module.symvers")
	testenv.WriteFile(t, bad, regexp.MustCompile(`(?m)^0x[0-9a-f]+\t_printk\t`).ReplaceAllString(string(good), "0x12345678\t_printk\t"))
	rep, err := Run(context.Background(), Options{BaseDir: base, Release: rel, Symvers: bad, ErrSyms: true, Strict: true})
	if !errors.Is(err, ErrStrict) {
		t.Fatalf("Run = %v, want ErrStrict", err)
	}
	if rep == nil || len(rep.CRCMismatches) == 0 {
		t.Fatalf("report %+v lacks the CRC mismatches", rep)
	}
	if got := outputsPresent(t, modDir(base, rel)); len(got) != 0 {
		t.Errorf("files written despite --strict failure: %v", got)
	}
	// Without Strict the same run succeeds and reports the same problems.
	rep2 := runOurs(t, base, rel, Options{Symvers: bad, ErrSyms: true})
	if !reflect.DeepEqual(rep2.CRCMismatches, rep.CRCMismatches) {
		t.Errorf("non-strict report differs: %v vs %v", rep2.CRCMismatches, rep.CRCMismatches)
	}
	// With the real Module.symvers, Strict passes.
	runOurs(t, base, rel, Options{Symvers: testenv.DebianSymvers(t), ErrSyms: true, Strict: true})
}
