package main

import (
	"context"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/runenv"

	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/pack"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

func init() {
	register(&command{
		Name:    "image",
		Summary: "write modules.vhdx (ext4 in a dynamic VHDX) in pure Go; 'image ls' and 'image extract' read VHDX, VHD or raw images",
		Usage: "image --source DIR --kernel-release REL --out FILE.vhdx [--layout flat|nested] [--headers DIR] [--devel DIR] [--slack SIZE] [--source-date-epoch N] [--force]\n" +
			"       wsl-modules-action image ls FILE\n" +
			"       wsl-modules-action image extract FILE DIR [--force]",
		Examples: []string{
			"image --source build/staging --kernel-release 6.6.87.2-microsoft-standard-WSL2 --out dist/modules.vhdx",
			"image ls dist/modules.vhdx",
			"image extract 'C:/Program Files/WSL/tools/modules.vhd' stock-modules",
		},
		Run: runImage,
	})
}

func runImage(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "ls":
			return runImageLs(ctx, env, args[1:])
		case "extract":
			return runImageExtract(ctx, env, args[1:])
		}
	}
	c := commands["image"]
	fs := newFlagSet(env, c)
	var o image.Options
	var src, out, layout, slack, sde string
	fs.StringVar(&src, "source", "", "root holding lib/modules/REL (like depmod -b), or the module directory itself")
	fs.StringVar(&o.Release, "kernel-release", "", "kernel release (uname -r)")
	fs.StringVar(&out, "out", "", "output .vhdx file")
	fs.StringVar(&layout, "layout", "flat", "image layout: flat (every released WSL) or nested (<release>/modules, newer WSL)")
	fs.StringVar(&o.Headers, "headers", "", "UAPI headers tree for <release>/linux-headers (nested layout only)")
	fs.StringVar(&o.Devel, "devel", "", "kernel-devel tree placed at build/ in the module tree")
	fs.StringVar(&slack, "slack", "16M", "free space beyond the content (bytes, or with K/M/G suffix)")
	fs.StringVar(&sde, "source-date-epoch", "", "Unix time of every timestamp (default $SOURCE_DATE_EPOCH, else 0; never the clock)")
	fs.BoolVar(&o.Force, "force", false, "overwrite an existing output file")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("image: unexpected argument %q (see 'image --help')", pos[0])
	}
	if src == "" || o.Release == "" || out == "" {
		return usagef("image: --source, --kernel-release and --out are required (see 'image --help')")
	}
	if o.ModuleDir, _, err = modtree.FindModuleDir(src, o.Release); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	o.Layout = image.Layout(layout)
	if o.Slack, err = parseSize(slack); err != nil {
		return usagef("image: --slack: %v", err)
	}
	if o.SourceDateEpoch, _, err = runenv.SourceDateEpoch(sde, env.Getenv); err != nil {
		return usagef("image: %v", err)
	}
	res, err := image.Build(ctx, o, out, progress.New(env.Stderr))
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s: %d bytes (%s; virtual disk %s, %d blocks of 1 MiB stored)\n",
		res.Path, res.Size, progress.Bytes(res.Size), progress.Bytes(res.DiskSize), res.StoredBlocks)
	fmt.Fprintf(env.Stdout, "files: %d (%d directories, %d symlinks), content %s", res.Files, res.Dirs, res.Symlinks, progress.Bytes(res.ContentBytes))
	if res.DevelBytes > 0 {
		fmt.Fprintf(env.Stdout, ", devel %s", progress.Bytes(res.DevelBytes))
	}
	if res.HeadersBytes > 0 {
		fmt.Fprintf(env.Stdout, ", headers %s", progress.Bytes(res.HeadersBytes))
	}
	fmt.Fprintf(env.Stdout, "\nsha256: %s\nraw sha256: %s\n", res.SHA256, res.RawSHA256)
	return nil
}

// parseSize parses a byte count with an optional K, M, G or T suffix
// (binary units, optional "iB"/"B").
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<46)/mult {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}

