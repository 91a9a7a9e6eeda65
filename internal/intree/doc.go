// Package intree plans a config fragment for stock mode: which in-tree
// kbuild directories to build as external modules against Microsoft's
// prepared kernel tree, so that the fragment's n→m options get their
// modules while the kernel stays Microsoft's binary.
//
// That is only sound when CONFIG_X=m changes nothing but those modules.
// PlanFragment proves it from the source, conservatively, and refuses (an *Error
// naming the option, the fragment line and the file:line that decides)
// whatever it cannot prove:
//
//   - the configs: kconfig's CheckResult first (no option that already
//     had a value changes; nothing new is y);
//   - every option that becomes m needs an obj-$(CONFIG_X) += foo.o or
//     += sub/ line (read by make under conditions it can evaluate, in a
//     directory kbuild reaches with the new config); foo.o must not also
//     be built by another line (built in, or a stock module), and sub/
//     must be a directory the stock config did not build at all (then
//     everything it builds is the unit's, and its obj-y objects are not
//     built, as kbuild does for a directory reached through obj-m);
//   - any other use of the option in make text (ifdef, ifeq,
//     $(subst m,y,...), lib-, ccflags-, the top or arch Makefile) is
//     refused, except the composite parts of the unit's own objects and
//     anything inside a whole unit;
//   - any reference to CONFIG_X or CONFIG_X_MODULE (IS_ENABLED,
//     IS_REACHABLE, IS_MODULE, #ifdef, defined(), comments excluded) in
//     C, assembly, header or Rust code that is not the units' own module
//     source is refused: such code may be in vmlinux. A unit's own
//     sources are the parts of its objects (or every file of a whole
//     unit), minus the sources of the directory's other objects and any
//     file other code #includes (transitively).
//
// Options the fragment makes visible (CheckResult's notes: new m
// options, new string/int/hex values) are planned the same way and
// passed to every unit's build. Documentation, tools and other
// architectures' arch/ directories are not read. Token pasting
// (CONFIG_##x) and -I paths into a unit's directory are not followed.
//
// A Unit is built (internal/modbuild) in a copy of its directory with
// make -C <kernel-devel> M=<copy> CONFIG_X=m ... KCFLAGS="-include
// <defines>" modules; a file unit gets a Kbuild file that reads the
// directory's own and then builds only the unit's objects. Its modules
// install at kernel/<dir>/, where a kernel built with the fragment puts
// them, and are verified like listed modules (modtree validation against
// the stock tree, the CRC proof). A module that needs a symbol the stock
// kernel does not export fails there (modpost), naming the symbol.
//
// PlanSource runs the configuration steps (kbuild.CheckConfig) and PlanFragment.
package intree
