package release

import (
	"fmt"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// develNotes is the release-notes section on building modules inside WSL
// with the kernel-devel tree the image carries (headers: devel). It is
// empty for other headers settings: uapi headers (make headers_install)
// cannot build modules, and none ships nothing.
func develNotes(m *manifest.Manifest) string {
	if m.Headers != "devel" {
		return ""
	}
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	rel := m.Kernel.Release
	p("")
	p("## Building modules inside WSL")
	p("")
	size := ""
	if m.Image != nil && m.Image.HeadersBytes > 0 {
		size = fmt.Sprintf(" (%s)", progress.Bytes(m.Image.HeadersBytes))
	}
	where := "at `build/` in the image"
	if m.Layout == "nested" {
		where = fmt.Sprintf("at `%s/modules/build/` in the image, with the UAPI headers in `%s/linux-headers/`", rel, rel)
	}
	p("The image carries this kernel's external-module build tree%s %s: `.config`, `Module.symvers`, the generated headers, the kbuild scripts and their programs (`fixdep`, `modpost`, …) built for %s. WSL mounts it at `/lib/modules/%s/build`, so modules and DKMS packages build inside WSL as on a distribution kernel. Install a compiler and make first (`sudo apt install build-essential` on Debian and Ubuntu).", size, where, unameArch(m.Kernel.Arch), rel)
	p("")
	p("A module from its source directory (with a Kbuild or Makefile):")
	p("")
	p("```sh")
	p("make -C /lib/modules/$(uname -r)/build M=$PWD modules")
	p("sudo insmod ./mymodule.ko")
	p("```")
	p("")
	p("A DKMS package, e.g. Debian's or Ubuntu's `v4l2loopback-dkms` (DKMS finds the tree at `/lib/modules/$(uname -r)/build` by itself):")
	p("")
	p("```sh")
	p("sudo apt install dkms v4l2loopback-dkms    # builds for $(uname -r) on install")
	p("sudo dkms build v4l2loopback/<version> -k $(uname -r)    # or explicitly")
	p("sudo dkms install v4l2loopback/<version> -k $(uname -r) && sudo modprobe v4l2loopback")
	p("```")
	p("")
	p("Notes:")
	p("")
	p("- Builds write only into their own `M=` directory, never into the tree, so build from a directory you own.")
	p("- `/lib/modules/%s` is the read-only image under a tmpfs overlay: what `dkms install` or `modules_install` puts there is lost at `wsl --shutdown`. Run the install again after a restart, or load the `.ko` with `insmod`; to keep a module for good, add it to the module list and rebuild this release.", rel)
	if m.Kernel.Compiler != "" {
		p("- The kernel was built with %s. Use the same compiler major version: kbuild warns when it differs, and options the kernel's config took from its compiler may not be accepted by another.", m.Kernel.Compiler)
	}
	p("- The programs in `build/scripts` were built on the release's build machine. If `make` fails with ``version `GLIBC_2.xx' not found``, your distribution's C library is older than theirs; use a newer distribution.")
	if m.Layout == "nested" {
		p("- Nested layout: a WSL that understands it may point `/lib/modules/%s/build` at the UAPI headers (`/usr/src/linux-headers-%s`) instead, which cannot build modules. `test -f /lib/modules/$(uname -r)/build/Module.symvers` tells which one you have.", rel, rel)
	}
	return b.String()
}

// unameArch is the machine name (uname -m) of a manifest arch.
func unameArch(arch string) string {
	switch arch {
	case "arm64", "aarch64":
		return "aarch64"
	case "", "x86_64", "amd64":
		return "x86_64"
	}
	return arch
}
