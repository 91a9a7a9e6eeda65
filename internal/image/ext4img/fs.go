package ext4img

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MaxReadFileSize is the largest file ReadFile reads into memory; larger
// files (and sparse ones that claim more) are read through Open.
const MaxReadFileSize = 1 << 30

var (
	_ fs.FS         = (*FS)(nil)
	_ fs.StatFS     = (*FS)(nil)
	_ fs.ReadDirFS  = (*FS)(nil)
	_ fs.ReadFileFS = (*FS)(nil)
	_ fs.ReadLinkFS = (*FS)(nil)
)

// resolve looks up name (an fs.ValidPath) from the root without following
// symlinks: an intermediate symlink is always an error, a final one only
// unless lstat is set. Every directory on the way must name the previous
// one as its parent. Errors are *fs.PathError.
func (f *FS) resolve(op, name string, lstat bool) (*Inode, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	cur := f.root
	if name == "." {
		return cur, nil
	}
	rest, done := name, 0
	for rest != "" {
		comp, tail, _ := strings.Cut(rest, "/")
		if err := f.checkTraversable(cur, name[:done]); err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		d, err := f.dir(cur)
		if err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		ino, ok := d.lookup(comp)
		if !ok {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		child, err := f.child(cur, d, DirEntry{Name: comp, Ino: ino})
		if err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		cur, rest = child, tail
		done += len(comp) + 1
	}
	if !lstat && cur.Mode&fs.ModeSymlink != 0 {
		return nil, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("%s%s is a %w", f.where(), name, ErrSymlink)}
	}
	return cur, nil
}

// checkTraversable reports why directory-like traversal through in (the
// path prefix p) is impossible.
func (f *FS) checkTraversable(in *Inode, p string) error {
	p = strings.TrimSuffix(p, "/")
	switch {
	case in.Mode&fs.ModeSymlink != 0:
		return fmt.Errorf("%s%s is a %w", f.where(), p, ErrSymlink)
	case !in.Mode.IsDir():
		return fmt.Errorf("%s%s: %w", f.where(), p, syscall.ENOTDIR)
	}
	return nil
}

// Open opens the named file or directory (not a symlink). Regular files
// implement io.ReaderAt and io.Seeker, directories fs.ReadDirFile.
// Stat, ReadAt and ReadDir on an opened file are safe for concurrent use;
// Read and Seek are too, but share one offset.
func (f *FS) Open(name string) (fs.File, error) {
	in, err := f.resolve("open", name, false)
	if err != nil {
		return nil, err
	}
	info := &fileInfo{name: path.Base(name), in: in}
	if in.Mode.IsDir() {
		return &dirFile{f: f, info: info, path: name}, nil
	}
	of := &File{info: info}
	if in.Mode.IsRegular() {
		if of.c, err = f.content(in); err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
	}
	of.path = name
	return of, nil
}

// Stat returns the FileInfo of the named file; a final symlink is an error.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	in, err := f.resolve("stat", name, false)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: path.Base(name), in: in}, nil
}

// Lstat returns the FileInfo of the named file, describing a final
// symlink itself.
func (f *FS) Lstat(name string) (fs.FileInfo, error) {
	in, err := f.resolve("lstat", name, true)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: path.Base(name), in: in}, nil
}

// ReadLink returns the target of the named symlink.
func (f *FS) ReadLink(name string) (string, error) {
	in, err := f.resolve("readlink", name, true)
	if err != nil {
		return "", err
	}
	if in.Mode&fs.ModeSymlink == 0 {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	t, err := f.LinkTarget(in)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return t, nil
}

// ReadDir returns the entries of the named directory sorted by name.
// Each entry's Info is already read (it never fails).
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	in, err := f.resolve("readdir", name, false)
	if err != nil {
		return nil, err
	}
	ents, err := f.dirEntries(in)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	return ents, nil
}

// dirEntries lists directory in as fs.DirEntry values, reading every
// child's inode.
func (f *FS) dirEntries(in *Inode) ([]fs.DirEntry, error) {
	if !in.Mode.IsDir() {
		return nil, fmt.Errorf("%sinode %d: %w", f.where(), in.Ino, syscall.ENOTDIR)
	}
	d, err := f.dir(in)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, 0, len(d.ents))
	for _, e := range d.ents {
		c, err := f.ReadInode(e.Ino)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", e.Name, err)
		}
		out = append(out, fs.FileInfoToDirEntry(&fileInfo{name: e.Name, in: c}))
	}
	return out, nil
}

