package ext4img

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
)

// ErrCorrupt is wrapped by every error about a malformed filesystem.
var ErrCorrupt = errors.New("corrupt or unsupported ext4 filesystem")

func corrupt(format string, a ...any) error {
	return fmt.Errorf("ext4: %s: %w", fmt.Sprintf(format, a...), ErrCorrupt)
}

var le = binary.LittleEndian

// FS is a read-only view of an ext2/3/4 filesystem. It reads extents and
// classic block maps, linear and hashed (htree) directories, and fast and
// slow symlinks; it ignores checksums and the journal.
type FS struct {
	r         io.ReaderAt
	bs        int64
	blocks    uint64
	ipg       uint32
	inodes    uint32
	inodeSize int64
	descSize  int64
	groups    uint64
	gdt       []byte
	filetype  bool
}

// Open reads the superblock and group descriptors of the filesystem that
// starts at offset 0 of r (size bytes long).
func Open(r io.ReaderAt, size int64) (*FS, error) {
	sb := make([]byte, 1024)
	if size < 2048 {
		return nil, corrupt("disk of %d bytes is too small to hold an ext4 superblock (not a VHDX, VHD or ext4 image?)", size)
	}
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return nil, fmt.Errorf("ext4: reading superblock: %w", err)
	}
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return nil, corrupt("no ext2/3/4 superblock magic at byte 1080")
	}
	f := &FS{r: r}
	lbs := le.Uint32(sb[0x18:])
	if lbs > 6 {
		return nil, corrupt("block size 2^(10+%d)", lbs)
	}
	f.bs = 1024 << lbs
	f.blocks = uint64(le.Uint32(sb[0x4:]))
	incompat := le.Uint32(sb[0x60:])
	if incompat&0x80 != 0 {
		f.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		f.descSize = int64(le.Uint16(sb[0xFE:]))
	}
	if f.descSize < 32 {
		f.descSize = 32
	}
	if incompat&0x10 != 0 {
		return nil, corrupt("meta_bg layout is not supported")
	}
	if incompat&0x1 != 0 {
		return nil, corrupt("compressed filesystems are not supported")
	}
	f.filetype = incompat&0x2 != 0
	if int64(f.blocks)*f.bs > size {
		return nil, corrupt("filesystem of %d blocks of %d bytes is larger than the disk (%d bytes; truncated?)", f.blocks, f.bs, size)
	}
	first := uint64(le.Uint32(sb[0x14:]))
	bpg := uint64(le.Uint32(sb[0x20:]))
	f.ipg = le.Uint32(sb[0x28:])
	f.inodes = le.Uint32(sb[0x0:])
	f.inodeSize = 128
	if le.Uint32(sb[0x4C:]) >= 1 {
		f.inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	if bpg == 0 || f.ipg == 0 || f.inodeSize < 128 || f.inodeSize > f.bs || f.blocks <= first {
		return nil, corrupt("bad geometry (blocks per group %d, inodes per group %d, inode size %d)", bpg, f.ipg, f.inodeSize)
	}
	f.groups = (f.blocks - first + bpg - 1) / bpg
	f.gdt = make([]byte, f.groups*uint64(f.descSize))
	if _, err := r.ReadAt(f.gdt, int64(first+1)*f.bs); err != nil {
		return nil, fmt.Errorf("ext4: reading group descriptors: %w", err)
	}
	return f, nil
}

// BlockSize returns the filesystem block size.
func (f *FS) BlockSize() int64 { return f.bs }

// Inode is the decoded part of an inode needed to list and extract files.
type Inode struct {
	// Ino is the inode number.
	Ino uint32
	// Mode is the Go file mode: type and permission bits.
	Mode fs.FileMode
	// Size is the byte size.
	Size int64
	// UID and GID are the owner.
	UID, GID uint32
	// MTime is the modification time in Unix seconds.
	MTime    int64
	raw      []byte
	fastLink bool
}

