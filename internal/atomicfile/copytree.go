package atomicfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"
)

// LinkPolicy says what a tree copy does with symbolic links.
type LinkPolicy int

// Link policies.
const (
	// LinksKeep recreates each symlink with its target as stored. Writes
	// into the copy go through an os.Root, so a kept link can never make
	// the copy write outside its destination.
	LinksKeep LinkPolicy = iota
	// LinksRefuse makes any symlink an error: for trees that third-party
	// code produced (shard artefacts), where a link is never legitimate.
	LinksRefuse
	// LinksSkip leaves symlinks out.
	LinksSkip
)

// IrregularPolicy says what a tree copy does with devices, FIFOs and
// sockets.
type IrregularPolicy int

// Irregular-file policies.
const (
	// IrregularRefuse makes any irregular file an error.
	IrregularRefuse IrregularPolicy = iota
	// IrregularSkip leaves them out.
	IrregularSkip
)

// CopyOptions control CopyTree and CopyFS.
type CopyOptions struct {
	// Links is the symlink policy (default LinksKeep).
	Links LinkPolicy
	// Irregular is the policy for devices, FIFOs and sockets (default
	// IrregularRefuse).
	Irregular IrregularPolicy
	// Merge lets the destination exist: directories merge, and a file or
	// link present on both sides is an error (nothing is overwritten).
	Merge bool
	// HardLink makes CopyTree hard-link regular files instead of copying
	// them where the file system allows (a copy otherwise). Only for
	// sources whose files are never modified in place.
	HardLink bool
	// Skip, if set, is called with each slash-separated path below the
	// root; true leaves the entry (with a directory's contents) out.
	Skip func(p string, d fs.DirEntry) bool
	// Times keeps the modification times of files and directories (for
	// copies make must find up to date, like a kernel object tree).
	Times bool
}

// CopyTree copies the host directory src into dst (see CopyFS). src is
// read through an os.Root, so links inside it cannot make the copy read
// outside it.
func CopyTree(ctx context.Context, src, dst string, o CopyOptions) error {
	r, err := os.OpenRoot(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer r.Close()
	host := ""
	if o.HardLink {
		host = src
	}
	return copyFS(ctx, r.FS(), host, dst, o)
}

// CopyFS copies the tree of fsys into the directory dst, which is created
// with its missing parents (it must not exist unless o.Merge is set). Directories keep their
// permission bits (at least u+rwx while copying), regular files their
// permission bits without setuid/setgid, symlinks follow o.Links and
// irregular files o.Irregular. Every write goes through an os.Root of
// dst. fsys must implement fs.ReadLinkFS to copy symlinks. On error the
// copy is left incomplete; callers write into a temporary directory
// (CreateDir) and commit it only on success.
func CopyFS(ctx context.Context, fsys fs.FS, dst string, o CopyOptions) error {
	return copyFS(ctx, fsys, "", dst, o)
}

type dirPerm struct {
	name  string
	perm  fs.FileMode
	mtime time.Time
}

func copyFS(ctx context.Context, fsys fs.FS, host, dst string, o CopyOptions) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if err := os.Mkdir(dst, 0o700); err != nil && !(o.Merge && errors.Is(err, fs.ErrExist)) {
		return fmt.Errorf("copy: %w", err)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer root.Close()
	c := &copier{ctx: ctx, fsys: fsys, host: host, dst: dst, root: root, o: o}
	if err := fs.WalkDir(fsys, ".", c.visit); err != nil {
		return err
	}
	// Directory modes last, deepest first, so read-only directories do
	// not stop their own filling.
	for i := len(c.dirs) - 1; i >= 0; i-- {
		d := c.dirs[i]
		if err := root.Chmod(d.name, d.perm); err != nil {
			return fmt.Errorf("copy: %s: %w", filepath.Join(dst, d.name), err)
		}
		if o.Times {
			if err := root.Chtimes(d.name, d.mtime, d.mtime); err != nil {
				return fmt.Errorf("copy: %s: %w", filepath.Join(dst, d.name), err)
			}
		}
	}
	return nil
}

type copier struct {
	ctx  context.Context
	fsys fs.FS
	host string // host directory of fsys, for hard links ("" for none)
	dst  string
	root *os.Root
	o    CopyOptions
	dirs []dirPerm
}

func (c *copier) visit(p string, d fs.DirEntry, err error) error {
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if p != "." && c.o.Skip != nil && c.o.Skip(p, d) {
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	}
	switch t := d.Type(); {
	case t.IsDir():
		return c.dir(p, d)
	case t&fs.ModeSymlink != 0:
		return c.link(p)
	case t.IsRegular():
		return c.file(p, d)
	case c.o.Irregular == IrregularSkip:
		return nil
	default:
		return fmt.Errorf("copy: %s: not a regular file, directory or symlink (%s)", p, t)
	}
}

func (c *copier) dir(p string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	perm := info.Mode() & (fs.ModePerm | fs.ModeSticky | fs.ModeSetgid)
	if p != "." {
		err := c.root.Mkdir(p, 0o700)
		if err != nil && !(c.o.Merge && errors.Is(err, fs.ErrExist)) {
			return fmt.Errorf("copy: %s: %w", filepath.Join(c.dst, p), err)
		}
		if err != nil {
			// Merging into an existing entry: it must be a real directory.
			if st, lerr := c.root.Lstat(p); lerr != nil || !st.IsDir() {
				return fmt.Errorf("copy: %s exists and is not a directory", filepath.Join(c.dst, p))
			}
			return nil
		}
	} else if c.o.Merge {
		return nil
	}
	c.dirs = append(c.dirs, dirPerm{p, perm, info.ModTime()})
	return nil
}

func (c *copier) link(p string) error {
	switch c.o.Links {
	case LinksSkip:
		return nil
	case LinksRefuse:
		return fmt.Errorf("copy: %s is a symbolic link, which is not allowed here", p)
	}
	target, err := fs.ReadLink(c.fsys, p)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if err := c.root.Symlink(target, p); err != nil {
		return fmt.Errorf("copy: %s: %w", filepath.Join(c.dst, p), err)
	}
	return nil
}

func (c *copier) file(p string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	perm := info.Mode().Perm()
	if c.host != "" {
		// The parents of p were made by this copy, through the root, so
		// the host path has no links in it.
		if os.Link(filepath.Join(c.host, filepath.FromSlash(p)), filepath.Join(c.dst, filepath.FromSlash(p))) == nil {
			return nil
		}
	}
	in, err := c.fsys.Open(p)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer in.Close()
	out, err := c.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy: %s: %w", filepath.Join(c.dst, p), err)
	}
	_, err = io.Copy(out, ctxReader{c.ctx, in})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy: %s: %w", path.Join(c.dst, p), err)
	}
	if err := c.root.Chmod(p, perm); err != nil {
		return fmt.Errorf("copy: %s: %w", filepath.Join(c.dst, p), err)
	}
	if c.o.Times {
		if err := c.root.Chtimes(p, info.ModTime(), info.ModTime()); err != nil {
			return fmt.Errorf("copy: %s: %w", filepath.Join(c.dst, p), err)
		}
	}
	return nil
}

// ctxReader stops a long copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
