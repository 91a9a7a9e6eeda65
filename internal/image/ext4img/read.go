package ext4img

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/diskio"
)

// ErrCorrupt is wrapped by every error about a malformed or unsupported
// filesystem.
var ErrCorrupt = errors.New("corrupt or unsupported ext4 filesystem")

// ErrSymlink is wrapped by the error of a path operation that would have to
// follow a symbolic link: the reader never follows them (the image is not
// trusted). errors.Is(err, fs.ErrInvalid) also holds for it.
var ErrSymlink error = symlinkError{}

type symlinkError struct{}

func (symlinkError) Error() string        { return "symbolic link not followed" }
func (symlinkError) Is(target error) bool { return target == fs.ErrInvalid }

var le = binary.LittleEndian

// Incompatible feature flags (s_feature_incompat).
const (
	incompatCompression = 0x1
	incompatFiletype    = 0x2
	incompatRecover     = 0x4
	incompatJournalDev  = 0x8
	incompatMetaBG      = 0x10
	incompatExtents     = 0x40
	incompat64bit       = 0x80
	incompatMMP         = 0x100
	incompatFlexBG      = 0x200
	incompatEAInode     = 0x400
	incompatDirData     = 0x1000
	incompatCsumSeed    = 0x2000
	incompatLargeDir    = 0x4000
	incompatInlineData  = 0x8000
	incompatEncrypt     = 0x10000
	incompatCasefold    = 0x20000

	incompatKnown = incompatFiletype | incompatRecover | incompatExtents | incompat64bit |
		incompatMMP | incompatFlexBG | incompatEAInode | incompatCsumSeed | incompatLargeDir |
		incompatInlineData | incompatCasefold

	roCompatBigalloc = 0x200

	inlineDataFlag = 0x10000000

	// maxBlockSizeLog is log2(block size) - 10 for the largest block size
	// (64 KiB) Linux supports.
	maxBlockSizeLog = 6
	// gdtEagerMax is the largest group descriptor table read into memory
	// at Open; larger tables (only possible on multi-TiB filesystems) are
	// read one descriptor at a time.
	gdtEagerMax = 4 << 20
)

// FS is a read-only view of an ext2/3/4 filesystem. It reads extents and
// classic block maps, linear and hashed (htree) directories, and fast and
// slow symlinks; it ignores checksums and the journal. Every structure is
// validated before use (the image may be hostile): sizes and offsets are
// bounded by the filesystem and the disk, extent trees by their depth and
// a visited set, directories by their blocks.
//
// FS implements fs.FS, fs.StatFS, fs.ReadDirFS, fs.ReadFileFS and
// fs.ReadLinkFS. Symbolic links are never followed: a path with a symlink
// as an intermediate component fails for every operation, and one whose
// final component is a symlink fails for Open, Stat, ReadFile and ReadDir
// (with an error wrapping ErrSymlink and fs.ErrInvalid); Lstat, ReadLink
// and directory listings report symlinks.
//
// All methods of FS, and of the inode-level API (ReadInode, DirEntries,
// CopyContent, ...), are safe for concurrent use by multiple goroutines,
// provided the underlying io.ReaderAt is (an *os.File and the VHDX and VHD
// readers are). See Open for what is safe on opened files.
type FS struct {
	r         io.ReaderAt
	name      string
	bs        int64
	blocks    uint64
	first     uint64
	ipg       uint32
	inodes    uint32
	inodeSize int64
	itBlocks  uint64 // inode table blocks per group
	descSize  int64
	groups    uint64
	gdtOff    int64
	gdt       []byte // the whole descriptor table, or nil: read per lookup
	filetype  bool
	root      *Inode
	dirs      dirCache
}

// Open reads the superblock and group descriptors of the filesystem that
// starts at offset 0 of r (size bytes long).
func Open(r io.ReaderAt, size int64) (*FS, error) { return OpenNamed(r, size, "") }

