package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/image/ext4img"
	"github.com/wsl-modules/wsl-modules-action/internal/image/vhd"
	"github.com/wsl-modules/wsl-modules-action/internal/image/vhdx"
)

// Disk is an opened disk image: its virtual disk content through ReadAt,
// which is safe for concurrent use.
type Disk struct {
	io.ReaderAt
	// Format is "vhdx", "vhd-fixed", "vhd-dynamic" or "raw".
	Format string
	size   int64
	name   string
	f      io.Closer
}

// Size returns the virtual disk size.
func (d *Disk) Size() int64 { return d.size }

// Name returns the image file's path.
func (d *Disk) Name() string { return d.name }

// Close closes the underlying file.
func (d *Disk) Close() error {
	if d.f == nil {
		return nil
	}
	return d.f.Close()
}

// OpenDisk opens a VHDX, a VHD (fixed or dynamic) or a raw disk image,
// detected by content, and validates its container structures.
func OpenDisk(p string) (*Disk, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	var d *Disk
	if err == nil {
		d, err = openDisk(f, fi.Size(), p)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image: %s: %w", p, err)
	}
	d.f = f
	return d, nil
}

// openDisk detects the container format of r (size bytes) and opens it.
func openDisk(r io.ReaderAt, size int64, name string) (*Disk, error) {
	head := make([]byte, 512)
	n, _ := r.ReadAt(head, 0)
	head = head[:n]
	if strings.HasPrefix(string(head), "vhdxfile") {
		v, err := vhdx.Open(r, size)
		if err != nil {
			return nil, err
		}
		return &Disk{ReaderAt: v, Format: "vhdx", size: v.Size(), name: name}, nil
	}
	tail := make([]byte, 512)
	if size >= 512 {
		if _, err := r.ReadAt(tail, size-512); err != nil && err != io.EOF {
			return nil, fmt.Errorf("reading the last sector: %w", err)
		}
	}
	if vhd.IsVHD(tail) || vhd.IsVHD(head) {
		v, err := vhd.Open(r, size)
		if err != nil {
			return nil, err
		}
		format := "vhd-fixed"
		if v.Dynamic() {
			format = "vhd-dynamic"
		}
		return &Disk{ReaderAt: v, Format: format, size: v.Size(), name: name}, nil
	}
	if size == 0 {
		return nil, errors.New("empty file")
	}
	return &Disk{ReaderAt: r, Format: "raw", size: size, name: name}, nil
}

// ext4 opens the filesystem on the disk.
func (d *Disk) ext4() (*ext4img.FS, error) {
	efs, err := ext4img.OpenNamed(d, d.Size(), d.name)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return efs, nil
}

// FS is a disk image (VHDX, VHD or raw) and the ext4 filesystem on it,
// read in place: it implements fs.FS, fs.StatFS, fs.ReadDirFS,
// fs.ReadFileFS and fs.ReadLinkFS through the embedded *ext4img.FS, never
// follows symlinks, and is safe for concurrent use by multiple goroutines
// (see ext4img.FS). Close it when done.
type FS struct {
	*ext4img.FS
	// Format is the container format, as Disk.Format.
	Format string
	disk   *Disk
}

// OpenFS opens the image file p as a file system.
func OpenFS(p string) (*FS, error) {
	d, err := OpenDisk(p)
	if err != nil {
		return nil, err
	}
	efs, err := d.ext4()
	if err != nil {
		d.Close()
		return nil, err
	}
	return &FS{FS: efs, Format: d.Format, disk: d}, nil
}

// Disk returns the opened disk under the filesystem.
func (f *FS) Disk() *Disk { return f.disk }

// Close closes the image file. Files opened from f must not be used after.
func (f *FS) Close() error { return f.disk.Close() }

// Walk calls fn for every entry of the file system, as the package-level
// Walk does.
func (f *FS) Walk(fn func(e Entry) error) error { return walk(f.FS, fn) }

// Extract extracts the file system into dest, as the package-level Extract
// does.
func (f *FS) Extract(ctx context.Context, dest string, force bool) (int, error) {
	return extract(ctx, f.FS, dest, force)
}

// Entry is one file in an image.
type Entry struct {
	// Path is the slash-separated path below the image root ("" for the root).
	Path string
	// Mode is the type and permission bits.
	Mode fs.FileMode
	// Size is the byte size (of the target text for symlinks).
	Size int64
	// Target is a symlink's target.
	Target string
	// UID and GID are the owner.
	UID, GID uint32
	// MTime is the modification time in Unix seconds.
	MTime int64
	ino   *ext4img.Inode
	efs   *ext4img.FS
}

