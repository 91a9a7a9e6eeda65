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
	a, ok := lookupArch(o.Arch)
	if !ok {
		return nil, fmt.Errorf("devel: retarget: unknown architecture %q (want x86_64 or arm64)", o.Arch)
	}
	if o.CrossCompile == "" {
		return nil, errors.New("devel: retarget: no cross-compiler prefix given")
	}
	cc := o.CrossCompile + "gcc"
	if _, err := exec.LookPath(cc); err != nil {
		return nil, fmt.Errorf("devel: retarget: %s (on Debian: apt-get install gcc-%s libc6-dev-%s-cross): %w",
			cc, strings.TrimSuffix(o.CrossCompile, "-"), debArch(a), err)
	}
	host, err := filepath.Abs(host)
	if err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}
	if _, err := os.Stat(filepath.Join(host, "Makefile")); err != nil {
		return nil, fmt.Errorf("devel: retarget: %s is not a kernel-devel tree: %w", host, err)
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
	res := &Retargeted{}
	progs, err := elfPrograms(filepath.Join(tmp, "scripts"))
	if err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}

	// The Kbuild files of the external build: dest/Kbuild descends into
	// scripts/, whose Kbuild (taking precedence over its Makefile) names
	// only the programs external module builds run.
	var subdirs, single []string
	var modpostObjs string
	for _, p := range progs {
		switch p {
		case "basic/fixdep":
			subdirs = append(subdirs, "basic")
		case "genksyms/genksyms":
			subdirs = append(subdirs, "genksyms")
		case "mod/modpost":
			mk, err := os.ReadFile(filepath.Join(tmp, "scripts", "mod", "Makefile"))
			if err != nil {
				return nil, fmt.Errorf("devel: retarget: %w", err)
			}
			m := regexp.MustCompile(`(?m)^modpost-objs\s*:=\s*(.+)$`).FindSubmatch(mk)
			if m == nil {
				return nil, fmt.Errorf("devel: retarget: %s: no modpost-objs line", filepath.Join(host, "scripts", "mod", "Makefile"))
			}
			modpostObjs = strings.TrimSpace(string(m[1]))
		case "recordmcount":
			single = append(single, p)
		default:
			if err := os.Remove(filepath.Join(tmp, "scripts", filepath.FromSlash(p))); err != nil {
				return nil, fmt.Errorf("devel: retarget: %w", err)
			}
			res.Removed = append(res.Removed, "scripts/"+p)
			continue
		}
		res.Rebuilt = append(res.Rebuilt, "scripts/"+p)
	}
	for _, need := range []string{"scripts/basic/fixdep", "scripts/mod/modpost"} {
		if !slices.Contains(res.Rebuilt, need) {
			return nil, fmt.Errorf("devel: retarget: %s has no %s program to rebuild (not a kernel-devel tree?)", host, need)
		}
	}
	var kb strings.Builder
	fmt.Fprintf(&kb, "subdir-y := %s\n", strings.Join(subdirs, " "))
	if modpostObjs != "" {
		single = append(single, "mod/modpost")
		fmt.Fprintf(&kb, "mod/modpost-objs := $(addprefix mod/, %s)\n", modpostObjs)
	}
	fmt.Fprintf(&kb, "hostprogs-always-y := %s\n", strings.Join(single, " "))
	scriptsKbuild := filepath.Join(tmp, "scripts", "Kbuild")
	if _, err := os.Lstat(scriptsKbuild); err == nil {
		return nil, fmt.Errorf("devel: retarget: %s already has scripts/Kbuild", host)
	}
	if err := os.WriteFile(filepath.Join(tmp, "Kbuild"), []byte("subdir-y := scripts\n"), 0o644); err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}
	if err := os.WriteFile(scriptsKbuild, []byte(kb.String()), 0o644); err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}
	// Remove the host binaries first, so that a program make does not
	// rebuild is missing (and caught below) rather than left for the
	// wrong machine.
	for _, p := range res.Rebuilt {
		if err := os.Remove(filepath.Join(tmp, filepath.FromSlash(p))); err != nil {
			return nil, fmt.Errorf("devel: retarget: %w", err)
		}
	}
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	args := []string{"-C", host, fmt.Sprintf("-j%d", jobs), "ARCH=" + a.arch, "CROSS_COMPILE=" + o.CrossCompile,
		"HOSTCC=" + cc, "KBUILD_EXTMOD=" + tmp, "scripts/"}
	started := time.Now().Add(-time.Second)
	cmd := exec.CommandContext(ctx, "make", args...)
	cmd.Env = makeEnv()
	cmd.Dir = tmp
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if o.Log != nil {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&buf, o.Log), io.MultiWriter(&buf, o.Log)
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("devel: retarget: make %s: %w\n%s", strings.Join(args, " "), err, tailLines(buf.String(), 20))
	}
	for _, f := range []string{filepath.Join(tmp, "Kbuild"), scriptsKbuild} {
		if err := os.Remove(f); err != nil {
			return nil, fmt.Errorf("devel: retarget: %w", err)
		}
	}
	// Drop the build's intermediates (objects, .cmd files), as
	// install-extmod-build does; put back the host tree's copy of any other
	// file make regenerated (bison's parse.tab.h embeds the output path in
	// its include guard), so only the programs differ from host.
	err = filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel := mustRel(tmp, p)
		n := d.Name()
		if slices.Contains(res.Rebuilt, filepath.ToSlash(rel)) {
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
	if err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}
	for _, p := range res.Rebuilt {
		m, err := elfMachine(filepath.Join(tmp, filepath.FromSlash(p)))
		if err != nil {
			return nil, fmt.Errorf("devel: retarget: %s was not rebuilt: %w", p, err)
		}
		if m != a.machine {
			return nil, fmt.Errorf("devel: retarget: %s was built for %s, not %s (is %s a %s compiler?)", p, machineName(m), a.uname, cc, a.uname)
		}
	}
	if err := out.Commit(); err != nil {
		return nil, fmt.Errorf("devel: retarget: %w", err)
	}
	return res, nil
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