// ReadInode reads inode ino.
func (f *FS) ReadInode(ino uint32) (*Inode, error) {
	if ino == 0 || ino > f.inodes {
		return nil, corrupt("inode %d out of range 1..%d", ino, f.inodes)
	}
	g := uint64(ino-1) / uint64(f.ipg)
	d := f.gdt[g*uint64(f.descSize):]
	table := uint64(le.Uint32(d[0x8:]))
	if f.descSize >= 64 {
		table |= uint64(le.Uint32(d[0x28:])) << 32
	}
	if table >= f.blocks {
		return nil, corrupt("group %d inode table at block %d past the end", g, table)
	}
	b := make([]byte, f.inodeSize)
	off := int64(table)*f.bs + int64(uint64(ino-1)%uint64(f.ipg))*f.inodeSize
	if _, err := f.r.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("ext4: reading inode %d: %w", ino, err)
	}
	m := le.Uint16(b[0:])
	in := &Inode{Ino: ino, raw: b, Size: int64(le.Uint32(b[4:])) | int64(le.Uint32(b[0x6C:]))<<32}
	in.UID = uint32(le.Uint16(b[2:])) | uint32(le.Uint16(b[0x78:]))<<16
	in.GID = uint32(le.Uint16(b[0x18:])) | uint32(le.Uint16(b[0x7A:]))<<16
	in.MTime = int64(int32(le.Uint32(b[0x10:])))
	if f.inodeSize >= 0x8C && le.Uint16(b[0x80:]) >= 0x0C {
		in.MTime += int64(le.Uint32(b[0x88:])&3) << 32
	}
	in.Mode = fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		in.Mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		in.Mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		in.Mode |= fs.ModeSticky
	}
	switch m & 0xF000 {
	case 0x8000:
	case 0x4000:
		in.Mode |= fs.ModeDir
	case 0xA000:
		in.Mode |= fs.ModeSymlink
		flags := le.Uint32(b[0x20:])
		in.fastLink = in.Size < 60 && flags&(extentsFlag|0x10000000) == 0 && le.Uint32(b[0x68:]) == 0 && le.Uint32(b[0x1C:]) == 0
	case 0x2000:
		in.Mode |= fs.ModeDevice | fs.ModeCharDevice
	case 0x6000:
		in.Mode |= fs.ModeDevice
	case 0x1000:
		in.Mode |= fs.ModeNamedPipe
	case 0xC000:
		in.Mode |= fs.ModeSocket
	default:
		return nil, corrupt("inode %d has unknown type 0%o", ino, m&0xF000)
	}
	if in.Size < 0 {
		return nil, corrupt("inode %d has negative size", ino)
	}
	return in, nil
}

// run maps logical blocks [lblk, lblk+n) to physical blocks from pblk;
// zero marks an unwritten extent (reads as zeros).
type run struct {
	lblk, pblk, n uint64
	zero          bool
}

func (f *FS) runs(in *Inode) ([]run, error) {
	flags := le.Uint32(in.raw[0x20:])
	if flags&0x10000000 != 0 {
		return nil, corrupt("inode %d uses inline data (not supported)", in.Ino)
	}
	var out []run
	var err error
	if flags&extentsFlag != 0 {
		err = f.extentRuns(in.Ino, in.raw[0x28:0x28+60], 0, &out)
	} else {
		err = f.mapRuns(in, &out)
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lblk < out[j].lblk })
	for i, r := range out {
		if r.pblk+r.n > f.blocks || r.pblk+r.n < r.pblk {
			return nil, corrupt("inode %d maps blocks %d..%d past the end (%d)", in.Ino, r.pblk, r.pblk+r.n, f.blocks)
		}
		if i > 0 && out[i-1].lblk+out[i-1].n > r.lblk {
			return nil, corrupt("inode %d has overlapping extents", in.Ino)
		}
	}
	return out, nil
}

func (f *FS) extentRuns(ino uint32, node []byte, level int, out *[]run) error {
	if level > 5 || len(node) < 12 || le.Uint16(node[0:]) != extentMagic {
		return corrupt("inode %d: bad extent node", ino)
	}
	n := int(le.Uint16(node[2:]))
	depth := le.Uint16(node[6:])
	if 12+12*n > len(node) {
		return corrupt("inode %d: extent node with %d entries overflows", ino, n)
	}
	for i := 0; i < n; i++ {
		e := node[12+12*i:]
		if depth == 0 {
			l := uint64(le.Uint16(e[4:]))
			zero := false
			if l > maxExtentLen {
				l -= maxExtentLen
				zero = true
			}
			p := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			*out = append(*out, run{lblk: uint64(le.Uint32(e[0:])), pblk: p, n: l, zero: zero})
			continue
		}
		child := uint64(le.Uint16(e[8:]))<<32 | uint64(le.Uint32(e[4:]))
		if child >= f.blocks {
			return corrupt("inode %d: extent index block %d past the end", ino, child)
		}
		b := make([]byte, f.bs)
		if _, err := f.r.ReadAt(b, int64(child)*f.bs); err != nil {
			return fmt.Errorf("ext4: inode %d: %w", ino, err)
		}
		if err := f.extentRuns(ino, b, level+1, out); err != nil {
			return err
		}
	}
	return nil
}

