package main

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/wsl-modules/wsl-modules-action/internal/runenv"

	"github.com/wsl-modules/wsl-modules-action/internal/merge"

	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

func init() {
	register(&command{
		Name:    "merge",
		Summary: "layer module packs over a base tree or image (stock modules.vhd, our modules.vhdx) into one modules.vhdx",
		Usage: "merge --base BASE [--pack P.tar.zst ...] --out modules.vhdx [--layout flat|nested] [--kernel-release R]\n" +
			"       [--symvers Module.symvers] [--prefer PACK ...] [--slack SIZE] [--source-date-epoch N] [--dry-run] [--force]",
		Examples: []string{
			"merge --base 'C:/Program Files/WSL/tools/modules.vhd' --pack usbip.tar.zst --pack mydrv.tar.zst --out modules.vhdx",
			"merge --base modules.vhdx --pack v4l2loopback.tar.zst --out merged.vhdx --dry-run",
		},
		Run: runMerge,
	})
}

func runMerge(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["merge"]
	fs := newFlagSet(env, c)
	var o merge.Options
	var packs, prefer stringList
	var layout, slack, sde string
	fs.StringVar(&o.Base, "base", "", "base: a directory (root with lib/modules/REL, or the module tree) or a VHDX/VHD/raw image")
	fs.Var(&packs, "pack", "a pack file (repeatable)")
	fs.StringVar(&o.Out, "out", "", "output .vhdx")
	fs.StringVar(&layout, "layout", "", "output layout: flat or nested (default: the base image's layout, flat for a directory)")
	fs.StringVar(&o.KernelRelease, "kernel-release", "", "kernel release of the base (default: from the nested directory, lib/modules or the modules' vermagic)")
	fs.StringVar(&o.Symvers, "symvers", "", "the kernel's Module.symvers, to check every symbol and CRC (default: the base's build/Module.symvers if any)")
	fs.Var(&prefer, "prefer", "pack that wins when several packs provide the same module (repeatable)")
	fs.StringVar(&slack, "slack", "16M", "free space in the image (bytes, or with K/M/G suffix)")
	fs.StringVar(&sde, "source-date-epoch", "", "Unix time of every timestamp (default $SOURCE_DATE_EPOCH, else 0)")
	fs.BoolVar(&o.DryRun, "dry-run", false, "check and print the plan; write nothing")
	fs.BoolVar(&o.Force, "force", false, "overwrite an existing output file")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("merge: unexpected argument %q (packs are given with --pack; see 'merge --help')", pos[0])
	}
	if o.Base == "" || (o.Out == "" && !o.DryRun) {
		return usagef("merge: --base and --out are required (see 'merge --help')")
	}
	o.Packs, o.Prefer, o.Layout = packs, prefer, image.Layout(layout)
	if o.Slack, err = parseSize(slack); err != nil {
		return usagef("merge: --slack: %v", err)
	}
	if o.SourceDateEpoch, _, err = runenv.SourceDateEpoch(sde, env.Getenv); err != nil {
		return usagef("merge: %v", err)
	}
	o.Progress = progress.New(env.Stderr)
	res, err := merge.Merge(ctx, o)
	if err != nil {
		return err
	}
	printMergePlan(env.Stdout, res)
	if res.Image != nil {
		fmt.Fprintf(env.Stdout, "%s: %d bytes (virtual disk %s), %s layout\nsha256: %s\n",
			res.Image.Path, res.Image.Size, progress.Bytes(res.Image.DiskSize), res.Layout, res.Image.SHA256)
	} else {
		fmt.Fprintln(env.Stdout, "dry run: nothing written")
	}
	return nil
}

// printMergePlan prints where each pack module goes, what it shadows or
// replaces, and the warnings.
func printMergePlan(w io.Writer, res *merge.Result) {
	b, p := res.Base, res.Plan
	fmt.Fprintf(w, "base: %s (%s", b.Source.Path, b.Source.Kind)
	if b.Source.Layout != "" {
		fmt.Fprintf(w, ", %s layout", b.Source.Layout)
	}
	fmt.Fprintf(w, "), kernel release %s (from %s), %d modules\n", b.Release, b.Source.ReleaseFrom, len(b.Modules))
	if res.SymversUsed != "" {
		fmt.Fprintf(w, "symbols checked against %s\n", res.SymversUsed)
	} else {
		fmt.Fprintln(w, "no Module.symvers: kernel symbols are checked against what the stock modules import")
	}
	for _, pk := range res.Packs {
		fmt.Fprintf(w, "pack %s %s (%s, %d modules)\n", pk.Meta.Name, pk.Meta.Version, pk.Source, len(pk.Meta.Modules))
	}
	shadow := map[string]string{}
	for _, s := range p.Shadows {
		shadow[s.Dest] = s.Stock
	}
	for _, a := range p.Add {
		line := fmt.Sprintf("  + %-50s [pack %s]", a.Dest, a.Pack)
		if st, ok := shadow[a.Dest]; ok {
			line += " shadows stock " + st
		}
		fmt.Fprintln(w, line)
	}
	for _, d := range p.Dropped {
		fmt.Fprintf(w, "  - %s from pack %s: dropped (--prefer %s)\n", d.File, d.Pack, winner(p, d.Entry.Name))
	}
	for _, r := range p.Replaced {
		fmt.Fprintf(w, "  - %s: replaced (its pack is merged again)\n", r)
	}
	for _, i := range b.Source.Ignored {
		fmt.Fprintf(w, "  - /%s: not carried over from the nested base image\n", i)
	}
	ws := append([]string(nil), p.Warnings...)
	sort.Strings(ws)
	for _, x := range ws {
		fmt.Fprintf(w, "warning: %s\n", x)
	}
	if res.Depmod != nil {
		fmt.Fprintf(w, "depmod: %d modules indexed\n", res.Depmod.Modules)
		for _, x := range append(res.Depmod.LoadWarnings, res.Depmod.Warnings...) {
			fmt.Fprintf(w, "depmod: %s\n", x)
		}
	}
}

func winner(p *merge.Plan, module string) string {
	for _, a := range p.Add {
		if a.Entry.Name == module {
			return a.Pack
		}
	}
	return ""
}
