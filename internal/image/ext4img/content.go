package ext4img

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"sort"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/diskio"
)

// copyChunk is the largest read CopyContent makes at once; cancellation is
// checked between chunks.
const copyChunk = 1 << 20

// content is the mapped content of one inode.
type content struct {
	f    *FS
	ino  uint32
	size int64
	runs []run
}

func (f *FS) content(in *Inode) (*content, error) {
	runs, err := f.runs(in)
	if err != nil {
		return nil, err
	}
	return &content{f: f, ino: in.Ino, size: in.Size, runs: runs}, nil
}

// segment describes the bytes at off: n bytes that are a hole or unwritten
// (disk < 0), or stored at disk offset disk.
func (c *content) segment(off int64) (n, disk int64) {
	bs := c.f.bs
	lb := uint64(off / bs)
	i := sort.Search(len(c.runs), func(i int) bool { return c.runs[i].lblk+uint64(c.runs[i].n) > lb })
	if i == len(c.runs) {
		return c.size - off, -1
	}
	r := c.runs[i]
	start := int64(r.lblk) * bs
	if off < start {
		return min(start, c.size) - off, -1
	}
	n = min(start+int64(r.n)*bs, c.size) - off
	if r.zero {
		return n, -1
	}
	return n, int64(r.pblk)*bs + off - start
}

// ReadAt reads the content; holes and unwritten extents read as zeros.
func (c *content) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%sinode %d: negative offset %d", c.f.where(), c.ino, off)
	}
	p, eof := diskio.Clip(p, off, c.size)
	done := 0
	for done < len(p) {
		n, disk := c.segment(off)
		n = min(n, int64(len(p)-done))
		q := p[done : done+int(n)]
		if disk < 0 {
			clear(q)
		} else if err := diskio.ReadFull(c.f.r, q, disk); err != nil {
			return done, fmt.Errorf("%sinode %d: reading at offset %d: %w", c.f.where(), c.ino, off, err)
		}
		done += int(n)
		off += n
	}
	return done, eof
}

// sparseFile is a destination that can skip holes (an *os.File).
type sparseFile interface {
	io.Writer
	io.Seeker
	Truncate(size int64) error
}

// CopyContent writes the content of a regular file, directory or slow
// symlink to w, checking ctx between chunks of at most 1 MiB. Holes and
// unwritten extents read as zeros; if w is a file (it has Seek and
// Truncate, and is positioned at its start) they are skipped, leaving
// holes, instead of written.
func (f *FS) CopyContent(ctx context.Context, in *Inode, w io.Writer) error {
	if in.fastLink {
		_, err := w.Write(in.raw[0x28 : 0x28+in.Size])
		return err
	}
	c, err := f.content(in)
	if err != nil {
		return err
	}
	sf, sparse := w.(sparseFile)
	buf := make([]byte, min(copyChunk, max(f.bs, (c.size+f.bs-1)/f.bs*f.bs)))
	var off int64
	seek := false
	for off < c.size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, disk := c.segment(off)
		n = min(n, int64(len(buf)))
		if disk < 0 && sparse {
			off += n
			seek = true
			continue
		}
		if seek {
			if _, err := sf.Seek(off, io.SeekStart); err != nil {
				return err
			}
			seek = false
		}
		if _, err := c.ReadAt(buf[:n], off); err != nil && err != io.EOF {
			return err
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		off += n
	}
	if seek {
		return sf.Truncate(c.size)
	}
	return nil
}

// WriteContent is CopyContent without cancellation.
func (f *FS) WriteContent(in *Inode, w io.Writer) error {
	return f.CopyContent(context.Background(), in, w)
}

// LinkTarget returns a symlink's target.
func (f *FS) LinkTarget(in *Inode) (string, error) {
	if in.Mode&fs.ModeSymlink == 0 {
		return "", f.corrupt("inode %d is not a symlink", in.Ino)
	}
	if in.fastLink {
		return string(in.raw[0x28 : 0x28+in.Size]), nil
	}
	c, err := f.content(in)
	if err != nil {
		return "", err
	}
	b := make([]byte, c.size)
	if _, err := c.ReadAt(b, 0); err != nil && err != io.EOF {
		return "", err
	}
	return string(b), nil
}