// mapRuns reads a classic ext2/3 block map (direct and indirect blocks).
func (f *FS) mapRuns(in *Inode, out *[]run) error {
	per := uint64(f.bs / 4)
	nblocks := (uint64(in.Size) + uint64(f.bs) - 1) / uint64(f.bs)
	add := func(l, p uint64) {
		if p == 0 {
			return
		}
		if k := len(*out); k > 0 {
			r := &(*out)[k-1]
			if r.lblk+r.n == l && r.pblk+r.n == p {
				r.n++
				return
			}
		}
		*out = append(*out, run{lblk: l, pblk: p, n: 1})
	}
	var walk func(blk uint64, level int, l *uint64) error
	walk = func(blk uint64, level int, l *uint64) error {
		span := uint64(1)
		for i := 0; i < level; i++ {
			span *= per
		}
		if blk == 0 {
			*l += span
			return nil
		}
		if level == 0 {
			add(*l, blk)
			*l++
			return nil
		}
		if blk >= f.blocks {
			return corrupt("inode %d: indirect block %d past the end", in.Ino, blk)
		}
		b := make([]byte, f.bs)
		if _, err := f.r.ReadAt(b, int64(blk)*f.bs); err != nil {
			return fmt.Errorf("ext4: inode %d: %w", in.Ino, err)
		}
		for i := uint64(0); i < per && *l < nblocks; i++ {
			if err := walk(uint64(le.Uint32(b[4*i:])), level-1, l); err != nil {
				return err
			}
		}
		return nil
	}
	l := uint64(0)
	for i := 0; i < 15 && l < nblocks; i++ {
		level := 0
		if i >= 12 {
			level = i - 11
		}
		if err := walk(uint64(le.Uint32(in.raw[0x28+4*i:])), level, &l); err != nil {
			return err
		}
	}
	return nil
}

// WriteContent streams the content of a regular file, directory or slow
// symlink to w; holes and unwritten extents read as zeros.
func (f *FS) WriteContent(in *Inode, w io.Writer) error {
	if in.fastLink {
		_, err := w.Write(in.raw[0x28 : 0x28+in.Size])
		return err
	}
	runs, err := f.runs(in)
	if err != nil {
		return err
	}
	size := in.Size
	// Most module files are far below 1 MiB: size the buffer to the file.
	buf := make([]byte, min(1<<20, max(f.bs, (size+f.bs-1)/f.bs*f.bs)))
	var pos int64
	zeros := func(n int64) error {
		for n > 0 {
			k := min(n, int64(len(buf)))
			clear(buf[:k])
			if _, err := w.Write(buf[:k]); err != nil {
				return err
			}
			n -= k
		}
		return nil
	}
	for _, r := range runs {
		start := int64(r.lblk) * f.bs
		if start >= size {
			break
		}
		if err := zeros(start - pos); err != nil {
			return err
		}
		pos = start
		end := min(size, start+int64(r.n)*f.bs)
		if r.zero {
			if err := zeros(end - pos); err != nil {
				return err
			}
			pos = end
			continue
		}
		for pos < end {
			k := min(end-pos, int64(len(buf)))
			if _, err := f.r.ReadAt(buf[:k], int64(r.pblk)*f.bs+(pos-start)); err != nil {
				return fmt.Errorf("ext4: inode %d: %w", in.Ino, err)
			}
			if _, err := w.Write(buf[:k]); err != nil {
				return err
			}
			pos += k
		}
	}
	return zeros(size - pos)
}

type byteSink struct{ b []byte }

func (s *byteSink) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }

// ReadLink returns a symlink's target.
func (f *FS) ReadLink(in *Inode) (string, error) {
	if in.Mode&fs.ModeSymlink == 0 || in.Size > 4096 {
		return "", corrupt("inode %d is not a symlink of at most 4096 bytes", in.Ino)
	}
	var s byteSink
	if err := f.WriteContent(in, &s); err != nil {
		return "", err
	}
	return string(s.b), nil
}

// DirEntry is one name in a directory.
type DirEntry struct {
	// Name is the entry name.
	Name string
	// Ino is the inode number.
	Ino uint32
}

// ReadDir returns a directory's entries other than "." and "..", sorted by
// name. Hashed (htree) directories are read through their leaf blocks.
func (f *FS) ReadDir(in *Inode) ([]DirEntry, error) {
	if !in.Mode.IsDir() {
		return nil, corrupt("inode %d is not a directory", in.Ino)
	}
	if in.Size > 1<<30 {
		return nil, corrupt("directory inode %d is %d bytes", in.Ino, in.Size)
	}
	var s byteSink
	if err := f.WriteContent(in, &s); err != nil {
		return nil, err
	}
	var out []DirEntry
	b := s.b
	for blk := int64(0); blk < int64(len(b)); blk += f.bs {
		end := min(blk+f.bs, int64(len(b)))
		for pos := blk; pos+8 <= end; {
			ino := le.Uint32(b[pos:])
			rl := int64(le.Uint16(b[pos+4:]))
			nl := int64(b[pos+6])
			if !f.filetype {
				nl = int64(le.Uint16(b[pos+6:]))
			}
			if rl < 8 || pos+rl > end || (ino != 0 && 8+nl > rl) {
				return nil, corrupt("directory inode %d: bad entry at byte %d", in.Ino, pos)
			}
			if ino != 0 {
				name := string(b[pos+8 : pos+8+nl])
				if name != "." && name != ".." {
					out = append(out, DirEntry{Name: name, Ino: ino})
				}
			}
			pos += rl
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RootIno is the inode number of the root directory.
const RootIno = rootIno
