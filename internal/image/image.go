// Package image builds the WSL kernel-modules disk: an ext4 filesystem
// (written in pure Go by ext4img) inside a dynamic VHDX (written by vhdx),
// with no root, loop devices or qemu. The result is byte-for-byte
// reproducible: the same tree, options and SOURCE_DATE_EPOCH give the same
// file. It also reads images back (VHDX, VHD fixed or dynamic, or raw):
// OpenFS gives an image as an io/fs file system read in place, and Walk
// and Extract list and extract its files. The readers treat every image
// as hostile (a downloaded stock modules.vhd or someone's release): all
// sizes and offsets are checked, memory is bounded, symlinks are never
// followed and extraction drops setuid and setgid bits.
//
// Layouts (see WSL.md §5):
//   - flat: the image root is the content of lib/modules/<release>/;
//   - nested: <release>/modules/ holds that tree and <release>/linux-headers/
//     the optional UAPI headers.
//
// The top-level build and source symlinks of the module tree are dropped
// (they would dangle inside WSL); a real build/ directory is kept. Owners
// are root, modes are kept, and every timestamp is SourceDateEpoch.
package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/image/ext4img"
	"github.com/wsl-modules/wsl-modules-action/internal/image/vhdx"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Layout selects where the module tree goes inside the image.
type Layout string

// The image layouts.
const (
	// LayoutFlat puts the module tree at the image root (every released WSL).
	LayoutFlat Layout = "flat"
	// LayoutNested puts it at <release>/modules (WSL with PR #41267).
	LayoutNested Layout = "nested"
)

// DefaultSlack is the free space Build leaves by default. WSL mounts the
// image read-only under a tmpfs overlay, so free space is never used;
// it costs only BAT entries in the VHDX, not stored bytes.
const DefaultSlack = 16 << 20

// Version identifies the image format produced; it is part of the digest
// that seeds the filesystem UUID.
const Version = "wsl-modules-action image v1"

// Options describe an image to build.
type Options struct {
	// ModuleDir is the module directory on the host (a
	// lib/modules/<Release>; modtree.FindModuleDir finds it in a root).
	ModuleDir string
	// Release is the kernel release (uname -r).
	Release string
	// Layout is flat (default) or nested.
	Layout Layout
	// Headers is an optional UAPI headers tree (make headers_install),
	// placed at <release>/linux-headers. Nested layout only: with the flat
	// layout it is an error, since flat images have no place for it.
	Headers string
	// Devel is an optional kernel-devel tree (install-extmod-build), placed
	// at build/ in the module tree (both layouts).
	Devel string
	// Modules, DevelFS and HeadersFS give the module tree, the devel tree
	// and the headers as file systems (a staged modtree.View, a tree read
	// from another image) instead of host directories; Modules replaces
	// ModuleDir.
	Modules, DevelFS, HeadersFS fs.FS
	// Slack is free space beyond the content, in bytes (0: none).
	Slack int64
	// SourceDateEpoch is the Unix time of every timestamp in the image.
	SourceDateEpoch int64
	// Force allows replacing an existing output file.
	Force bool
}

// Result describes a built image.
type Result struct {
	// Path is the output file.
	Path string
	// Size is the VHDX file size in bytes.
	Size int64
	// DiskSize is the virtual disk (and ext4 filesystem) size in bytes.
	DiskSize int64
	// SHA256 is the hex SHA-256 of the VHDX file; RawSHA256 that of the raw
	// disk (the ext4 filesystem).
	SHA256, RawSHA256 string
	// Files, Dirs and Symlinks count the entries in the image.
	Files, Dirs, Symlinks int
	// ModuleDir is the host directory used as the module tree.
	ModuleDir string
	// ContentBytes is the total size of files and symlink targets;
	// ModulesBytes, DevelBytes and HeadersBytes split it by origin.
	ContentBytes, ModulesBytes, DevelBytes, HeadersBytes int64
	// StoredBlocks is the number of 1 MiB blocks stored in the VHDX.
	StoredBlocks uint64
}

// Stage scans the host trees and returns the image's root node.
func stage(ctx context.Context, o *Options, res *Result) (*ext4img.Node, error) {
	switch o.Layout {
	case "":
		o.Layout = LayoutFlat
	case LayoutFlat, LayoutNested:
	default:
		return nil, fmt.Errorf("image: unknown layout %q (want flat or nested)", o.Layout)
	}
	if (o.Headers != "" || o.HeadersFS != nil) && o.Layout != LayoutNested {
		return nil, errors.New("image: headers need the nested layout (a flat image has no linux-headers directory)")
	}
	if o.Slack < 0 {
		return nil, fmt.Errorf("image: negative slack %d", o.Slack)
	}
	mods, err := o.scanModules(ctx, res)
	if err != nil {
		return nil, err
	}
	if err := o.addDevel(ctx, mods, res); err != nil {
		return nil, err
	}
	mods.Mode = os.ModeDir | 0o755
	if o.Layout == LayoutFlat {
		return mods, nil
	}
	mods.Name = "modules"
	rel := dirNode(o.Release, mods)
	hd, err := scanTree(ctx, o.HeadersFS, o.Headers, &res.HeadersBytes)
	if err != nil {
		return nil, err
	}
	if hd != nil {
		hd.Name = "linux-headers"
		hd.Mode = os.ModeDir | 0o755
		rel.Children = append(rel.Children, hd)
	}
	return dirNode("", rel), nil
}

