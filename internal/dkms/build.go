package dkms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// BuildOptions control Build.
type BuildOptions struct {
	// Conf is the package's dkms.conf as ReadConf read it, with Vars.
	Conf *Conf
	Vars Vars
	// Source is the package's source directory (holding dkms.conf). It
	// becomes $source_tree/<name>-<version> (a link, unless it is that
	// directory already) and is never written to.
	Source string
	// Env is the environment of the package's commands. DKMS unsets CC
	// for CLEAN and MAKE and sets it for PRE_BUILD (Conf.PreBuildCC).
	Env []string
	// MakeArgs are extra arguments for the first make of the build
	// command, after the KERNELRELEASE= that DKMS adds.
	MakeArgs []string
	// Run runs CLEAN and the build command (the caller's make
	// jobserver); nil runs them directly.
	Run func(*exec.Cmd) error
	// Log receives DKMS's messages and the commands' output.
	Log io.Writer
}

// Result is a successful build.
type Result struct {
	// BuildDir is $dkms_tree/<name>/<version>/build.
	BuildDir string
	// Modules are the built modules, as Conf.Modules.
	Modules []Module
}

// ErrExcluded is wrapped by Build's error for a package whose
// BUILD_EXCLUSIVE directives do not match (dkms build exits with 77).
var ErrExcluded = errors.New("excluded by BUILD_EXCLUSIVE")

// Build builds a package as `dkms build` (3.0.10, prepare_build and
// actual_build) does: the sources are linked into $source_tree and
// $dkms_tree/<name>/<version>/source and copied (cp -a) to
// $dkms_tree/<name>/<version>/build; the PATCH[] files that apply are
// applied there with patch -p1; PRE_BUILD runs there (its failure does not
// stop DKMS); CLEAN and then the build command run there through bash's
// eval, with DKMS's variables defined, the first "make" becoming
// "make KERNELRELEASE=<kernelver>" (DKMS also adds -j<cpus>; here the
// caller's jobserver sets the parallelism); every BUILT_MODULE must exist;
// POST_BUILD runs last. Errors carry DKMS's wording.
func Build(ctx context.Context, o BuildOptions) (*Result, error) {
	c, v := o.Conf, o.Vars
	if c.Excluded != "" {
		return nil, fmt.Errorf("dkms: %w: %s", ErrExcluded, c.ExcludedMessage())
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Run == nil {
		o.Run = func(cmd *exec.Cmd) error { return cmd.Run() }
	}
	build := v.BuildDir(c.PackageName, c.PackageVersion)
	if err := layout(o); err != nil {
		return nil, fmt.Errorf("dkms: %w", err)
	}
	if err := applyPatches(ctx, o, build); err != nil {
		return nil, err
	}
	noCC := withoutCC(o.Env)
	pre := o.Env
	if c.PreBuildCC != "" {
		pre = append(append([]string{}, noCC...), "CC="+c.PreBuildCC)
	}
	runScript(ctx, o, "pre_build", c.PreBuild, build, pre)

	fmt.Fprintf(o.Log, "\nBuilding module:\n")
	fmt.Fprintf(o.Log, "==> dkms: Cleaning build area: %s\n", c.Clean)
	if err := o.Run(shell(ctx, o, noCC, c.Clean)); err != nil {
		fmt.Fprintf(o.Log, "==> dkms: cleaning: %v (DKMS ignores it)\n", err)
	}
	line := makeLine(c.MakeCommand, v.KernelVer, o.MakeArgs)
	fmt.Fprintf(o.Log, "==> dkms: %s\n", line)
	if err := o.Run(shell(ctx, o, noCC, "{ "+line+"; }")); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("dkms: Bad return status for module build on kernel: %s (%s) (%v). Consult the build log for more information", v.KernelVer, v.Arch, err)
	}
	for _, m := range c.Modules {
		if _, err := os.Stat(filepath.Join(build, m.Built())); err != nil {
			return nil, fmt.Errorf("dkms: Build of %s.ko failed for: %s (%s). Make sure the name of the generated module is correct and at the root of the build directory (%s), or consult the build log for more information",
				m.BuiltLocation+m.BuiltName, v.KernelVer, v.Arch, build)
		}
	}
	runScript(ctx, o, "post_build", c.PostBuild, build, noCC)
	return &Result{BuildDir: build, Modules: c.Modules}, nil
}