// OpenNamed is Open with a name for the image (usually its file name),
// which every error then mentions.
func OpenNamed(r io.ReaderAt, size int64, name string) (*FS, error) {
	return openFS(r, size, name, gdtEagerMax)
}

// openFS opens the filesystem, reading a group descriptor table of up to
// gdtMax bytes into memory.
func openFS(r io.ReaderAt, size int64, name string, gdtMax uint64) (*FS, error) {
	f := &FS{r: r, name: name}
	f.dirs.max = dirCacheMax
	if size < 2048 {
		return nil, f.corrupt("disk of %d bytes is too small to hold an ext4 superblock (not a VHDX, VHD or ext4 image?)", size)
	}
	sb := make([]byte, 1024)
	if err := diskio.ReadFull(r, sb, 1024); err != nil {
		return nil, fmt.Errorf("%sreading the superblock: %w", f.where(), err)
	}
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return nil, f.corrupt("no ext2/3/4 superblock magic at byte 1080")
	}
	if err := f.parseSuper(sb, size); err != nil {
		return nil, err
	}
	if err := f.readGDT(gdtMax); err != nil {
		return nil, err
	}
	root, err := f.ReadInode(rootIno)
	if err != nil {
		return nil, err
	}
	if !root.Mode.IsDir() {
		return nil, f.corrupt("root inode %d is not a directory (mode %v)", rootIno, root.Mode)
	}
	f.root = root
	return f, nil
}

// where prefixes messages with the filesystem and image name.
func (f *FS) where() string {
	if f.name == "" {
		return "ext4: "
	}
	return "ext4 in " + f.name + ": "
}

func (f *FS) corrupt(format string, a ...any) error {
	return fmt.Errorf("%s%s: %w", f.where(), fmt.Sprintf(format, a...), ErrCorrupt)
}

