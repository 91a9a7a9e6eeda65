package devel

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// RetargetOptions say which target a tree's host programs are rebuilt for.
type RetargetOptions struct {
	// Arch is the target architecture: arm64 or x86_64.
	Arch string
	// CrossCompile is the toolchain prefix (e.g. "aarch64-linux-gnu-");
	// its gcc must link userspace programs for the target (the
	// gcc-aarch64-linux-gnu and libc6-dev-arm64-cross packages on Debian).
	CrossCompile string
	// Jobs is make's -j (default: the number of CPUs).
	Jobs int
	// Log receives make's output (may be nil).
	Log io.Writer
}

// Retargeted lists what Retarget did.
type Retargeted struct {
	// Rebuilt are the host programs rebuilt for the target; Removed are
	// host programs under scripts/ that external module builds do not run
	// and that could not be rebuilt from the tree alone (sorttable needs
	// the kernel's tools/include), so they were left out rather than
	// shipped for the wrong machine. Paths are relative, with slashes.
	Rebuilt, Removed []string
}

// Retarget writes dest, a copy of the kernel-devel tree host whose kbuild
// host programs (fixdep, modpost, genksyms, recordmcount) are rebuilt for
// the target architecture with the cross compiler, the way the kernel's
// own install-extmod-build does since 6.12 when CC and HOSTCC differ: an
// external-module build (KBUILD_EXTMOD=dest) of dest's scripts/ against
// host, whose native fixdep drives the build. host is only read. It works
// for trees of kernels whose install-extmod-build cannot cross-build (6.6)
// and for kbuild.CopyDevel trees. objtool and resolve_btfids (built by the
// tools build system) are not rebuilt; Verify reports them. dest is
// written atomically and must not exist.
func Retarget(ctx context.Context, host, dest string, o RetargetOptions) (*Retargeted, error) {
	a, cc, err := retargetTarget(o)
	if err != nil {
		return nil, err
	}
	host, err = develTreeDir(host)
	if err != nil {
		return nil, err
	}
	out, err := atomicfile.CreateDir(dest, false)
	if err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}
	defer out.Abort()
	tmp, err := filepath.Abs(out.Tmp)
	if err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}
	if err := atomicfile.CopyTree(ctx, host, tmp, atomicfile.CopyOptions{Merge: true}); err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}
	res, plan, err := planRetarget(host, tmp)
	if err != nil {
		return nil, err
	}
	if err := writeExtmodKbuild(host, tmp, plan); err != nil {
		return nil, err
	}
	if err := rebuildPrograms(ctx, host, tmp, a, cc, o, res.Rebuilt); err != nil {
		return nil, err
	}
	if err := checkRebuilt(tmp, res.Rebuilt, a, cc); err != nil {
		return nil, err
	}
	if err := out.Commit(); err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}
	return res, nil
}

// retargetTarget checks o and returns the target architecture and the
// cross compiler's gcc, which must be on PATH.
func retargetTarget(o RetargetOptions) (archInfo, string, error) {
	a, ok := lookupArch(o.Arch)
	if !ok {
		return archInfo{}, "", fmt.Errorf("devel: retarget: unknown architecture %q (want x86_64 or arm64)", o.Arch)
	}
	if o.CrossCompile == "" {
		return archInfo{}, "", errors.New("devel: retarget: no cross-compiler prefix given")
	}
	cc := o.CrossCompile + "gcc"
	if _, err := exec.LookPath(cc); err != nil {
		return archInfo{}, "", fmt.Errorf("devel: retarget: %s (on Debian: apt-get install gcc-%s libc6-dev-%s-cross): %w",
			cc, strings.TrimSuffix(o.CrossCompile, "-"), debArch(a), err)
	}
	return a, cc, nil
}

// develTreeDir returns host as an absolute path, checking that it looks
// like a kernel-devel tree (has a top-level Makefile).
func develTreeDir(host string) (string, error) {
	host, err := filepath.Abs(host)
	if err != nil {
		return "", fmt.Errorf("devel: retarget: %w", err)
	}
	if _, err := os.Stat(filepath.Join(host, "Makefile")); err != nil {
		return "", fmt.Errorf("devel: retarget: %s is not a kernel-devel tree: %w", host, err)
	}
	return host, nil
}

// retargetPlan is what the external build of scripts/ compiles: the
// subdirectories with their own Kbuild, the single programs of scripts/
// and modpost's objects (empty if the tree has no modpost).
type retargetPlan struct {
	subdirs, single []string
	modpostObjs     string
}