func runImageLs(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["image"]
	fs := newFlagSet(env, c)
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("image ls: want exactly one FILE argument, got %d", len(pos))
	}
	fsys, err := image.OpenFS(pos[0])
	if err != nil {
		return err
	}
	defer fsys.Close()
	// A merged image records which pack each added module came from.
	rec, prefix, err := pack.FindRecord(fsys, pos[0])
	if err != nil {
		return naming(pos[0], err)
	}
	origins := rec.Origins()
	n := 0
	err = fsys.Walk(func(e image.Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.Path == "" {
			return nil
		}
		n++
		_, err := fmt.Fprintln(env.Stdout, lsLine(e, prefix, origins))
		return err
	})
	if err != nil {
		return naming(pos[0], err)
	}
	fmt.Fprintf(env.Stderr, "%s: %s, virtual disk %s, %d entries\n", pos[0], fsys.Format, progress.Bytes(fsys.Disk().Size()), n)
	return nil
}

// lsLine formats one entry of 'image ls'. Names, targets and pack names
// come from the image, which is not trusted: they are escaped.
func lsLine(e image.Entry, prefix string, origins map[string]pack.RecordPack) string {
	line := fmt.Sprintf("%s %d/%d %12d %s /%s", modeString(e.Mode), e.UID, e.GID, e.Size,
		time.Unix(e.MTime, 0).UTC().Format("2006-01-02T15:04:05Z"), escapeName(e.Path))
	if e.Target != "" {
		line += " -> " + escapeName(e.Target)
	}
	if rel, ok := strings.CutPrefix(e.Path, prefix+"/"); ok || prefix == "" {
		if prefix == "" {
			rel = e.Path
		}
		if p, ok := origins[rel]; ok {
			line += "  [pack " + escapeName(strings.TrimSpace(p.Name+" "+p.Version)) + "]"
		}
	}
	return line
}

// escapeName makes text from an image safe to print on one terminal line:
// backslashes, control characters (C0, DEL and C1, so newlines and escape
// sequences), Unicode line and paragraph separators, bidirectional
// overrides and invalid UTF-8 are written as Go-style escapes (\\, \n,
// \x1b, \u202e, \xff). Other text is unchanged.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7F:
			fmt.Fprintf(&b, `\x%02x`, r)
		case (r >= 0x80 && r < 0xA0) || r == 0x2028 || r == 0x2029 || (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) || r == 0x200E || r == 0x200F:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// naming prefixes err with the image path unless it already names it.
func naming(img string, err error) error {
	if strings.Contains(err.Error(), img) {
		return err
	}
	return fmt.Errorf("%s: %w", img, err)
}

// modeString formats a mode like ls -l, with s/t bits.
func modeString(m fs.FileMode) string {
	b := []byte("-rwxrwxrwx")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	case m&fs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&fs.ModeDevice != 0:
		b[0] = 'b'
	case m&fs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&fs.ModeSocket != 0:
		b[0] = 's'
	}
	for i := 0; i < 9; i++ {
		if m&(1<<uint(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	setx := func(i int, on bool, c byte) {
		if on {
			if b[i] == 'x' {
				b[i] = c
			} else {
				b[i] = c - 'a' + 'A'
			}
		}
	}
	setx(3, m&fs.ModeSetuid != 0, 's')
	setx(6, m&fs.ModeSetgid != 0, 's')
	setx(9, m&fs.ModeSticky != 0, 't')
	return string(b)
}

func runImageExtract(ctx context.Context, env *cliEnv, args []string) error {
	c := commands["image"]
	fs := newFlagSet(env, c)
	force := fs.Bool("force", false, "replace an existing destination directory")
	pos, err := parseFlags(env, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("image extract: want FILE and DIR arguments, got %d", len(pos))
	}
	d, err := image.OpenDisk(pos[0])
	if err != nil {
		return err
	}
	defer d.Close()
	n, err := image.Extract(ctx, d, pos[1], *force)
	if err != nil {
		return naming(pos[0], err)
	}
	fmt.Fprintf(env.Stdout, "%s: extracted %d entries from %s (%s) into %s\n", pos[0], n, d.Format, progress.Bytes(d.Size()), pos[1])
	return nil
}