// parseSuper decodes and checks the superblock fields the reader uses.
func (f *FS) parseSuper(sb []byte, size int64) error {
	lbs := le.Uint32(sb[0x18:])
	if lbs > maxBlockSizeLog {
		return f.corrupt("superblock s_log_block_size %d (block size above 64 KiB)", lbs)
	}
	f.bs = 1024 << lbs
	incompat := le.Uint32(sb[0x60:])
	switch {
	case incompat&incompatMetaBG != 0:
		return f.corrupt("superblock: the meta_bg layout is not supported")
	case incompat&incompatEncrypt != 0:
		return f.corrupt("superblock: encrypted filesystems are not supported")
	case incompat&^incompatKnown != 0:
		return f.corrupt("superblock: unsupported incompatible features 0x%x", incompat&^incompatKnown)
	case le.Uint32(sb[0x64:])&roCompatBigalloc != 0:
		return f.corrupt("superblock: bigalloc is not supported")
	}
	f.filetype = incompat&incompatFiletype != 0
	f.blocks = uint64(le.Uint32(sb[0x4:]))
	f.descSize = 32
	if incompat&incompat64bit != 0 {
		f.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		f.descSize = int64(le.Uint16(sb[0xFE:]))
		if f.descSize < 64 || f.descSize > 1024 || f.descSize&(f.descSize-1) != 0 {
			return f.corrupt("superblock s_desc_size %d (want a power of two from 64 to 1024)", f.descSize)
		}
	}
	// blocks*bs may not exceed the disk; compare without overflowing.
	if f.blocks == 0 || f.blocks > uint64(size)/uint64(f.bs) {
		return f.corrupt("superblock s_blocks_count %d blocks of %d bytes does not fit the disk (%d bytes; truncated?)", f.blocks, f.bs, size)
	}
	f.inodeSize = 128
	if le.Uint32(sb[0x4C:]) >= 1 {
		f.inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	if f.inodeSize < 128 || f.inodeSize > f.bs || f.inodeSize&(f.inodeSize-1) != 0 {
		return f.corrupt("superblock s_inode_size %d (want a power of two from 128 to the block size)", f.inodeSize)
	}
	return f.checkGeometry(sb)
}

// checkGeometry checks the group geometry against the block count.
func (f *FS) checkGeometry(sb []byte) error {
	f.first = uint64(le.Uint32(sb[0x14:]))
	if f.first > 1 || f.first >= f.blocks {
		return f.corrupt("superblock s_first_data_block %d", f.first)
	}
	bpg := uint64(le.Uint32(sb[0x20:]))
	if bpg == 0 || bpg > 8*uint64(f.bs) {
		return f.corrupt("superblock s_blocks_per_group %d (want 1..%d)", bpg, 8*f.bs)
	}
	f.ipg = le.Uint32(sb[0x28:])
	perBlock := uint64(f.bs / f.inodeSize)
	if uint64(f.ipg) < perBlock || uint64(f.ipg) > 8*uint64(f.bs) {
		return f.corrupt("superblock s_inodes_per_group %d (want %d..%d)", f.ipg, perBlock, 8*f.bs)
	}
	f.groups = (f.blocks - f.first + bpg - 1) / bpg
	f.inodes = le.Uint32(sb[0x0:])
	// groups <= inodes keeps the product below 2^64.
	if f.groups > uint64(f.inodes) || uint64(f.inodes) != f.groups*uint64(f.ipg) {
		return f.corrupt("superblock s_inodes_count %d is not %d groups × %d inodes", f.inodes, f.groups, f.ipg)
	}
	f.itBlocks = (uint64(f.ipg)*uint64(f.inodeSize) + uint64(f.bs) - 1) / uint64(f.bs)
	gdtBytes := f.groups * uint64(f.descSize) // at most 2^32 × 1024
	f.gdtOff = int64(f.first+1) * f.bs
	if uint64(f.gdtOff)+gdtBytes > f.blocks*uint64(f.bs) {
		return f.corrupt("group descriptor table of %d groups does not fit in %d blocks", f.groups, f.blocks)
	}
	return nil
}

// readGDT reads the group descriptor table into memory when it is small.
func (f *FS) readGDT(max uint64) error {
	n := f.groups * uint64(f.descSize)
	if n > max {
		return nil
	}
	f.gdt = make([]byte, n)
	if err := diskio.ReadFull(f.r, f.gdt, f.gdtOff); err != nil {
		return fmt.Errorf("%sreading the group descriptors: %w", f.where(), err)
	}
	return nil
}

// inodeTable returns the first block of group g's inode table.
func (f *FS) inodeTable(g uint64) (uint64, error) {
	var d []byte
	if f.gdt != nil {
		d = f.gdt[g*uint64(f.descSize):]
	} else {
		d = make([]byte, f.descSize)
		if err := diskio.ReadFull(f.r, d, f.gdtOff+int64(g)*f.descSize); err != nil {
			return 0, fmt.Errorf("%sreading group descriptor %d: %w", f.where(), g, err)
		}
	}
	table := uint64(le.Uint32(d[0x8:]))
	if f.descSize >= 64 {
		table |= uint64(le.Uint32(d[0x28:])) << 32
	}
	if table == 0 || table >= f.blocks || f.blocks-table < f.itBlocks {
		return 0, f.corrupt("group %d: inode table at block %d (+%d) outside the filesystem (%d blocks)", g, table, f.itBlocks, f.blocks)
	}
	return table, nil
}

// BlockSize returns the filesystem block size.
func (f *FS) BlockSize() int64 { return f.bs }

// Size returns the filesystem size in bytes.
func (f *FS) Size() int64 { return int64(f.blocks) * f.bs }

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
	// MTime is the modification time in Unix seconds, MTimeNsec its
	// nanoseconds.
	MTime     int64
	MTimeNsec int64
	// Links is the hard link count.
	Links uint16

	raw      []byte
	fastLink bool
}

