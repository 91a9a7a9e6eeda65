// Package kbuild makes the kernel cache entries module builds run
// against, once per set of inputs, each verified by its recorded file
// digests on every use:
//
//   - build mode (BuildKernel): the whole kernel at an exact source, with
//     LOCALVERSION= so the release equals the stock kernel's; the entry
//     holds the kernel image, the installed modules, Module.symvers, the
//     config, kernel-devel and UAPI headers;
//   - stock mode (PrepareStock): the source prepared with olddefconfig and
//     modules_prepare only, with Module.symvers rebuilt from Microsoft's
//     kernel image and modules (internal/kimage, internal/modtree); the
//     entry holds the prepared tree and Microsoft's files as given.
//
// Module builds against an entry live in internal/modbuild.
package kbuild