// ReadFile returns the content of the named regular file. Files larger
// than MaxReadFileSize are refused.
func (f *FS) ReadFile(name string) ([]byte, error) {
	in, err := f.resolve("readfile", name, false)
	if err != nil {
		return nil, err
	}
	switch {
	case in.Mode.IsDir():
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: syscall.EISDIR}
	case !in.Mode.IsRegular():
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: fmt.Errorf("%s is %v, not a regular file: %w", name, in.Mode.Type(), fs.ErrInvalid)}
	case in.Size > MaxReadFileSize:
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: fmt.Errorf("%sinode %d: %d bytes is above the %d bytes ReadFile reads (use Open)", f.where(), in.Ino, in.Size, MaxReadFileSize)}
	}
	c, err := f.content(in)
	if err != nil {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: err}
	}
	b := make([]byte, c.size)
	if _, err := c.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: err}
	}
	return b, nil
}

// fileInfo is the fs.FileInfo of an inode.
type fileInfo struct {
	name string
	in   *Inode
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.in.Size }
func (i *fileInfo) Mode() fs.FileMode  { return i.in.Mode }
func (i *fileInfo) ModTime() time.Time { return time.Unix(i.in.MTime, i.in.MTimeNsec) }
func (i *fileInfo) IsDir() bool        { return i.in.Mode.IsDir() }

// Sys returns the *Inode (owner, times, inode number).
func (i *fileInfo) Sys() any { return i.in }

// File is an opened regular file (or device, FIFO or socket, which have no
// content to read). ReadAt and Stat are safe for concurrent use; Read and
// Seek are serialised and share the file offset.
type File struct {
	info   *fileInfo
	path   string
	c      *content
	mu     sync.Mutex
	off    int64
	closed bool
}

var (
	_ io.ReaderAt = (*File)(nil)
	_ io.Seeker   = (*File)(nil)
)

// Stat returns the file's FileInfo.
func (o *File) Stat() (fs.FileInfo, error) { return o.info, nil }

// Close marks the file closed; later reads fail with fs.ErrClosed.
func (o *File) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return &fs.PathError{Op: "close", Path: o.path, Err: fs.ErrClosed}
	}
	o.closed = true
	return nil
}

// ReadAt reads len(p) bytes at off (io.ReaderAt).
func (o *File) ReadAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return 0, &fs.PathError{Op: "read", Path: o.path, Err: fs.ErrClosed}
	}
	if o.c == nil {
		return 0, &fs.PathError{Op: "read", Path: o.path, Err: fmt.Errorf("%v is not a regular file: %w", o.info.in.Mode.Type(), fs.ErrInvalid)}
	}
	n, err := o.c.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = &fs.PathError{Op: "read", Path: o.path, Err: err}
	}
	return n, err
}

// Read reads from the current offset.
func (o *File) Read(p []byte) (int, error) {
	o.mu.Lock()
	off := o.off
	o.mu.Unlock()
	n, err := o.ReadAt(p, off)
	o.mu.Lock()
	o.off = off + int64(n)
	o.mu.Unlock()
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek sets the offset for the next Read (io.Seeker).
func (o *File) Seek(offset int64, whence int) (int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, &fs.PathError{Op: "seek", Path: o.path, Err: fs.ErrClosed}
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += o.off
	case io.SeekEnd:
		offset += o.info.in.Size
	default:
		return 0, &fs.PathError{Op: "seek", Path: o.path, Err: fs.ErrInvalid}
	}
	if offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: o.path, Err: fs.ErrInvalid}
	}
	o.off = offset
	return offset, nil
}

// dirFile is an opened directory.
type dirFile struct {
	f      *FS
	info   *fileInfo
	path   string
	mu     sync.Mutex
	ents   []fs.DirEntry
	read   bool
	closed bool
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.path, Err: syscall.EISDIR}
}

func (d *dirFile) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return &fs.PathError{Op: "close", Path: d.path, Err: fs.ErrClosed}
	}
	d.closed = true
	return nil
}

// ReadDir implements fs.ReadDirFile: n > 0 returns at most n entries and
// io.EOF at the end, n <= 0 all remaining entries.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, &fs.PathError{Op: "readdir", Path: d.path, Err: fs.ErrClosed}
	}
	if !d.read {
		ents, err := d.f.dirEntries(d.info.in)
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: d.path, Err: err}
		}
		d.ents, d.read = ents, true
	}
	if n <= 0 {
		out := d.ents
		d.ents = nil
		return out, nil
	}
	if len(d.ents) == 0 {
		return nil, io.EOF
	}
	k := min(n, len(d.ents))
	out := d.ents[:k:k]
	d.ents = d.ents[k:]
	return out, nil
}