// ReadInode reads and checks inode ino.
func (f *FS) ReadInode(ino uint32) (*Inode, error) {
	if ino == 0 || ino > f.inodes {
		return nil, f.corrupt("inode %d out of range 1..%d", ino, f.inodes)
	}
	g := uint64(ino-1) / uint64(f.ipg)
	table, err := f.inodeTable(g)
	if err != nil {
		return nil, err
	}
	b := make([]byte, f.inodeSize)
	off := int64(table)*f.bs + int64(uint64(ino-1)%uint64(f.ipg))*f.inodeSize
	if err := diskio.ReadFull(f.r, b, off); err != nil {
		return nil, fmt.Errorf("%sreading inode %d: %w", f.where(), ino, err)
	}
	in := &Inode{Ino: ino, raw: b, Size: int64(uint64(le.Uint32(b[4:])) | uint64(le.Uint32(b[0x6C:]))<<32)}
	in.UID = uint32(le.Uint16(b[2:])) | uint32(le.Uint16(b[0x78:]))<<16
	in.GID = uint32(le.Uint16(b[0x18:])) | uint32(le.Uint16(b[0x7A:]))<<16
	in.Links = le.Uint16(b[0x1A:])
	in.MTime = int64(int32(le.Uint32(b[0x10:])))
	if f.inodeSize > 128 {
		extra := int64(le.Uint16(b[0x80:]))
		if extra > f.inodeSize-128 || extra&3 != 0 {
			return nil, f.corrupt("inode %d: i_extra_isize %d (inode size %d)", ino, extra, f.inodeSize)
		}
		if extra >= 0x0C {
			x := le.Uint32(b[0x88:])
			in.MTime += int64(x&3) << 32
			in.MTimeNsec = int64(min(x>>2, 999999999))
		}
	}
	if err := f.decodeMode(in, le.Uint16(b[0:])); err != nil {
		return nil, err
	}
	return in, f.checkSize(in)
}

// decodeMode sets in.Mode from the on-disk i_mode.
func (f *FS) decodeMode(in *Inode, m uint16) error {
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
		flags := le.Uint32(in.raw[0x20:])
		in.fastLink = in.Size < 60 && flags&(extentsFlag|inlineDataFlag) == 0 &&
			le.Uint32(in.raw[0x68:]) == 0 && le.Uint32(in.raw[0x1C:]) == 0
	case 0x2000:
		in.Mode |= fs.ModeDevice | fs.ModeCharDevice
	case 0x6000:
		in.Mode |= fs.ModeDevice
	case 0x1000:
		in.Mode |= fs.ModeNamedPipe
	case 0xC000:
		in.Mode |= fs.ModeSocket
	default:
		return f.corrupt("inode %d: unknown file type 0%o in i_mode", in.Ino, m&0xF000)
	}
	return nil
}

// checkSize bounds i_size by what the inode's type allows: no file is
// larger than its filesystem, directories are whole blocks of at most
// maxDirSize, and symlink targets fit in one block.
func (f *FS) checkSize(in *Inode) error {
	switch {
	case in.Size < 0 || in.Size > f.Size():
		return f.corrupt("inode %d: i_size %d is larger than the filesystem (%d bytes)", in.Ino, in.Size, f.Size())
	case in.Mode.IsDir() && (in.Size == 0 || in.Size%f.bs != 0):
		return f.corrupt("directory inode %d: i_size %d is not a whole number of %d-byte blocks", in.Ino, in.Size, f.bs)
	case in.Mode.IsDir() && in.Size > maxDirSize:
		return f.corrupt("directory inode %d: i_size %d is above the %d bytes this reader accepts", in.Ino, in.Size, int64(maxDirSize))
	case in.Mode&fs.ModeSymlink != 0 && (in.Size == 0 || in.Size >= f.bs || in.Size > 4095):
		return f.corrupt("symlink inode %d: target length %d (want 1..%d)", in.Ino, in.Size, min(f.bs-1, 4095))
	}
	return nil
}

// RootIno is the inode number of the root directory.
const RootIno = rootIno