// WriteTo streams the content of a regular file entry to w.
func (e Entry) WriteTo(w io.Writer) (int64, error) {
	if !e.Mode.IsRegular() {
		return 0, fmt.Errorf("image: /%s is not a regular file", e.Path)
	}
	cw := &countWriter{w: w}
	err := e.efs.WriteContent(e.ino, cw)
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Walk calls fn for every entry of the ext4 filesystem on disk, depth
// first with names in byte order, directories before their contents. The
// root itself is reported with Path "". Symlinks are reported, never
// followed. Malformed directories (invalid names such as "/", NUL or extra
// "." and ".." entries, duplicate names, hard-linked directories or loops)
// are an error wrapping ext4img.ErrCorrupt. As with fs.WalkDir, fn may
// return fs.SkipDir or fs.SkipAll.
func Walk(d *Disk, fn func(e Entry) error) error {
	efs, err := d.ext4()
	if err != nil {
		return err
	}
	return walk(efs, fn)
}

func walk(efs *ext4img.FS, fn func(e Entry) error) error {
	return fs.WalkDir(efs, ".", func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if p == "." {
			p = ""
		}
		info, err := de.Info()
		if err != nil {
			return fmt.Errorf("image: /%s: %w", p, err)
		}
		in := info.Sys().(*ext4img.Inode)
		e := Entry{Path: p, Mode: in.Mode, Size: in.Size, UID: in.UID, GID: in.GID, MTime: in.MTime, ino: in, efs: efs}
		if in.Mode&fs.ModeSymlink != 0 {
			if e.Target, err = efs.LinkTarget(in); err != nil {
				return fmt.Errorf("image: /%s: %w", p, err)
			}
		}
		return fn(e)
	})
}

// Extract writes every entry of the image on d into the new directory
// dest, atomically (a temporary directory renamed into place): regular
// files with their bytes and permission bits, directories, and symlinks
// with their targets. Setuid and setgid bits are dropped (the image is not
// trusted); holes in files stay holes. lost+found is skipped when empty.
// Ownership is not restored. Device nodes, FIFOs and sockets are an error.
// An existing dest is an error unless force is set. Cancelling ctx stops
// the extraction within about a megabyte of copying and leaves nothing
// behind.
func Extract(ctx context.Context, d *Disk, dest string, force bool) (n int, err error) {
	efs, err := d.ext4()
	if err != nil {
		return 0, err
	}
	return extract(ctx, efs, dest, force)
}

// extractPerm is the mode bits Extract keeps for files and directories.
const extractPerm = fs.ModePerm | fs.ModeSticky

func extract(ctx context.Context, efs *ext4img.FS, dest string, force bool) (n int, err error) {
	ad, err := atomicfile.CreateDir(dest, force)
	if err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	defer ad.Abort()
	root, err := os.OpenRoot(ad.Tmp)
	if err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	defer root.Close()
	x := &extractor{ctx: ctx, efs: efs, root: root}
	if err := walk(efs, x.entry); err != nil {
		return 0, err
	}
	for i := len(x.dirs) - 1; i >= 0; i-- {
		if err := root.Chmod(x.dirs[i].p, x.dirs[i].mode&extractPerm); err != nil {
			return 0, fmt.Errorf("image: extract /%s: %w", x.dirs[i].p, err)
		}
	}
	if err := root.Close(); err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	if err := ad.Commit(); err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	// Commit sets the top directory to 0755; restore the image root's mode.
	if err := os.Chmod(dest, x.dirs[0].mode&fs.ModePerm); err != nil {
		return x.n, fmt.Errorf("image: %w", err)
	}
	return x.n, nil
}

type dirMode struct {
	p    string
	mode fs.FileMode
}

// extractor writes walked entries below root.
type extractor struct {
	ctx  context.Context
	efs  *ext4img.FS
	root *os.Root
	dirs []dirMode
	n    int
}

func (x *extractor) entry(e Entry) error {
	if err := x.ctx.Err(); err != nil {
		return err
	}
	name := e.Path
	if name == "" {
		x.dirs = append(x.dirs, dirMode{".", e.Mode})
		return nil
	}
	if !fs.ValidPath(name) || path.Clean(name) != name {
		return fmt.Errorf("image: extract %q: not a clean relative path", name)
	}
	switch t := e.Mode.Type(); {
	case t == fs.ModeDir:
		if name == "lost+found" {
			// Recreated by mkfs/e2fsck; keep it only if it has content.
			if ents, err := x.efs.DirEntries(e.ino); err == nil && len(ents) == 0 {
				return fs.SkipDir
			}
		}
		if err := x.root.Mkdir(name, 0o700); err != nil {
			return fmt.Errorf("image: extract /%s: %w", name, err)
		}
		x.dirs = append(x.dirs, dirMode{name, e.Mode})
	case t == fs.ModeSymlink:
		if err := x.root.Symlink(e.Target, name); err != nil {
			return fmt.Errorf("image: extract /%s: %w", name, err)
		}
	case t == 0:
		if err := x.file(e); err != nil {
			return fmt.Errorf("image: extract /%s: %w", name, err)
		}
	default:
		return fmt.Errorf("image: extract /%s: %s is not supported", name, describeType(t))
	}
	x.n++
	return nil
}

// file writes one regular file, without its setuid and setgid bits.
func (x *extractor) file(e Entry) error {
	f, err := x.root.OpenFile(e.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	werr := x.efs.CopyContent(x.ctx, e.ino, f)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return werr
	}
	return x.root.Chmod(e.Path, e.Mode&fs.ModePerm)
}