// planRetarget sorts the host programs under tmp's scripts/ into those
// rebuilt and those removed (removing the latter from tmp), and checks
// that fixdep and modpost are among the rebuilt. host names the tree in
// errors.
func planRetarget(host, tmp string) (*Retargeted, retargetPlan, error) {
	res := &Retargeted{}
	var plan retargetPlan
	progs, err := elfPrograms(filepath.Join(tmp, "scripts"))
	if err != nil {
		return nil, plan, fmt.Errorf("devel: retarget: %w", err)
	}
	for _, p := range progs {
		switch p {
		case "basic/fixdep":
			plan.subdirs = append(plan.subdirs, "basic")
		case "genksyms/genksyms":
			plan.subdirs = append(plan.subdirs, "genksyms")
		case "mod/modpost":
			objs, err := modpostObjects(host, tmp)
			if err != nil {
				return nil, plan, err
			}
			plan.modpostObjs = objs
		case "recordmcount":
			plan.single = append(plan.single, p)
		default:
			if err := os.Remove(filepath.Join(tmp, "scripts", filepath.FromSlash(p))); err != nil {
				return nil, plan, fmt.Errorf("devel: retarget: %w", err)
			}
			res.Removed = append(res.Removed, "scripts/"+p)
			continue
		}
		res.Rebuilt = append(res.Rebuilt, "scripts/"+p)
	}
	for _, need := range []string{"scripts/basic/fixdep", "scripts/mod/modpost"} {
		if !slices.Contains(res.Rebuilt, need) {
			return nil, plan, fmt.Errorf("devel: retarget: %s has no %s program to rebuild (not a kernel-devel tree?)", host, need)
		}
	}
	return res, plan, nil
}

// modpostObjsRe matches the modpost-objs line of scripts/mod/Makefile.
var modpostObjsRe = regexp.MustCompile(`(?m)^modpost-objs\s*:=\s*(.+)$`)

// modpostObjects returns the objects modpost is linked from, read from
// tmp's scripts/mod/Makefile (host names the file in errors).
func modpostObjects(host, tmp string) (string, error) {
	mk, err := os.ReadFile(filepath.Join(tmp, "scripts", "mod", "Makefile"))
	if err != nil {
		return "", fmt.Errorf("devel: retarget: %w", err)
	}
	m := modpostObjsRe.FindSubmatch(mk)
	if m == nil {
		return "", fmt.Errorf("devel: retarget: %s: no modpost-objs line", filepath.Join(host, "scripts", "mod", "Makefile"))
	}
	return strings.TrimSpace(string(m[1])), nil
}

// writeExtmodKbuild writes the Kbuild files of the external build:
// tmp/Kbuild descends into scripts/, whose Kbuild (taking precedence over
// its Makefile) names only the programs external module builds run.
func writeExtmodKbuild(host, tmp string, plan retargetPlan) error {
	single := plan.single
	var kb strings.Builder
	fmt.Fprintf(&kb, "subdir-y := %s\n", strings.Join(plan.subdirs, " "))
	if plan.modpostObjs != "" {
		single = append(single, "mod/modpost")
		fmt.Fprintf(&kb, "mod/modpost-objs := $(addprefix mod/, %s)\n", plan.modpostObjs)
	}
	fmt.Fprintf(&kb, "hostprogs-always-y := %s\n", strings.Join(single, " "))
	scriptsKbuild := filepath.Join(tmp, "scripts", "Kbuild")
	if _, err := os.Lstat(scriptsKbuild); err == nil {
		return fmt.Errorf("devel: retarget: %s already has scripts/Kbuild", host)
	}
	if err := os.WriteFile(filepath.Join(tmp, "Kbuild"), []byte("subdir-y := scripts\n"), 0o644); err != nil {
		return fmt.Errorf("devel: retarget: %w", err)
	}
	if err := os.WriteFile(scriptsKbuild, []byte(kb.String()), 0o644); err != nil {
		return fmt.Errorf("devel: retarget: %w", err)
	}
	return nil
}

// rebuildPrograms rebuilds the programs rebuilt (relative to tmp) for the
// target with an external build of tmp's scripts/ against host, then
// removes the Kbuild files writeExtmodKbuild wrote and the build's
// intermediates.
func rebuildPrograms(ctx context.Context, host, tmp string, a archInfo, cc string, o RetargetOptions, rebuilt []string) error {
	// Remove the host binaries first, so that a program make does not
	// rebuild is missing (and caught by checkRebuilt) rather than left
	// for the wrong machine.
	for _, p := range rebuilt {
		if err := os.Remove(filepath.Join(tmp, filepath.FromSlash(p))); err != nil {
			return fmt.Errorf("devel: retarget: %w", err)
		}
	}
	started := time.Now().Add(-time.Second)
	if err := runRetargetMake(ctx, host, tmp, a, cc, o); err != nil {
		return err
	}
	for _, f := range []string{filepath.Join(tmp, "Kbuild"), filepath.Join(tmp, "scripts", "Kbuild")} {
		if err := os.Remove(f); err != nil {
			return fmt.Errorf("devel: retarget: %w", err)
		}
	}
	if err := dropIntermediates(host, tmp, rebuilt, started); err != nil {
		return fmt.Errorf("devel: retarget: %w", err)
	}
	return nil
}