// layout makes DKMS's directories: $source_tree/<name>-<version>,
// $dkms_tree/<name>/<version>/source linking to it, and a fresh build
// directory copied from it.
func layout(o BuildOptions) error {
	c, v := o.Conf, o.Vars
	src := v.SourceDir(c.PackageName, c.PackageVersion)
	if err := os.MkdirAll(v.SourceTree, 0o755); err != nil {
		return err
	}
	if abs, _ := filepath.Abs(o.Source); abs != src {
		os.Remove(src)
		if err := os.Symlink(abs, src); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if len(ents) < 2 {
		return fmt.Errorf("The directory %s does not appear to have module source located within it. Build halted", src)
	}
	if _, err := os.Stat(filepath.Join(v.KernelSourceDir, "include")); err != nil {
		return fmt.Errorf("Your kernel headers for kernel %s cannot be found at %s", v.KernelVer, v.KernelSourceDir)
	}
	pkg := v.PackageDir(c.PackageName, c.PackageVersion)
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		return err
	}
	link := filepath.Join(pkg, "source")
	os.Remove(link)
	if err := os.Symlink(src, link); err != nil {
		return err
	}
	fmt.Fprintf(o.Log, "Creating symlink %s -> %s\n", link, src)
	build := v.BuildDir(c.PackageName, c.PackageVersion)
	if err := os.RemoveAll(build); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", link+"/", build).CombinedOutput(); err != nil {
		return fmt.Errorf("copying %s to %s: %v: %s", src, build, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// applyPatches applies the selected PATCH[] files in the build directory.
func applyPatches(ctx context.Context, o BuildOptions, build string) error {
	for _, p := range o.Conf.Patches {
		pf := filepath.Join(build, "patches", p)
		f, err := os.Open(pf)
		if err != nil {
			return fmt.Errorf("dkms: Patch %s as specified in dkms.conf cannot be found in %s/patches/", p, build)
		}
		fmt.Fprintf(o.Log, "==> dkms: applying patch %s: patch -p1 < ./patches/%s\n", p, p)
		cmd := exec.CommandContext(ctx, "patch", "-p1", "--forward", "--batch")
		cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.Env = build, f, o.Log, o.Log, o.Env
		err = cmd.Run()
		f.Close()
		if err != nil {
			return fmt.Errorf("dkms: Application of patch %s failed (%v). Check %s for more information", p, err, build)
		}
	}
	return nil
}

// runScript runs PRE_BUILD or POST_BUILD as DKMS does: the first word is a
// path relative to the build directory that must be executable; the rest
// of the value is split into arguments by the shell (unquoted). Its
// failure is logged: DKMS does not stop for it.
func runScript(ctx context.Context, o BuildOptions, kind, script, dir string, env []string) {
	if script == "" {
		return
	}
	run := filepath.Join(dir, script)
	exe, _, _ := strings.Cut(run, " ")
	fmt.Fprintf(o.Log, "\n")
	if st, err := os.Stat(exe); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		fmt.Fprintf(o.Log, "Warning: The %s script is not executable.\n", kind)
		return
	}
	fmt.Fprintf(o.Log, "Running the %s script:\n", kind)
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", `shopt -s extglob; cd "$1" && exec $2`, kind, dir, run)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, o.Log, o.Log
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(o.Log, "==> dkms: the %s script failed: %v (DKMS goes on with the build)\n", kind, err)
	}
}

// buildScript runs $1 with eval in the build directory, with the shell
// variables DKMS has defined when it evaluates CLEAN and MAKE[], and CC as
// DKMS sets it there (from .kernelvariables, else unset).
const buildScript = `shopt -s extglob
kernelver=$2 arch=$3 kernel_source_dir=$4 dkms_tree=$5 source_tree=$6 module=$7 module_version=$8
kernel_config=$kernel_source_dir/.config PACKAGE_NAME=$module PACKAGE_VERSION=$module_version
build_dir=$dkms_tree/$module/$module_version/build
base_dir=$dkms_tree/$module/$module_version/$kernelver/$arch
if [ -f "$kernel_source_dir/.kernelvariables" ]; then
	export CC=$(echo -e "show-%:\n\t@echo \$(\$*)\ninclude $kernel_source_dir/.kernelvariables" | make -f - show-CC)
else
	unset CC
fi
cd "$build_dir" || exit 1
eval "$1"
`

func shell(ctx context.Context, o BuildOptions, env []string, line string) *exec.Cmd {
	v, c := o.Vars, o.Conf
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", buildScript, "dkms", line,
		v.KernelVer, v.Arch, v.KernelSourceDir, v.DKMSTree, v.SourceTree, c.PackageName, c.PackageVersion)
	cmd.Dir = v.BuildDir(c.PackageName, c.PackageVersion)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	return cmd
}

// makeLine is DKMS's ${make_command/#make/make -j<n> KERNELRELEASE=<kernelver>}
// without -j, with the extra arguments after KERNELRELEASE=.
func makeLine(cmd, kernelver string, args []string) string {
	rest, ok := strings.CutPrefix(cmd, "make")
	if !ok {
		return cmd
	}
	head := "make KERNELRELEASE=" + ShellQuote(kernelver)
	for _, a := range args {
		head += " " + ShellQuote(a)
	}
	return head + rest
}

// ShellQuote quotes s for bash.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,/=+:@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func withoutCC(env []string) []string {
	out := make([]string, 0, len(env))
	for _, e := range env {
		if !strings.HasPrefix(e, "CC=") {
			out = append(out, e)
		}
	}
	return out
}

// Environ is the default environment for Build: this process's, less its
// secrets and the variables DKMS defines itself.
func Environ() []string { return safeenv.Environ(scriptVars...) }
