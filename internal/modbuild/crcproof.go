package modbuild

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/symcrc"
)

// proveCRCs runs the stock-mode CRC proof over the modules that passed
// verification: every vmlinux symbol they import must get, computed from
// the prepared source as kbuild computes it, the CRC of Microsoft's
// kernel. A mismatch fails every module importing the symbol, naming it
// and both CRCs; this is what catches a stock kernel built from another
// config than the one prepared (same release string, other structures).
func proveCRCs(ctx context.Context, o ModulesOptions, stock *modtree.Tree, results []*ModuleResult) error {
	k := o.Kernel
	want, users := vmlinuxImports(stock, results)
	if len(want) == 0 {
		return nil
	}
	if o.KernelSource == "" {
		return fmt.Errorf("verify: stock mode needs the kernel source (ModulesOptions.KernelSource) for the CRC proof")
	}
	tc, err := kbuild.ToolchainFor(k.Meta.Arch, "")
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	done := o.Progress.Step("verify: CRC proof of %d vmlinux symbols the modules import (genksyms over the prepared source)", len(want))
	rep, err := symcrc.Prove(ctx, symcrc.Options{Src: o.KernelSource, Obj: k.PreparedDir(),
		MakeArgs: append(append([]string{}, tc.MakeVars...), "LOCALVERSION="), Jobs: o.Jobs,
		CacheDir: filepath.Join(filepath.Dir(filepath.Dir(k.Dir)), "symcrc"), SourceID: k.Meta.Source.SHA256,
		Log: progressWriter{o}}, want)
	done()
	if err != nil {
		return fmt.Errorf("verify: CRC proof: %w", err)
	}
	o.Progress.Printf("verify: CRC proof: %d symbols proven from %d files, %d mismatches, %d not located",
		len(rep.Checked), rep.Files, len(rep.Mismatches), len(rep.Unlocated))
	for _, m := range rep.Mismatches {
		for _, r := range users[m.Symbol] {
			r.Status = manifest.StatusFailed
			r.fail("verify: stock-mode CRC proof: " + m.String() + "; the source or config does not match the stock kernel (use kernel: build)")
		}
	}
	for _, f := range rep.Failed {
		for _, s := range f.Symbols {
			for _, r := range users[s] {
				r.Status = manifest.StatusFailed
				r.fail(fmt.Sprintf("verify: stock-mode CRC proof: %s (exported by %s) could not be computed: %v", s, f.File, f.Err))
			}
		}
	}
	for _, s := range rep.Unlocated {
		for _, r := range users[s] {
			r.warn(fmt.Sprintf("stock-mode CRC proof: no file of the source exports %s, so its CRC is not proven", s))
		}
	}
	return nil
}

// vmlinuxImports returns the vmlinux symbols (by Module.symvers, and not
// exported by a module) that ok modules import with a CRC, with their
// stock CRCs, and the modules importing each.
func vmlinuxImports(stock *modtree.Tree, results []*ModuleResult) (map[string]uint32, map[string][]*ModuleResult) {
	want := map[string]uint32{}
	users := map[string][]*ModuleResult{}
	for _, r := range results {
		if r.Status != manifest.StatusOK {
			continue
		}
		for _, e := range r.Entries {
			for _, n := range e.Needs {
				sv, ok := stock.Symvers[n.Name]
				if n.Weak || !n.HasCRC || !ok || sv.Module != modtree.ProviderVmlinux {
					continue
				}
				want[n.Name] = uint32(sv.CRC)
				if l := users[n.Name]; len(l) == 0 || l[len(l)-1] != r {
					users[n.Name] = append(l, r)
				}
			}
		}
	}
	return want, users
}

// undefinedRE matches modpost's "symbol is not exported" error.
var undefinedRE = regexp.MustCompile(`modpost: "([^"]+)" \[[^\]]*\] undefined!`)

// stockUndefinedHint explains modpost's undefined symbols in stock mode,
// where they mean Microsoft's kernel (its Module.symvers rebuilt from the
// image) does not export them: "" when the log has none or the kernel is
// not a stock entry.
func stockUndefinedHint(o ModulesOptions, r *ModuleResult) string {
	if o.Kernel.Meta.Mode != manifest.ModeStock {
		return ""
	}
	b, err := os.ReadFile(r.LogPath)
	if err != nil {
		return ""
	}
	var syms []string
	seen := map[string]bool{}
	for _, m := range undefinedRE.FindAllStringSubmatch(string(b), -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			syms = append(syms, m[1])
		}
	}
	if len(syms) == 0 {
		return ""
	}
	list := strings.Join(syms[:min(len(syms), 5)], ", ")
	if len(syms) > 5 {
		list += fmt.Sprintf(" and %d more", len(syms)-5)
	}
	if r.unit != nil {
		return fmt.Sprintf("; Microsoft's kernel does not export %s, which the in-tree %s (%s) needs: "+
			"the fragment's options cannot be built as modules of the stock kernel (use kernel: build)", list, r.unit.Dir, strings.Join(r.unit.Selected, ", "))
	}
	return fmt.Sprintf("; Microsoft's kernel does not export %s: the config prepared is not the one the stock kernel was built with, "+
		"or the module needs symbols that kernel lacks (use kernel: build)", list)
}

// warn adds a line to the module's log without failing it.
func (r *ModuleResult) warn(msg string) {
	r.Warnings = append(r.Warnings, msg)
	appendLog(r.LogPath, "==> WARNING: "+msg)
}

// progressWriter passes symcrc's log lines (which name symcrc) to the
// progress reporter.
type progressWriter struct{ o ModulesOptions }

func (w progressWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if l != "" {
			w.o.Progress.Printf("%s", l)
		}
	}
	return len(p), nil
}

var _ io.Writer = progressWriter{}
