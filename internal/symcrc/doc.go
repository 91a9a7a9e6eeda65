// Package symcrc proves that a kernel tree prepared without vmlinux
// (stock mode: "make olddefconfig modules_prepare LOCALVERSION=" at the
// tag, Module.symvers rebuilt from Microsoft's kernel image and modules)
// gives the stock kernel's symbol versions.
//
// Why: modpost copies the CRCs a module records for its imports from
// Module.symvers. With the stock Module.symvers, a module built against
// the wrong source or config still records the stock CRCs, loads, and
// uses structures of another layout. A matching release string proves
// nothing (two configs of one source have the same "uname -r"). So for
// every symbol a module imports, Prove computes its CRC from the prepared
// source the way kbuild computes it, and compares it with the stock CRC.
//
// # API
//
//	rep, err := symcrc.Prove(ctx, symcrc.Options{Src: src, Obj: obj,
//		MakeArgs: []string{"ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "LOCALVERSION="},
//		Jobs: 2, Log: os.Stderr}, want) // want: symbol → stock CRC
//	if err != nil { ... }        // the proof could not run
//	if err := rep.Err(); err != nil { ... } // mismatches or failures
//
// The Report lists Checked symbols (source CRC = stock CRC, with the file
// that exports them), Mismatches (the CRC differs, or the exporting file
// does not export the symbol with this config), Failed files (could not be
// preprocessed: a broken tree) and Unlocated symbols. Report.Err is one
// error naming every mismatching symbol with its file and both CRCs.
//
// Unlocated symbols (no .c or .S file's text exports them, even through
// the export macros the index expands) are not errors: Prove logs a
// warning listing them, and callers that need all-or-nothing check
// len(Report.Unlocated). The reason: a wrong config changes the CRCs of
// many symbols at once (every symbol whose type reaches a changed
// structure), so it shows among the located ones; refusing a build for a
// symbol the index cannot place would make stock mode unusable for it. On
// 6.12 every vmlinux export of the test kernels is located and proven
// (5200 on x86_64, 4409 on arm64).
//
// # How a CRC is computed
//
// As scripts/Makefile.build does for an object that exports (its
// gen_symversions step, 6.12): for foo.c,
//
//	$(CPP) -D__GENKSYMS__ $(c_flags) foo.c | scripts/genksyms/genksyms -r <foo.symref or /dev/null>
//
// (kbuild's own cmd_gensymtypes_c); for foo.S, the object is assembled
// with $(a_flags), the exports are read from its __export_symbol_<name>
// symbols (nm), and "#include <linux/kernel.h>", "#include
// <asm/asm-prototypes.h>" and one "EXPORT_SYMBOL(name);" line per export
// go through the same preprocessor and genksyms ($(c_flags) of foo.o);
// without CONFIG_ASM_MODVERSIONS assembly exports have no version.
// genksyms prints "#SYMVER <name> 0x<crc>" lines (what kbuild appends to
// .foo.o.cmd for modpost).
//
// The command line is kbuild's, not a copy of it: one make in (a copy
// of) the object tree reads the kernel's top Makefile (which exports
// KBUILD_CFLAGS, CPP, NM and the rest, for ARCH, CROSS_COMPILE and the
// config) and a small generated makefile whose goal runs
// scripts/Makefile.build for each directory involved, as kbuild's own
// descent does, with one more makefile read after it. There a rule for <dir>/foo.symcrc expands
// kbuild's cmd_gensymtypes_c (or the .S route) with $@ of the same stem,
// so the directory's ccflags-y, CFLAGS_foo.o, CFLAGS_REMOVE_foo.o,
// subdir-ccflags, KBUILD_MODNAME/KBUILD_BASENAME, and the module/built-in
// flags (-DMODULE for an object of obj-m) are those of foo.o. The rules
// run under bash -o pipefail, so a preprocessor failure is an error, not a
// CRC over a truncated input.
//
// # Speed
//
// Only the files that may export the wanted symbols are processed, in one
// make with -j Options.Jobs. Which files export what comes from an Index
// of the source tree (a lexical scan of every .c and .S file, with the
// export macros of headers such as EXPORT_TRACEPOINT_SYMBOL_GPL and
// EXPORT_STATIC_CALL and a file's own DEFINE_x(name) ...
// EXPORT_SYMBOL(get_##name) macros expanded, and the exports of a private
// header such as kernel/rcu/tree_plugin.h counted for the .c file that
// includes it), built once per tree and cached under Options.CacheDir, keyed by Options.SourceID or else by a
// digest of every scanned file's path, size and modification time.
// Several candidate files (lib/string.c and arch/x86/lib/memcpy_64.S for
// memcpy; kernel/sched/wait.c and the build_utility.c that #includes it)
// are all processed; the answer of a file its directory's Makefile builds
// into vmlinux wins, then one built into a module, then any other, and a
// file whose preprocessed text does not export the symbol gives no answer.
// Which directories the config descends into is not checked, so two
// "built-in" answers can remain (drivers/clk/clk.c and SuperH's
// drivers/sh/clk/core.c for clk_enable on arm64): then the symbol is
// proven if one of them has the stock CRC, and a note is logged.
//
// # The prepared tree is not modified
//
// make runs in a private copy of the object tree (modes and modification
// times kept), so nothing it does reaches the prepared tree: module builds
// after a proof neither rebuild nor differ. The copy also lets kbuild make
// the headers some files include that only the full build generates
// (lib/crc32table.h for crc32_le): a file that fails for a missing header
// of its own directory is retried after kbuild made that header in the
// copy. The configuration is never remade (-o include/config/auto.conf):
// the proof sees the auto.conf a module build sees.
package symcrc
