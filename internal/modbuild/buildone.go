package modbuild

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/dkms"
	"github.com/wsl-modules/wsl-modules-action/internal/jobserver"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
)

// prepareSource puts the module's source into r.dir, reads its dkms.conf
// if any, checks there is something to build and scans the symbols.
func prepareSource(ctx context.Context, o ModulesOptions, m *modlist.Module, r *ModuleResult) error {
	os.RemoveAll(r.dir)
	switch m.Kind() {
	case modlist.KindPath:
		srcDir := o.List.SourceDir(m)
		st, err := os.Stat(srcDir)
		if err != nil {
			return fmt.Errorf("%s: modules[%s].path: %w", o.List.File, m.Name, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("%s: modules[%s].path: %s is not a directory", o.List.File, m.Name, srcDir)
		}
		if err := kbuild.CopyTree(srcDir, r.dir); err != nil {
			return fmt.Errorf("copying %s: %w", srcDir, err)
		}
		r.Source = manifest.Source{Kind: "path", Path: m.Path}
		if d, err := digest.Tree(ctx, r.dir); err == nil {
			r.Source.SHA256 = d
		}
	default:
		if o.Fetch == nil {
			return fmt.Errorf("%s: modules[%s]: %s sources need a fetcher, which this command does not have; use a path module", o.List.File, m.Name, m.Kind())
		}
		src, err := o.Fetch(ctx, *m, r.dir)
		if err != nil {
			return fmt.Errorf("fetching %s: %w", m.Name, err)
		}
		r.Source = src
	}
	_, errMk := os.Stat(filepath.Join(r.dir, "Makefile"))
	_, errKb := os.Stat(filepath.Join(r.dir, "Kbuild"))
	_, errDk := os.Stat(filepath.Join(r.dir, "dkms.conf"))
	if errMk != nil && errKb != nil && errDk != nil {
		return fmt.Errorf("%s: module %s: no Makefile, Kbuild or dkms.conf in %s; nothing to build", o.List.File, m.Name, sourceDesc(o, m))
	}
	r.exports, r.idents = map[string]bool{}, map[string]bool{}
	return filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() || !(strings.HasSuffix(p, ".c") || strings.HasSuffix(p, ".h")) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, x := range exportRE.FindAllSubmatch(b, -1) {
			r.exports[string(x[1])] = true
		}
		for _, x := range identRE.FindAll(b, -1) {
			r.idents[string(x)] = true
		}
		return nil
	})
}

func sourceDesc(o ModulesOptions, m *modlist.Module) string {
	if m.Kind() == modlist.KindPath {
		return o.List.SourceDir(m)
	}
	return m.Git + m.URL
}

// buildOne builds and installs one module.
func buildOne(ctx context.Context, o ModulesOptions, js *jobserver.Jobserver, tc kbuild.Toolchain, kcfg kconfig.Config, m *modlist.Module, r *ModuleResult, vars modlist.TemplateVars, extraSymbols []string) error {
	logf, err := os.OpenFile(r.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	devel := o.Kernel.DevelDir()
	dv := dkms.Vars{KernelVer: o.Kernel.Meta.Release, KernelSourceDir: devel, Arch: tc.UnameArch,
		DKMSTree: o.WorkDir, SourceTree: o.WorkDir, BuildDir: r.dir}
	args, err := m.MakeArgs(vars)
	if err != nil {
		return err
	}
	env := moduleEnv(tc, extraSymbols)
	fmt.Fprintf(logf, "==> module %s against %s (%s)\n", m.Name, o.Kernel.Meta.Release, devel)
	if len(extraSymbols) > 0 {
		fmt.Fprintf(logf, "==> KBUILD_EXTRA_SYMBOLS=%s (depends on %s)\n", strings.Join(extraSymbols, " "), strings.Join(r.deps, ", "))
	}

	var cmd *exec.Cmd
	if _, err := os.Stat(filepath.Join(r.dir, "dkms.conf")); err == nil {
		c, err := dkms.ReadConf(ctx, r.dir, dv)
		if err != nil {
			return err
		}
		r.dkms = c
		r.Version = c.PackageVersion
		why, err := c.Excluded(dv, kcfg)
		if err != nil {
			return err
		}
		if why != "" {
			fmt.Fprintf(logf, "==> skipped: %s\n", why)
			r.Status, r.Error = manifest.StatusSkipped, why
			return nil
		}
		if _, err := c.ApplyPatches(ctx, r.dir, dv, logf); err != nil {
			return err
		}
		if c.Make != "" {
			line := c.Make
			if len(args) > 0 {
				line += " " + shellQuote(args)
			}
			if len(tc.MakeVars) > 0 {
				line += " " + shellQuote(tc.MakeVars)
			}
			fmt.Fprintf(logf, "==> (dkms MAKE[0]) %s\n", line)
			cmd = exec.Command("bash", "--noprofile", "--norc", "-c", line)
			cmd.Env = append(env, dv.Env()...)
		}
	}
	if cmd == nil {
		a := append([]string{"-C", devel, "M=" + r.dir}, tc.MakeVars...)
		a = append(a, args...)
		a = append(a, "modules")
		fmt.Fprintf(logf, "==> make %s\n", strings.Join(a, " "))
		cmd = exec.Command("make", a...)
		cmd.Env = env
	}
	cmd.Dir = r.dir
	// Makefiles use $(PWD) for M=; it must be the build copy.
	cmd.Env = append(cmd.Env, "PWD="+r.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := js.Run(ctx, cmd); err != nil {
		return fmt.Errorf("build failed: %w", err)
	}

	// Collect and install.
	var kos, dests []string
	if r.dkms != nil && len(r.dkms.BuiltModuleName) > 0 {
		kos, dests = r.dkms.Modules()
	} else {
		filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".ko") {
				rel, _ := filepath.Rel(r.dir, p)
				kos = append(kos, filepath.ToSlash(rel))
				dests = append(dests, "extra")
			}
			return nil
		})
	}
	if len(kos) == 0 {
		return errors.New("the build produced no .ko file")
	}
	seen := map[string]bool{}
	for i, k := range kos {
		from := filepath.Join(r.dir, filepath.FromSlash(k))
		if _, err := os.Stat(from); err != nil {
			return fmt.Errorf("expected module %s was not built", k)
		}
		base := filepath.Base(k)
		if seen[base] {
			return fmt.Errorf("two built modules are named %s", base)
		}
		seen[base] = true
		rel := dests[i] + "/" + m.Name + "/" + base
		to := filepath.Join(o.ModulesDir, filepath.FromSlash(rel))
		if err := atomicfile.CopyFile(from, to, 0); err != nil {
			return err
		}
		strip := exec.CommandContext(ctx, tc.CrossCompile+"strip", "--strip-debug", to)
		strip.Stdout, strip.Stderr = logf, logf
		if err := strip.Run(); err != nil {
			return fmt.Errorf("strip %s: %w", rel, err)
		}
		r.Files = append(r.Files, rel)
	}
	sort.Strings(r.Files)
	for _, p := range []string{filepath.Join(r.dir, "Module.symvers")} {
		if _, err := os.Stat(p); err == nil {
			r.Symvers = p
		}
	}
	if r.Symvers == "" {
		filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && r.Symvers == "" && d.Name() == "Module.symvers" {
				r.Symvers = p
			}
			return nil
		})
	}
	fmt.Fprintf(logf, "==> installed %s\n", strings.Join(r.Files, " "))
	return nil
}
