package dkms

import (
	"path/filepath"
	"strings"
)

// Vars are the values DKMS defines while it reads dkms.conf and runs the
// package's commands ($kernelver, $kernel_source_dir, $arch, $dkms_tree,
// $source_tree). They are shell variables of DKMS, not exported: dkms.conf
// and MAKE[] see them, a Makefile does not.
type Vars struct {
	// KernelVer is the kernel release (dkms -k).
	KernelVer string
	// KernelSourceDir is the tree modules build against
	// (--kernelsourcedir; /lib/modules/<kernelver>/build by default).
	KernelSourceDir string
	// Arch is uname -m style: x86_64, aarch64 (dkms -a).
	Arch string
	// DKMSTree is $dkms_tree (/var/lib/dkms by default): packages build
	// in <DKMSTree>/<PACKAGE_NAME>/<PACKAGE_VERSION>/build.
	DKMSTree string
	// SourceTree is $source_tree (/usr/src by default): the sources of a
	// package are <SourceTree>/<PACKAGE_NAME>-<PACKAGE_VERSION>.
	SourceTree string
}

// KernelConfig is $kernel_config: the .config of the kernel source dir,
// which DKMS greps for BUILD_EXCLUSIVE_CONFIG and the compiler.
func (v Vars) KernelConfig() string { return filepath.Join(v.KernelSourceDir, ".config") }

// PackageDir is $dkms_tree/<name>/<version>.
func (v Vars) PackageDir(name, version string) string {
	return filepath.Join(v.DKMSTree, name, version)
}

// BuildDir is $dkms_tree/<name>/<version>/build, where DKMS copies the
// sources and runs MAKE[].
func (v Vars) BuildDir(name, version string) string {
	return filepath.Join(v.PackageDir(name, version), "build")
}

// BaseDir is $dkms_tree/<name>/<version>/<kernelver>/<arch>, where DKMS
// keeps a build's log and modules.
func (v Vars) BaseDir(name, version string) string {
	return filepath.Join(v.PackageDir(name, version), v.KernelVer, v.Arch)
}

// SourceDir is $source_tree/<name>-<version>.
func (v Vars) SourceDir(name, version string) string {
	return filepath.Join(v.SourceTree, name+"-"+version)
}

// Conf is what DKMS makes of a dkms.conf for one kernel and arch: the
// directives after its defaults and per-kernel selections (MAKE_MATCH,
// PATCH_MATCH, BUILD_EXCLUSIVE_*).
type Conf struct {
	// File is the dkms.conf that was read.
	File string
	// PackageName and PackageVersion name the package.
	PackageName, PackageVersion string
	// MakeCommand is the build command DKMS runs in the build directory
	// (through eval): MAKE[] as selected by MAKE_MATCH[], else the default
	// kbuild invocation, with CC=clang / LD=ld.lld appended for clang or
	// lld kernels.
	MakeCommand string
	// Clean is CLEAN, or its default.
	Clean string
	// PreBuild and PostBuild are PRE_BUILD and POST_BUILD: a path relative
	// to the build directory, then arguments.
	PreBuild, PostBuild string
	// Patches are the PATCH[] files under patches/ that apply to this
	// kernel (PATCH_MATCH[]), in order.
	Patches []string
	// Modules are the modules the package builds, one per record.
	Modules []Module
	// Excluded, when not empty, says which BUILD_EXCLUSIVE_* directive
	// does not match: DKMS refuses to build the package.
	Excluded string
	// PreBuildCC is the compiler DKMS exports as CC for PRE_BUILD (the
	// first word of CONFIG_CC_VERSION_TEXT, when that command exists).
	PreBuildCC string
	// Messages is what sourcing dkms.conf wrote to stderr (DKMS shows it).
	Messages string
	// Notes are remarks for the build log (directives read differently by
	// DKMS versions, deprecated directives).
	Notes []string
}

// Module is one record of BUILT_MODULE_NAME[], BUILT_MODULE_LOCATION[],
// DEST_MODULE_NAME[], DEST_MODULE_LOCATION[] and STRIP[].
type Module struct {
	// BuiltName is the .ko name without the suffix; BuiltLocation its
	// directory relative to the build directory ("" or ending in "/").
	BuiltName, BuiltLocation string
	// DestName is the installed name (DEST_MODULE_NAME, default
	// BuiltName); DestLocation is DEST_MODULE_LOCATION as written.
	DestName, DestLocation string
	// Strip is false for STRIP[i]=no (STRIP[i] empty inherits STRIP[0]).
	Strip bool
}

// Built is the module's path relative to the build directory.
func (m Module) Built() string { return m.BuiltLocation + m.BuiltName + ".ko" }

// ExcludedMessage is DKMS's message for a package whose BUILD_EXCLUSIVE
// directives do not match (dkms build exits with status 77 after it).
func (c *Conf) ExcludedMessage() string {
	if c.Excluded == "" {
		return ""
	}
	return "The dkms.conf for module " + c.PackageName + " includes a BUILD_EXCLUSIVE directive which does not match this kernel/arch/config (" +
		c.Excluded + "). This indicates that it should not be built."
}

// DestDir maps a DEST_MODULE_LOCATION to the top directory under
// lib/modules/<release> the module is installed in. The rule: a location
// under /updates installs into updates/<name>/; anything else (/extra,
// /kernel/..., empty) installs into extra/<name>/, so added modules never
// mix with the stock kernel/ tree. (DKMS on Debian installs every module
// into updates/dkms/, whatever the location says.)
func DestDir(loc string) string {
	l := strings.Trim(filepath.ToSlash(filepath.Clean("/"+loc)), "/")
	if l == "updates" || strings.HasPrefix(l, "updates/") {
		return "updates"
	}
	return "extra"
}
