package dkms

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"

	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// Conf is what a dkms.conf sets, as DKMS reads it.
type Conf struct {
	PackageName    string
	PackageVersion string
	// Make is MAKE[0]: the build command, run with sh -c (empty: the
	// default kbuild invocation).
	Make  string
	Clean string
	// Built modules: BUILT_MODULE_NAME[i] in BUILT_MODULE_LOCATION[i],
	// installed to DEST_MODULE_LOCATION[i].
	BuiltModuleName     []string
	BuiltModuleLocation []string
	DestModuleLocation  []string
	// BuildExclusiveKernel and BuildExclusiveArch are regular expressions
	// the kernel release and arch must match; BuildExclusiveConfig lists
	// CONFIG_X / !CONFIG_X requirements.
	BuildExclusiveKernel string
	BuildExclusiveArch   string
	BuildExclusiveConfig []string
	// Patches are PATCH[] file names under patches/, applied in order with
	// patch -p1; PatchMatch[i] (if set) is a regexp the kernel release
	// must match for Patches[i] to apply.
	Patches    []string
	PatchMatch []string
}

// Vars are the variables DKMS defines while it reads dkms.conf and
// runs MAKE[0].
type Vars struct {
	KernelVer       string // $kernelver
	KernelSourceDir string // $kernel_source_dir
	Arch            string // $arch (uname -m style: x86_64, aarch64)
	DKMSTree        string // $dkms_tree
	SourceTree      string // $source_tree
	BuildDir        string // the build directory (dkms.conf's directory copy)
}

// Env returns the environment for sourcing dkms.conf and running MAKE[0].
func (v Vars) Env() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"LC_ALL=C",
		"kernelver=" + v.KernelVer,
		"kernel_source_dir=" + v.KernelSourceDir,
		"arch=" + v.Arch,
		"dkms_tree=" + v.DKMSTree,
		"source_tree=" + v.SourceTree,
		"kernel_ver=" + v.KernelVer,
	}
}

var dkmsVarNames = []string{
	"PACKAGE_NAME", "PACKAGE_VERSION", "MAKE", "CLEAN",
	"BUILT_MODULE_NAME", "BUILT_MODULE_LOCATION", "DEST_MODULE_LOCATION",
	"BUILD_EXCLUSIVE_KERNEL", "BUILD_EXCLUSIVE_ARCH", "BUILD_EXCLUSIVE_CONFIG",
	"PATCH", "PATCH_MATCH",
}

// ReadConf reads dir/dkms.conf the way DKMS does: it is a shell
// fragment (real ones use if/fi, e.g. v4l2loopback's), so it is sourced by
// bash in a clean environment holding only the DKMS variables, with dir as
// the working directory, and the resulting variables are read back. No
// command of the package is run other than what dkms.conf itself runs when
// sourced, exactly as with DKMS.
func ReadConf(ctx context.Context, dir string, v Vars) (*Conf, error) {
	conf := filepath.Join(dir, "dkms.conf")
	var script strings.Builder
	script.WriteString(". ./dkms.conf || exit 1\n")
	for _, n := range dkmsVarNames {
		// Every variable is printed as NAME[index] NUL value NUL; a scalar is
		// index 0 of the array of the same name in bash.
		fmt.Fprintf(&script, "for i in \"${!%s[@]}\"; do printf '%%s[%%s]\\0%%s\\0' %s \"$i\" \"${%s[$i]}\"; done\n", n, n, n)
	}
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", script.String())
	cmd.Dir = dir
	cmd.Env = v.Env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: reading it with bash: %v: %s", conf, err, strings.TrimSpace(stderr.String()))
	}
	vals := map[string]map[int]string{}
	parts := strings.Split(stdout.String(), "\x00")
	for i := 0; i+1 < len(parts); i += 2 {
		name, idx, ok := strings.Cut(strings.TrimSuffix(parts[i], "]"), "[")
		n, err := strconv.Atoi(idx)
		if !ok || err != nil {
			continue
		}
		if vals[name] == nil {
			vals[name] = map[int]string{}
		}
		vals[name][n] = parts[i+1]
	}
	scalar := func(n string) string { return vals[n][0] }
	array := func(n string) []string {
		m := vals[n]
		if len(m) == 0 {
			return nil
		}
		max := -1
		for k := range m {
			if k > max {
				max = k
			}
		}
		out := make([]string, max+1)
		for k, s := range m {
			out[k] = s
		}
		return out
	}
	c := &Conf{
		PackageName:          scalar("PACKAGE_NAME"),
		PackageVersion:       scalar("PACKAGE_VERSION"),
		Make:                 scalar("MAKE"),
		Clean:                scalar("CLEAN"),
		BuiltModuleName:      array("BUILT_MODULE_NAME"),
		BuiltModuleLocation:  array("BUILT_MODULE_LOCATION"),
		DestModuleLocation:   array("DEST_MODULE_LOCATION"),
		BuildExclusiveKernel: scalar("BUILD_EXCLUSIVE_KERNEL"),
		BuildExclusiveArch:   scalar("BUILD_EXCLUSIVE_ARCH"),
		BuildExclusiveConfig: strings.Fields(scalar("BUILD_EXCLUSIVE_CONFIG")),
		Patches:              array("PATCH"),
		PatchMatch:           array("PATCH_MATCH"),
	}
	for i, n := range c.BuiltModuleName {
		if n == "" {
			return nil, fmt.Errorf("%s: BUILT_MODULE_NAME[%d] is empty", conf, i)
		}
		if strings.ContainsAny(n, "/") {
			return nil, fmt.Errorf("%s: BUILT_MODULE_NAME[%d]=%q must be a file name", conf, i, n)
		}
	}
	for i, l := range c.BuiltModuleLocation {
		if l != "" && (filepath.IsAbs(l) || strings.HasPrefix(filepath.Clean(l), "..")) {
			return nil, fmt.Errorf("%s: BUILT_MODULE_LOCATION[%d]=%q must be relative to the build directory", conf, i, l)
		}
	}
	for i, p := range c.Patches {
		if p == "" || strings.Contains(p, "/") {
			return nil, fmt.Errorf("%s: PATCH[%d]=%q must be a file name in patches/", conf, i, p)
		}
	}
	return c, nil
}

