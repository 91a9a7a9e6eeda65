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

// Disk is an opened disk image: its virtual disk content through ReadAt.
type Disk struct {
	io.ReaderAt
	// Format is "vhdx", "vhd-fixed", "vhd-dynamic" or "raw".
	Format string
	size   int64
	f      *os.File
}

// Size returns the virtual disk size.
func (d *Disk) Size() int64 { return d.size }

// Close closes the underlying file.
func (d *Disk) Close() error { return d.f.Close() }

// OpenDisk opens a VHDX, a VHD (fixed or dynamic) or a raw disk image,
// detected by content, and validates its container structures.
func OpenDisk(p string) (*Disk, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	d, err := openDisk(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image: %s: %w", p, err)
	}
	return d, nil
}

func openDisk(f *os.File) (*Disk, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	size := fi.Size()
	head := make([]byte, 512)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	if strings.HasPrefix(string(head), "vhdxfile") {
		v, err := vhdx.Open(f, size)
		if err != nil {
			return nil, err
		}
		return &Disk{ReaderAt: v, Format: "vhdx", size: v.Size(), f: f}, nil
	}
	tail := make([]byte, 512)
	if size >= 512 {
		f.ReadAt(tail, size-512)
	}
	if vhd.IsVHD(tail) || vhd.IsVHD(head) {
		v, err := vhd.Open(f, size)
		if err != nil {
			return nil, err
		}
		format := "vhd-fixed"
		if v.Dynamic() {
			format = "vhd-dynamic"
		}
		return &Disk{ReaderAt: v, Format: format, size: v.Size(), f: f}, nil
	}
	if size == 0 {
		return nil, errors.New("empty file")
	}
	return &Disk{ReaderAt: f, Format: "raw", size: size, f: f}, nil
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
// root itself is reported with Path "". Names that could escape a
// directory ("", ".", "..", or containing '/' or NUL) are an error.
func Walk(d *Disk, fn func(e Entry) error) error {
	efs, err := ext4img.Open(d, d.Size())
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return walk(efs, fn)
}

func walk(efs *ext4img.FS, fn func(e Entry) error) error {
	seen := map[uint32]bool{}
	var visit func(ino uint32, p string) error
	visit = func(ino uint32, p string) error {
		in, err := efs.ReadInode(ino)
		if err != nil {
			return fmt.Errorf("image: /%s: %w", p, err)
		}
		e := Entry{Path: p, Mode: in.Mode, Size: in.Size, UID: in.UID, GID: in.GID, MTime: in.MTime, ino: in, efs: efs}
		if in.Mode&fs.ModeSymlink != 0 {
			if e.Target, err = efs.ReadLink(in); err != nil {
				return fmt.Errorf("image: /%s: %w", p, err)
			}
		}
		if err := fn(e); err != nil {
			return err
		}
		if !in.Mode.IsDir() {
			return nil
		}
		if seen[ino] {
			return fmt.Errorf("image: /%s: directory loop (inode %d): %w", p, ino, ext4img.ErrCorrupt)
		}
		seen[ino] = true
		ents, err := efs.ReadDir(in)
		if err != nil {
			return fmt.Errorf("image: /%s: %w", p, err)
		}
		for _, c := range ents {
			if c.Name == "" || c.Name == "." || c.Name == ".." || strings.ContainsAny(c.Name, "/\x00") {
				return fmt.Errorf("image: /%s: invalid name %q: %w", p, c.Name, ext4img.ErrCorrupt)
			}
			if err := visit(c.Ino, path.Join(p, c.Name)); err != nil {
				return err
			}
		}
		return nil
	}
	return visit(ext4img.RootIno, "")
}

// Extract writes every entry of the image on d into the new directory
// dest, atomically (a temporary directory renamed into place): regular
// files with their bytes and permission bits, directories, and symlinks
// with their targets. lost+found is skipped when empty. Ownership is not
// restored. Device nodes, FIFOs and sockets are an error. An existing dest
// is an error unless force is set.
func Extract(ctx context.Context, d *Disk, dest string, force bool) (n int, err error) {
	efs, err := ext4img.Open(d, d.Size())
	if err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
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
	type dirMode struct {
		p    string
		mode fs.FileMode
	}
	var dirs []dirMode
	err = walk(efs, func(e Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := e.Path
		if name == "" {
			dirs = append(dirs, dirMode{".", e.Mode})
			return nil
		}
		switch t := e.Mode.Type(); {
		case t == fs.ModeDir:
			if name == "lost+found" {
				// Recreated by mkfs/e2fsck; keep it only if it has content.
				if ents, err := efs.ReadDir(e.ino); err == nil && len(ents) == 0 {
					return nil
				}
			}
			if err := root.Mkdir(name, 0o700); err != nil {
				return fmt.Errorf("image: extract /%s: %w", name, err)
			}
			dirs = append(dirs, dirMode{name, e.Mode})
		case t == fs.ModeSymlink:
			if err := root.Symlink(e.Target, name); err != nil {
				return fmt.Errorf("image: extract /%s: %w", name, err)
			}
		case t == 0:
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("image: extract /%s: %w", name, err)
			}
			werr := efs.WriteContent(e.ino, f)
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				return fmt.Errorf("image: extract /%s: %w", name, werr)
			}
			if err := root.Chmod(name, e.Mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return fmt.Errorf("image: extract /%s: %w", name, err)
			}
		default:
			return fmt.Errorf("image: extract /%s: %s is not supported", name, describeType(t))
		}
		n++
		return nil
	})
	if err != nil {
		return 0, err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := root.Chmod(dirs[i].p, dirs[i].mode&(fs.ModePerm|fs.ModeSetgid|fs.ModeSticky|fs.ModeSetuid)); err != nil {
			return 0, fmt.Errorf("image: extract /%s: %w", dirs[i].p, err)
		}
	}
	if err := ad.Commit(); err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	// Commit sets the top directory to 0755; restore the image root's mode.
	if err := os.Chmod(dest, dirs[0].mode&fs.ModePerm); err != nil {
		return n, fmt.Errorf("image: %w", err)
	}
	return n, nil
}