// runRetargetMake runs the external build (KBUILD_EXTMOD=tmp) of scripts/
// against host with the cross compiler as HOSTCC, its output going to
// o.Log; a failure's error carries the output's last lines.
func runRetargetMake(ctx context.Context, host, tmp string, a archInfo, cc string, o RetargetOptions) error {
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	args := []string{"-C", host, fmt.Sprintf("-j%d", jobs), "ARCH=" + a.arch, "CROSS_COMPILE=" + o.CrossCompile,
		"HOSTCC=" + cc, "KBUILD_EXTMOD=" + tmp, "scripts/"}
	cmd := exec.CommandContext(ctx, "make", args...)
	cmd.Env = makeEnv()
	cmd.Dir = tmp
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if o.Log != nil {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&buf, o.Log), io.MultiWriter(&buf, o.Log)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("devel: retarget: make %s: %w\n%s", strings.Join(args, " "), err, tailLines(buf.String(), 20))
	}
	return nil
}

// dropIntermediates removes the build's intermediates (objects, .cmd
// files) from tmp, as install-extmod-build does, and puts back the host
// tree's copy of any other file make regenerated since started (bison's
// parse.tab.h embeds the output path in its include guard), so only the
// rebuilt programs differ from host.
func dropIntermediates(host, tmp string, rebuilt []string, started time.Time) error {
	return filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel := mustRel(tmp, p)
		n := d.Name()
		if slices.Contains(rebuilt, filepath.ToSlash(rel)) {
			return nil
		}
		hfi, statErr := os.Lstat(filepath.Join(host, rel))
		if statErr != nil {
			if strings.HasSuffix(n, ".o") || (strings.HasPrefix(n, ".") && strings.HasSuffix(n, ".cmd")) {
				return os.Remove(p)
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !hfi.Mode().IsRegular() || fi.ModTime().Before(started) {
			return nil
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		return atomicfile.CopyFile(filepath.Join(host, rel), p, hfi.Mode().Perm())
	})
}

// checkRebuilt checks that every rebuilt program (relative to tmp) exists
// and is built for the target machine.
func checkRebuilt(tmp string, rebuilt []string, a archInfo, cc string) error {
	for _, p := range rebuilt {
		m, err := elfMachine(filepath.Join(tmp, filepath.FromSlash(p)))
		if err != nil {
			return fmt.Errorf("devel: retarget: %s was not rebuilt: %w", p, err)
		}
		if m != a.machine {
			return fmt.Errorf("devel: retarget: %s was built for %s, not %s (is %s a %s compiler?)", p, machineName(m), a.uname, cc, a.uname)
		}
	}
	return nil
}

func mustRel(base, p string) string {
	r, _ := filepath.Rel(base, p)
	return r
}

func debArch(a archInfo) string {
	if a.arch == "x86_64" {
		return "amd64"
	}
	return a.arch
}

// makeEnv is the environment without variables that change a kbuild run.
func makeEnv() []string {
	env := safeenv.Environ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARCH", "CROSS_COMPILE", "KBUILD_OUTPUT", "O", "M", "CC", "HOSTCC",
		"KBUILD_EXTMOD", "KERNELRELEASE", "LANG", "LC_ALL")
	return append(env, "LC_ALL=C")
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// elfPrograms lists the ELF executables under dir (relative, slashes).
func elfPrograms(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		if m, err := elfMachine(p); err == nil && m != elf.EM_NONE {
			f, _ := elf.Open(p)
			if f != nil {
				exec := f.Type == elf.ET_EXEC || (f.Type == elf.ET_DYN && hasInterp(f))
				f.Close()
				if exec {
					out = append(out, filepath.ToSlash(mustRel(dir, p)))
				}
			}
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// elfMachine returns the ELF machine of a file (an error if not ELF).
func elfMachine(p string) (elf.Machine, error) {
	f, err := elf.Open(p)
	if err != nil {
		return elf.EM_NONE, err
	}
	defer f.Close()
	return f.Machine, nil
}