// Excluded reports why the package must not be built for this kernel
// (BUILD_EXCLUSIVE_KERNEL / _ARCH / _CONFIG), or "" if it may be built.
func (c *Conf) Excluded(v Vars, cfg kconfig.Config) (string, error) {
	if c.BuildExclusiveKernel != "" {
		re, err := regexp.Compile(c.BuildExclusiveKernel)
		if err != nil {
			// Not a regexp (as in v4l2loopback's "REQUIRES CONFIG_VIDEO_DEV"):
			// it can never match, which DKMS also treats as excluded.
			return fmt.Sprintf("BUILD_EXCLUSIVE_KERNEL=%q does not match %s", c.BuildExclusiveKernel, v.KernelVer), nil
		}
		if !re.MatchString(v.KernelVer) {
			return fmt.Sprintf("BUILD_EXCLUSIVE_KERNEL=%q does not match %s", c.BuildExclusiveKernel, v.KernelVer), nil
		}
	}
	if c.BuildExclusiveArch != "" {
		re, err := regexp.Compile(c.BuildExclusiveArch)
		if err != nil || !re.MatchString(v.Arch) {
			return fmt.Sprintf("BUILD_EXCLUSIVE_ARCH=%q does not match %s", c.BuildExclusiveArch, v.Arch), nil
		}
	}
	for _, want := range c.BuildExclusiveConfig {
		name, neg := strings.CutPrefix(want, "!")
		on := cfg.Get(name) == "y" || cfg.Get(name) == "m"
		if on == neg {
			return fmt.Sprintf("BUILD_EXCLUSIVE_CONFIG %s is not satisfied", want), nil
		}
	}
	return "", nil
}

// ApplyPatches applies the PATCH[] files from dir/patches with patch -p1,
// writing patch's output to log.
func (c *Conf) ApplyPatches(ctx context.Context, dir string, v Vars, log *os.File) ([]string, error) {
	var applied []string
	for i, p := range c.Patches {
		if i < len(c.PatchMatch) && c.PatchMatch[i] != "" {
			re, err := regexp.Compile(c.PatchMatch[i])
			if err != nil {
				return applied, fmt.Errorf("dkms.conf: PATCH_MATCH[%d]: %w", i, err)
			}
			if !re.MatchString(v.KernelVer) {
				continue
			}
		}
		pf := filepath.Join(dir, "patches", p)
		f, err := os.Open(pf)
		if err != nil {
			return applied, fmt.Errorf("dkms.conf: PATCH[%d]: %w", i, err)
		}
		fmt.Fprintf(log, "==> patch -p1 < patches/%s\n", p)
		cmd := exec.CommandContext(ctx, "patch", "-p1", "--batch", "--forward")
		cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr = dir, f, log, log
		cmd.Env = safeenv.Environ()
		err = cmd.Run()
		f.Close()
		if err != nil {
			return applied, fmt.Errorf("dkms.conf: PATCH[%d] %s does not apply: %w", i, p, err)
		}
		applied = append(applied, p)
	}
	return applied, nil
}

// Modules returns the .ko files DKMS would install, relative to the build
// dir, with their destination: extra or updates (see DestDir).
func (c *Conf) Modules() (ko []string, dest []string) {
	for i, n := range c.BuiltModuleName {
		loc := ""
		if i < len(c.BuiltModuleLocation) {
			loc = c.BuiltModuleLocation[i]
		}
		d := ""
		if i < len(c.DestModuleLocation) {
			d = c.DestModuleLocation[i]
		}
		ko = append(ko, filepath.ToSlash(filepath.Join(loc, n+".ko")))
		dest = append(dest, DestDir(d))
	}
	return ko, dest
}

// DestDir maps a DEST_MODULE_LOCATION to the top directory under
// lib/modules/<release> the module is installed in. The rule: a location
// under /updates installs into updates/<name>/; anything else (/extra,
// /kernel/..., empty) installs into extra/<name>/, so added modules never
// mix with the stock kernel/ tree.
func DestDir(loc string) string {
	l := strings.Trim(filepath.ToSlash(filepath.Clean("/"+loc)), "/")
	if l == "updates" || strings.HasPrefix(l, "updates/") {
		return "updates"
	}
	return "extra"
}

// sortedKeys returns the keys of m sorted.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
