package modbuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/dkms"
	"github.com/wsl-modules/wsl-modules-action/internal/jobserver"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// prepareSource puts the module's source into r.dir, reads its dkms.conf
// if any, checks there is something to build and scans the symbols.
func prepareSource(ctx context.Context, o ModulesOptions, m *modlist.Module, r *ModuleResult) error {
	os.RemoveAll(r.dir)
	switch {
	case r.unit != nil:
		return prepareInTree(ctx, o, r)
	case m.Kind() == modlist.KindPath:
		srcDir := o.List.SourceDir(m)
		st, err := os.Stat(srcDir)
		if err != nil {
			return fmt.Errorf("%s: modules[%s].path: %w", o.List.File, m.Name, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("%s: modules[%s].path: %s is not a directory", o.List.File, m.Name, srcDir)
		}
		if err := atomicfile.CopyTree(ctx, srcDir, r.dir, atomicfile.CopyOptions{}); err != nil {
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
	return scanSymbols(r, nil)
}

// scanSymbols records the symbols the build copy's sources export and
// the identifiers they use (for the dependency order); only, if not nil,
// limits the scan to those files.
func scanSymbols(r *ModuleResult, only map[string]bool) error {
	r.exports, r.idents = map[string]bool{}, map[string]bool{}
	return filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() || !(strings.HasSuffix(p, ".c") || strings.HasSuffix(p, ".h")) || only != nil && !only[p] {
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

// buildOne builds and installs one module: a DKMS package (dkms.conf at
// the top of its source) the way dkms build does, anything else with
// make -C <kernel-devel> M=<copy> modules.
func buildOne(ctx context.Context, o ModulesOptions, js *jobserver.Jobserver, tc kbuild.Toolchain, kcfg kconfig.Config, m *modlist.Module, r *ModuleResult, vars modlist.TemplateVars, extraSymbols []string) error {
	logf, err := os.OpenFile(r.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args, err := m.MakeArgs(vars)
	if err != nil {
		return err
	}
	if r.unit != nil {
		args = append(args, r.unit.MakeArgs(r.dir)...)
	}
	env := moduleEnv(tc, extraSymbols)
	fmt.Fprintf(logf, "==> module %s against %s (%s)\n", m.Name, o.Kernel.Meta.Release, o.Kernel.DevelDir())
	if len(extraSymbols) > 0 {
		fmt.Fprintf(logf, "==> KBUILD_EXTRA_SYMBOLS=%s (depends on %s)\n", strings.Join(extraSymbols, " "), strings.Join(r.deps, ", "))
	}
	u := stepCounter(o, m.Name)
	out := io.MultiWriter(logf, u.Writer())
	defer func() { r.Steps = u.Count() }()
	var b *built
	if _, err := os.Stat(filepath.Join(r.dir, "dkms.conf")); err == nil {
		b, err = buildDKMS(ctx, o, js, tc, m, r, args, env, out)
		if err != nil || b == nil {
			return err // b == nil: excluded, r says why
		}
	} else if b, err = buildKbuild(ctx, o, js, tc, m, r, args, env, out); err != nil {
		return err
	}
	u.Done()
	if err := b.install(ctx, o, tc, r, logf); err != nil {
		return err
	}
	fmt.Fprintf(logf, "==> installed %s\n", strings.Join(r.Files, " "))
	return nil
}

// stepCounter counts the kbuild steps of a module's make output, toward
// the count of its previous build when there is one, reporting at most
// once a minute (a long module build shows its progress; a short one
// only its final count).
func stepCounter(o ModulesOptions, name string) *progress.Units {
	total, from := o.PreviousSteps[name], ""
	if total > 0 {
		from = "the previous build of this module"
	}
	return o.Progress.Units("module "+name+": make", total, from, time.Minute)
}

// built is what a module build produced.
type built struct {
	// files are the .ko files to install.
	files []builtFile
	// symvers is the build's Module.symvers ("" if none).
	symvers string
}

type builtFile struct {
	from  string // absolute path of the .ko
	rel   string // where it goes, relative to ModulesDir
	strip bool
}

// buildKbuild builds a plain Kbuild directory in place (r.dir) and
// installs every .ko it produced into extra/<name>/.
func buildKbuild(ctx context.Context, o ModulesOptions, js *jobserver.Jobserver, tc kbuild.Toolchain, m *modlist.Module, r *ModuleResult, args, env []string, logf io.Writer) (*built, error) {
	a := append([]string{"-C", o.Kernel.DevelDir(), "M=" + r.dir}, tc.MakeVars...)
	a = append(a, args...)
	a = append(a, "modules")
	fmt.Fprintf(logf, "==> make %s\n", strings.Join(a, " "))
	cmd := exec.Command("make", a...)
	cmd.Dir = r.dir
	// Makefiles use $(PWD) for M=; it must be the build copy.
	cmd.Env = append(env, "PWD="+r.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := js.Run(ctx, cmd); err != nil {
		return nil, fmt.Errorf("build failed: %w", err)
	}
	b := &built{}
	if r.unit != nil {
		var err error
		if b.files, err = inTreeFiles(ctx, o, r); err != nil {
			return nil, err
		}
	} else {
		filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".ko") {
				b.files = append(b.files, builtFile{from: p, rel: "extra/" + m.Name + "/" + filepath.Base(p), strip: true})
			}
			return nil
		})
	}
	if len(b.files) == 0 {
		return nil, errors.New("the build produced no .ko file")
	}
	if _, err := os.Stat(filepath.Join(r.dir, "Module.symvers")); err == nil {
		b.symvers = filepath.Join(r.dir, "Module.symvers")
	} else {
		b.symvers = firstSymvers(r.dir)
	}
	return b, nil
}

// buildDKMS builds a DKMS package with internal/dkms in a private DKMS
// tree, WorkDir/.dkms/<name>/ (a list name never starts with a dot):
// $source_tree is its source/ (linking to the copy in r.dir), $dkms_tree
// its tree/, so MAKE[] runs in tree/<PACKAGE_NAME>/<PACKAGE_VERSION>/build
// as dkms.conf files expect. It returns nil, nil when BUILD_EXCLUSIVE
// excludes the package (r is then marked skipped with DKMS's message).
func buildDKMS(ctx context.Context, o ModulesOptions, js *jobserver.Jobserver, tc kbuild.Toolchain, m *modlist.Module, r *ModuleResult, args, env []string, logf io.Writer) (*built, error) {
	root := filepath.Join(o.WorkDir, ".dkms", m.Name)
	if err := os.RemoveAll(root); err != nil {
		return nil, err
	}
	dv := dkms.Vars{KernelVer: o.Kernel.Meta.Release, KernelSourceDir: o.Kernel.DevelDir(), Arch: tc.UnameArch,
		DKMSTree: filepath.Join(root, "tree"), SourceTree: filepath.Join(root, "source")}
	c, err := dkms.ReadConf(ctx, filepath.Join(r.dir, "dkms.conf"), dv)
	if err != nil {
		return nil, fmt.Errorf("%s: module %s: %w", o.List.File, m.Name, err)
	}
	r.dkms, r.Version = c, c.PackageVersion
	if c.Messages != "" {
		fmt.Fprintf(logf, "%s\n", c.Messages)
	}
	for _, n := range c.Notes {
		fmt.Fprintf(logf, "==> dkms: %s\n", n)
	}
	if c.Excluded != "" {
		fmt.Fprintf(logf, "==> skipped: %s\n", c.ExcludedMessage())
		r.Status, r.Error = manifest.StatusSkipped, c.ExcludedMessage()
		return nil, nil
	}
	res, err := dkms.Build(ctx, dkms.BuildOptions{Conf: c, Vars: dv, Source: r.dir, Env: env, MakeArgs: args,
		Log: logf, Run: func(cmd *exec.Cmd) error { return js.Run(ctx, cmd) }})
	if err != nil {
		return nil, err
	}
	b := &built{}
	for _, mod := range res.Modules {
		b.files = append(b.files, builtFile{from: filepath.Join(res.BuildDir, filepath.FromSlash(mod.Built())),
			rel: dkms.DestDir(mod.DestLocation) + "/" + m.Name + "/" + mod.DestName + ".ko", strip: mod.Strip})
	}
	// Packages that run several makes (jool) have several
	// Module.symvers; dependents need all of them.
	b.symvers, err = mergeSymvers(res.BuildDir, filepath.Join(root, "Module.symvers"))
	return b, err
}

// install copies the built modules into ModulesDir, strips them unless
// the package says not to, signs them when the kernel signs its own
// (build mode with CONFIG_MODULE_SIG), and records them in r.
func (b *built) install(ctx context.Context, o ModulesOptions, tc kbuild.Toolchain, r *ModuleResult, logf *os.File) error {
	seen := map[string]bool{}
	for _, f := range b.files {
		if seen[path.Base(f.rel)] {
			return fmt.Errorf("two built modules are named %s", path.Base(f.rel))
		}
		seen[path.Base(f.rel)] = true
		to := filepath.Join(o.ModulesDir, filepath.FromSlash(f.rel))
		if err := atomicfile.CopyFile(f.from, to, 0); err != nil {
			return err
		}
		if f.strip {
			strip := exec.CommandContext(ctx, tc.CrossCompile+"strip", "--strip-debug", to)
			strip.Stdout, strip.Stderr = logf, logf
			if err := strip.Run(); err != nil {
				return fmt.Errorf("strip %s: %w", f.rel, err)
			}
		}
		// After stripping, as modules_install does: stripping would drop
		// the signature.
		if err := o.Kernel.SignModule(ctx, to); err != nil {
			return err
		}
		r.Files = append(r.Files, f.rel)
	}
	sort.Strings(r.Files)
	r.Symvers = b.symvers
	return nil
}

// firstSymvers returns the first Module.symvers under dir, or "".
func firstSymvers(dir string) string {
	found := ""
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && found == "" && d.Type().IsRegular() && d.Name() == "Module.symvers" {
			found = p
		}
		return nil
	})
	return found
}

// mergeSymvers writes every Module.symvers under dir, in walk order, into
// one file at dst and returns dst ("" when there is none).
func mergeSymvers(dir, dst string) (string, error) {
	var all []byte
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || d.Name() != "Module.symvers" {
			return err
		}
		b, err := os.ReadFile(p)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		all = append(all, b...)
		return err
	})
	if err != nil || len(all) == 0 {
		return "", err
	}
	return dst, os.WriteFile(dst, all, 0o644)
}

// BuildDir is where module name was built under workDir (the
// ModulesOptions.WorkDir of its build): a DKMS package's
// tree/<PACKAGE_NAME>/<PACKAGE_VERSION>/build when one exists, otherwise
// the build copy workDir/<name>. Compiler messages name files there.
func BuildDir(workDir, name string) string {
	builds, _ := filepath.Glob(filepath.Join(workDir, ".dkms", name, "tree", "*", "*", "build"))
	if len(builds) == 1 {
		return builds[0]
	}
	return filepath.Join(workDir, name)
}