// scanModules scans the module tree, without its top-level build and
// source symlinks.
func (o *Options) scanModules(ctx context.Context, res *Result) (*ext4img.Node, error) {
	if o.Release == "" {
		return nil, errors.New("image: no kernel release given")
	}
	var st scanStats
	var mods *ext4img.Node
	var err error
	if o.Modules != nil {
		res.ModuleDir = "(staged tree)"
		mods, err = scanFS(ctx, o.Modules, "", ".", &st)
	} else {
		if o.ModuleDir == "" {
			return nil, errors.New("image: no module directory given")
		}
		if _, err := os.Stat(o.ModuleDir); err != nil {
			return nil, fmt.Errorf("image: module directory: %w", err)
		}
		res.ModuleDir = o.ModuleDir
		mods, err = scanDir(ctx, o.ModuleDir, "", &st)
	}
	if err != nil {
		return nil, err
	}
	res.ModulesBytes = st.bytes
	kept := mods.Children[:0]
	for _, c := range mods.Children {
		if (c.Name == "build" || c.Name == "source") && c.Mode&os.ModeSymlink != 0 {
			continue
		}
		kept = append(kept, c)
	}
	mods.Children = kept
	return mods, nil
}

// addDevel places the devel tree at build/.
func (o *Options) addDevel(ctx context.Context, mods *ext4img.Node, res *Result) error {
	dev, err := scanTree(ctx, o.DevelFS, o.Devel, &res.DevelBytes)
	if err != nil || dev == nil {
		return err
	}
	for _, c := range mods.Children {
		if c.Name == "build" {
			return fmt.Errorf("image: %s already has a build/ directory; cannot add the devel tree", res.ModuleDir)
		}
	}
	dev.Name = "build"
	mods.Children = append(mods.Children, dev)
	return nil
}

// scanTree scans an optional tree given as a file system or a host
// directory (nil, nil for none), counting its bytes.
func scanTree(ctx context.Context, fsys fs.FS, dir string, bytes *int64) (*ext4img.Node, error) {
	var st scanStats
	var n *ext4img.Node
	var err error
	switch {
	case fsys != nil:
		n, err = scanFS(ctx, fsys, "", ".", &st)
	case dir != "":
		n, err = scanDir(ctx, dir, "", &st)
	default:
		return nil, nil
	}
	*bytes = st.bytes
	return n, err
}

// ctxWriter stops a long write when the context is cancelled.
type ctxWriter struct {
	ctx context.Context
	w   *vhdx.Writer
	c   *progress.Counter
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	c.c.Add(int64(len(p)))
	return c.w.Write(p)
}

func (c ctxWriter) WriteZeros(n int64) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	c.c.Add(n)
	return c.w.WriteZeros(n)
}

// Build writes the image described by opts to out (a .vhdx file),
// atomically: on any error no output file is left behind. An existing out
// is an error unless opts.Force is set.
func Build(ctx context.Context, opts Options, out string, rep *progress.Reporter) (*Result, error) {
	res := &Result{Path: out}
	if !opts.Force {
		if _, err := os.Lstat(out); err == nil {
			return nil, fmt.Errorf("image: %s: %w", out, atomicfile.ErrExists)
		}
	}
	what := opts.ModuleDir
	if opts.Modules != nil {
		what = "the staged tree"
	}
	done := rep.Step("scan %s", what)
	root, err := stage(ctx, &opts, res)
	done()
	if err != nil {
		return nil, err
	}
	params := fmt.Sprintf("%s\x00%s\x00%s\x00%d", Version, opts.Release, opts.Layout, opts.SourceDateEpoch)
	digest := treeDigest(root, params)
	im, err := ext4img.Plan(root, ext4img.Options{
		Time:        opts.SourceDateEpoch,
		UUID:        vhdx.DeriveUUID("ext4-uuid", digest),
		HashSeed:    vhdx.DeriveUUID("ext4-hash-seed", digest),
		SlackBytes:  opts.Slack,
		SpareInodes: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	st := im.Stats()
	res.Files, res.Dirs, res.Symlinks, res.ContentBytes = st.Files, st.Dirs, st.Symlinks, st.ContentBytes
	res.DiskSize = im.Size()
	if err := writeVHDX(ctx, im, out, opts.Force, res, rep); err != nil {
		return nil, err
	}
	return res, nil
}

func writeVHDX(ctx context.Context, im *ext4img.Image, out string, force bool, res *Result, rep *progress.Reporter) (err error) {
	f, err := atomicfile.Create(out, force)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer f.Abort()
	done := rep.Step("write %s (%s disk, %d files)", out, progress.Bytes(im.Size()), res.Files)
	vw, err := vhdx.NewWriter(f.File, im.Size(), vhdx.Options{})
	if err != nil {
		return fmt.Errorf("image: %s: %w", out, err)
	}
	cnt := rep.Counter("ext4", im.Size())
	if _, err := im.WriteTo(ctxWriter{ctx: ctx, w: vw, c: cnt}); err != nil {
		vw.Abort()
		return fmt.Errorf("image: %w", err)
	}
	if err := vw.Close(); err != nil {
		return fmt.Errorf("image: %s: %w", out, err)
	}
	cnt.Done()
	done()
	raw := vw.RawSHA256()
	res.RawSHA256 = hex.EncodeToString(raw[:])
	res.Size = vw.FileSize()
	res.StoredBlocks = vw.StoredBlocks()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f.File, 0, res.Size)); err != nil {
		return fmt.Errorf("image: %s: hashing: %w", out, err)
	}
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	if fi, err := f.Stat(); err != nil || fi.Size() != res.Size {
		return fmt.Errorf("image: %s: file size does not match the layout (%d bytes)", out, res.Size)
	}
	return f.Commit(0o644)
}
