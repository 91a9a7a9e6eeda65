// Package kbuild builds a WSL kernel at an exact source, once per set of
// inputs, into a kernel cache entry (kernel image, installed stock modules,
// Module.symvers, config, kernel-devel and UAPI headers): a full build with
// LOCALVERSION= so the release equals the stock kernel's. Module builds
// against an entry live in internal/modbuild.
package kbuild
