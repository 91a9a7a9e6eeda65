package main

import (
	"context"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/depmod"
)

func init() {
	register(&command{
		Name:    "depmod",
		Summary: "generate modules.dep, the *.bin indexes and friends in pure Go (byte-identical to kmod 30)",
		Usage:   "depmod [-b BASEDIR] [-E Module.symvers] [-F System.map] [-e] [--strict] RELEASE",
		Examples: []string{
			"depmod -b build/staging 6.6.87.2-microsoft-standard-WSL2",
			"depmod -b build/staging -e -E build/Module.symvers --strict 6.6.87.2-microsoft-standard-WSL2",
		},
		Run: runDepmod,
	})
}

func runDepmod(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["depmod"]
	fs := newFlagSet(env, c)
	var o depmod.Options
	var search string
	fs.StringVar(&o.BaseDir, "b", "", "base directory holding lib/modules/RELEASE (default /)")
	fs.StringVar(&o.Symvers, "E", "", "Module.symvers of the kernel, for unresolved-symbol and CRC checks (with -e)")
	fs.StringVar(&o.SystemMap, "F", "", "System.map of the kernel, for unresolved-symbol checks (with -e; ignored with -E)")
	fs.BoolVar(&o.ErrSyms, "e", false, "report unresolved symbols and, with -E, CRC mismatches")
	fs.BoolVar(&o.Strict, "strict", false, "fail (exit 1, no files written) on any unresolved symbol or CRC mismatch; implies -e")
	fs.StringVar(&search, "search", strings.Join(depmod.DefaultSearch, ","),
		"ranking of directories for duplicate module names, best first; built-in = every other directory")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("depmod: want exactly one RELEASE argument, got %d (see 'depmod --help')", len(pos))
	}
	o.Release = pos[0]
	for _, s := range strings.Split(search, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.Search = append(o.Search, s)
		}
	}
	if o.Search == nil {
		o.Search = []string{"built-in"}
	}
	if o.Strict {
		o.ErrSyms = true
	}
	dir, aerr := filepath.Abs(o.ModuleDir())
	if aerr != nil {
		dir = o.ModuleDir()
	}

	rep, err := depmod.Run(ctx, o)
	if rep != nil {
		rep.WriteWarnings(env.Stderr, dir)
	}
	return err
}
