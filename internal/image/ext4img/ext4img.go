// Package ext4img writes a read-only-friendly ext4 filesystem image as a
// single sequential stream, from an in-memory description of a file tree.
//
// The writer is deliberately minimal: 4 KiB blocks, no journal, extents,
// linear directories, 256-byte inodes, classic sparse_super backups and no
// flex_bg. Every block is laid out before any byte is written (Plan), so the
// image can be streamed block by block (WriteTo) straight into a container
// writer without an intermediate raw file and without holding the image in
// memory. The output is a pure function of the tree and the Options: inode
// numbers, block allocation and directory order follow a byte-wise sorted
// depth-first walk, and all timestamps and IDs come from the Options.
//
// Features: filetype, extent, 64bit (incompat); sparse_super, large_file,
// dir_nlink, extra_isize (ro_compat). All are supported by Linux since 2.6.x,
// so the 6.6 kernel mounts the image; e2fsck -fn is clean.
package ext4img

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
)

// BlockSize is the filesystem block size in bytes.
const BlockSize = 4096

const (
	blocksPerGroup = BlockSize * 8 // one bitmap block
	inodeSize      = 256
	descSize       = 64
	firstIno       = 11
	rootIno        = 2
	maxExtentLen   = 32768
	inodesPerBlock = BlockSize / inodeSize
	leafCapacity   = (BlockSize - 12) / 12 // extents per leaf block
	maxNameLen     = 255
	maxFastSymlink = 59 // i_block holds 60 bytes; keep a NUL like mke2fs
)

// Node is one entry of the tree to write. Directories have Children; regular
// files have Size and either Source (a host path read during WriteTo), Open or
// Data; symlinks have Target.
type Node struct {
	// Name is the entry's name in its parent (empty for the root).
	Name string
	// Mode holds the type bits (fs.ModeDir, fs.ModeSymlink, or none for a
	// regular file) and the permission bits, including setuid/setgid/sticky.
	Mode fs.FileMode
	// Size is the byte size of a regular file.
	Size int64
	// Source is the host path of a regular file's content.
	Source string
	// Open, when Source is empty, opens a regular file's content; it is
	// read once, in order, during WriteTo.
	Open func() (io.ReadCloser, error)
	// Data is a regular file's content when Source and Open are empty.
	Data []byte
	// Target is a symlink's target.
	Target string
	// Children are a directory's entries; Plan sorts them by name.
	Children []*Node

	ino      uint32
	parent   *Node
	subdirs  int
	extents  []extent
	leaves   []uint64 // extent leaf blocks (depth-1 tree) if > 4 extents
	nblocks  uint64   // data blocks (excluding leaves)
	dirBytes []byte   // directory content, built during Plan
}

func (n *Node) isDir() bool     { return n.Mode&fs.ModeDir != 0 }
func (n *Node) isSymlink() bool { return n.Mode&fs.ModeSymlink != 0 }

type extent struct {
	lblk uint32
	pblk uint64
	len  uint32
}

// Options control the deterministic parts of the image.
type Options struct {
	// Time is the Unix time used for every inode and superblock timestamp.
	Time int64
	// UUID is the filesystem UUID (s_uuid).
	UUID [16]byte
	// HashSeed is the directory hash seed (s_hash_seed).
	HashSeed [16]byte
	// Label is the volume label (at most 16 bytes).
	Label string
	// SlackBytes is free space added after the content, rounded up so the
	// image size is a multiple of 1 MiB.
	SlackBytes int64
	// SpareInodes is the number of free inodes to provide beyond those used.
	SpareInodes int
}

// Image is a planned filesystem, ready to be streamed with WriteTo.
type Image struct {
	root      *Node
	lostFound *Node
	opts      Options
	nodes     []*Node // by inode number order (index = ino - firstIno) for ino >= 11
	groups    uint64
	blocks    uint64
	ipg       uint32
	itb       uint64 // inode table blocks per group
	gdtBlocks uint64
	used      []uint64 // data blocks used per group (after its metadata)
	pieces    []piece
	stats     Stats
}

// Stats counts what an image holds.
type Stats struct {
	// Files, Dirs and Symlinks count entries by type (the root and
	// lost+found excluded).
	Files, Dirs, Symlinks int
	// ContentBytes is the total size of regular files and symlink targets.
	ContentBytes int64
	// UsedBlocks is the number of allocated blocks, metadata included.
	UsedBlocks uint64
	// Inodes is the inode count of the filesystem.
	Inodes uint32
}

type pieceKind uint8

const (
	pieceFile pieceKind = iota
	pieceDir
	pieceLeaf
	pieceSymlink
)

// piece is one allocated run of blocks and what fills it.
type piece struct {
	pblk uint64
	len  uint64
	node *Node
	kind pieceKind
	lblk uint64 // first logical block (files, dirs) or leaf index
}

// Size returns the image size in bytes.
func (im *Image) Size() int64 { return int64(im.blocks) * BlockSize }

// Stats returns counts of what the image holds.
func (im *Image) Stats() Stats { return im.stats }

// Plan validates the tree and lays out the filesystem. root must be a
// directory; its Name is ignored. The tree is modified by
// sorting Children and adding a lost+found directory to root: Plan takes
// ownership of the tree, and WriteTo reads it.
func Plan(root *Node, opts Options) (*Image, error) {
	if root == nil || !root.isDir() {
		return nil, errors.New("ext4img: root must be a directory")
	}
	if len(opts.Label) > 16 {
		return nil, fmt.Errorf("ext4img: label %q longer than 16 bytes", opts.Label)
	}
	if opts.SlackBytes < 0 || opts.SpareInodes < 0 {
		return nil, errors.New("ext4img: negative slack")
	}
	im := &Image{root: root, opts: opts}
	for _, c := range root.Children {
		if c.Name == "lost+found" {
			return nil, errors.New("ext4img: the tree may not contain /lost+found (the writer creates it)")
		}
	}
	im.lostFound = &Node{Name: "lost+found", Mode: fs.ModeDir | 0o700}
	root.Children = append(root.Children, im.lostFound)
	root.ino = rootIno
	root.parent = root
	im.lostFound.ino = firstIno
	im.lostFound.parent = root
	im.nodes = []*Node{im.lostFound}
	if err := im.number(root, ""); err != nil {
		return nil, err
	}
	for _, n := range append([]*Node{root}, im.nodes...) {
		if n.isDir() {
			n.dirBytes = buildDir(n)
			n.nblocks = uint64(len(n.dirBytes) / BlockSize)
		}
	}
	if err := im.layout(); err != nil {
		return nil, err
	}
	return im, nil
}

// number validates names and types, sorts children and assigns inode
// numbers in depth-first pre-order.
func (im *Image) number(dir *Node, path string) error {
	sort.Slice(dir.Children, func(i, j int) bool { return dir.Children[i].Name < dir.Children[j].Name })
	for i, c := range dir.Children {
		p := path + "/" + c.Name
		if c == im.lostFound {
			continue
		}
		switch {
		case c.Name == "" || c.Name == "." || c.Name == "..":
			return fmt.Errorf("ext4img: %s: invalid name", p)
		case strings.ContainsAny(c.Name, "/\x00"):
			return fmt.Errorf("ext4img: %q: name contains '/' or NUL", p)
		case len(c.Name) > maxNameLen:
			return fmt.Errorf("ext4img: %s: name longer than %d bytes", p, maxNameLen)
		}
		if i > 0 && dir.Children[i-1].Name == c.Name {
			return fmt.Errorf("ext4img: %s: duplicate entry", p)
		}
		c.parent = dir
		switch {
		case c.isDir():
			dir.subdirs++
			im.stats.Dirs++
		case c.isSymlink():
			if c.Target == "" || len(c.Target) >= BlockSize {
				return fmt.Errorf("ext4img: %s: symlink target length %d out of range 1..%d", p, len(c.Target), BlockSize-1)
			}
			im.stats.Symlinks++
			im.stats.ContentBytes += int64(len(c.Target))
		case c.Mode.IsRegular():
			if c.Size < 0 || (c.Source == "" && c.Open == nil && int64(len(c.Data)) != c.Size) {
				return fmt.Errorf("ext4img: %s: size %d does not match its data", p, c.Size)
			}
			im.stats.Files++
			im.stats.ContentBytes += c.Size
		default:
			return fmt.Errorf("ext4img: %s: unsupported file type %s", p, c.Mode.Type())
		}
		if len(im.nodes)+firstIno >= 1<<32-1 {
			return fmt.Errorf("ext4img: %s: too many inodes", p)
		}
		c.ino = uint32(firstIno + len(im.nodes))
		im.nodes = append(im.nodes, c)
		if c.isDir() {
			if err := im.number(c, p); err != nil {
				return err
			}
		}
	}
	if dir == im.root {
		dir.subdirs++ // lost+found
	}
	return nil
}

// buildDir renders a linear directory: ".", "..", then the sorted children.
func buildDir(d *Node) []byte {
	type ent struct {
		ino  uint32
		name string
		ft   byte
	}
	ents := []ent{{d.ino, ".", 2}, {d.parent.ino, "..", 2}}
	for _, c := range d.Children {
		ents = append(ents, ent{c.ino, c.Name, fileType(c)})
	}
	var out []byte
	blk := make([]byte, BlockSize)
	pos, last := 0, -1
	for _, e := range ents {
		rl := (8 + len(e.name) + 3) &^ 3
		if pos+rl > BlockSize {
			putU16(blk[last+4:], uint16(BlockSize-last))
			out = append(out, blk...)
			blk = make([]byte, BlockSize)
			pos = 0
		}
		putU32(blk[pos:], e.ino)
		putU16(blk[pos+4:], uint16(rl))
		blk[pos+6] = byte(len(e.name))
		blk[pos+7] = e.ft
		copy(blk[pos+8:], e.name)
		last = pos
		pos += rl
	}
	putU16(blk[last+4:], uint16(BlockSize-last))
	return append(out, blk...)
}

func fileType(n *Node) byte {
	switch {
	case n.isDir():
		return 2
	case n.isSymlink():
		return 7
	default:
		return 1
	}
}

func hasSuper(g uint64) bool {
	if g <= 1 {
		return true
	}
	for _, b := range []uint64{3, 5, 7} {
		x := b
		for x < g {
			x *= b
		}
		if x == g {
			return true
		}
	}
	return false
}

// overhead returns the number of metadata blocks at the start of group g.
func (im *Image) overhead(g uint64) uint64 {
	o := 2 + im.itb
	if hasSuper(g) {
		o += 1 + im.gdtBlocks
	}
	return o
}

// setGeometry derives inode and descriptor geometry for a group count.
func (im *Image) setGeometry(groups uint64) error {
	im.groups = groups
	need := uint64(firstIno+len(im.nodes)-1) + uint64(im.opts.SpareInodes) // highest used inode + spare
	ipg := (need + groups - 1) / groups
	ipg = (ipg + inodesPerBlock - 1) / inodesPerBlock * inodesPerBlock
	if ipg < inodesPerBlock {
		ipg = inodesPerBlock
	}
	if ipg > blocksPerGroup {
		return fmt.Errorf("ext4img: %d inodes do not fit in %d groups", need, groups)
	}
	if ipg*groups >= 1<<32 {
		return fmt.Errorf("ext4img: too many inodes (%d)", ipg*groups)
	}
	im.ipg = uint32(ipg)
	im.itb = ipg / inodesPerBlock
	im.gdtBlocks = (groups*descSize + BlockSize - 1) / BlockSize
	return nil
}

// layout sizes the filesystem and allocates every block.
func (im *Image) layout() error {
	slack := (uint64(im.opts.SlackBytes) + BlockSize - 1) / BlockSize
	groups := uint64(1)
	for iter := 0; ; iter++ {
		if err := im.setGeometry(groups); err != nil {
			return err
		}
		end, err := im.allocate()
		if err != nil {
			return err
		}
		blocks := roundUp(end+slack, 256) // 1 MiB multiple
		g2 := (blocks + blocksPerGroup - 1) / blocksPerGroup
		if g2 < groups {
			g2 = groups // never shrink: keeps the loop finite
		}
		if g2 != groups && iter < 8 {
			groups = g2
			continue
		}
		if err := im.setGeometry(g2); err != nil {
			return err
		}
		if end, err = im.allocate(); err != nil {
			return err
		}
		// Every group, including the last, must hold its metadata and the
		// allocated data.
		minBlocks := (g2-1)*blocksPerGroup + im.overhead(g2-1) + im.used[g2-1] + 1
		if end > minBlocks {
			minBlocks = end
		}
		blocks = roundUp(maxU64(blocks, minBlocks), 256)
		if (blocks+blocksPerGroup-1)/blocksPerGroup != g2 {
			groups = (blocks + blocksPerGroup - 1) / blocksPerGroup
			if iter > 16 {
				return errors.New("ext4img: layout did not converge")
			}
			continue
		}
		if blocks >= 1<<48 {
			return errors.New("ext4img: filesystem too large")
		}
		im.blocks = blocks
		var used uint64
		for g := uint64(0); g < g2; g++ {
			used += im.overhead(g) + im.used[g]
		}
		im.stats.UsedBlocks = used
		im.stats.Inodes = im.ipg * uint32(g2)
		return nil
	}
}

// allocate assigns blocks to every node in inode order, filling each
// group's data area in turn. It returns the first block past the last
// allocation. Groups beyond im.groups are assumed to have the same
// geometry (the caller re-plans if the count changes).
func (im *Image) allocate() (uint64, error) {
	im.used = im.used[:0]
	im.pieces = im.pieces[:0]
	a := allocator{im: im}
	a.startGroup(0)
	nodes := append([]*Node{im.root}, im.nodes...)
	for _, n := range nodes {
		n.extents = n.extents[:0]
		n.leaves = n.leaves[:0]
		switch {
		case n.isDir():
			n.extents = a.alloc(n.nblocks, n, pieceDir)
		case n.isSymlink():
			n.nblocks = 0
			if len(n.Target) > maxFastSymlink {
				n.nblocks = 1
				n.extents = a.alloc(1, n, pieceSymlink)
			}
		default:
			n.nblocks = uint64((n.Size + BlockSize - 1) / BlockSize)
			if n.nblocks >= 1<<32 {
				return 0, fmt.Errorf("ext4img: %s: file too large", n.Name)
			}
			// Leaf blocks go before the data; their number depends on the
			// extent count, so count extents first on a copy.
			probe := a
			probe.dry = true
			ne := uint64(len(probe.alloc(n.nblocks, n, pieceFile)))
			if ne > 4 {
				nl := (ne + leafCapacity - 1) / leafCapacity
				if nl > 4 {
					return 0, fmt.Errorf("ext4img: %s: too fragmented (%d extents)", n.Name, ne)
				}
				for i := uint64(0); i < nl; i++ {
					e := a.alloc(1, n, pieceLeaf)
					a.im.pieces[len(a.im.pieces)-1].lblk = i
					n.leaves = append(n.leaves, e[0].pblk)
				}
				n.extents = a.alloc(n.nblocks, n, pieceFile)
				if uint64(len(n.extents)) > nl*leafCapacity {
					return 0, fmt.Errorf("ext4img: %s: extent count changed during layout", n.Name)
				}
			} else {
				n.extents = a.alloc(n.nblocks, n, pieceFile)
			}
		}
	}
	im.used = append(im.used, a.usedInGroup)
	for uint64(len(im.used)) < im.groups {
		im.used = append(im.used, 0)
	}
	return a.next, nil
}

type allocator struct {
	im          *Image
	group       uint64
	next        uint64 // next free block
	groupEnd    uint64
	usedInGroup uint64
	dry         bool
}

func (a *allocator) startGroup(g uint64) {
	a.group = g
	a.next = g*blocksPerGroup + a.im.overhead(g)
	a.groupEnd = (g + 1) * blocksPerGroup
	a.usedInGroup = 0
}

// alloc takes n blocks, splitting at group boundaries and at the maximum
// extent length, and records pieces (unless dry).
func (a *allocator) alloc(n uint64, node *Node, kind pieceKind) []extent {
	var out []extent
	var lblk uint64
	for n > 0 {
		if a.next >= a.groupEnd {
			if !a.dry {
				a.im.used = append(a.im.used, a.usedInGroup)
			}
			a.startGroup(a.group + 1)
		}
		k := minU64(n, a.groupEnd-a.next)
		k = minU64(k, maxExtentLen)
		if len(out) > 0 && kind != pieceLeaf {
			last := &out[len(out)-1]
			if last.pblk+uint64(last.len) == a.next && uint64(last.len)+k <= maxExtentLen {
				last.len += uint32(k)
				if !a.dry {
					a.im.pieces[len(a.im.pieces)-1].len += k
				}
				goto advance
			}
		}
		out = append(out, extent{lblk: uint32(lblk), pblk: a.next, len: uint32(k)})
		if !a.dry {
			a.im.pieces = append(a.im.pieces, piece{pblk: a.next, len: k, node: node, kind: kind, lblk: lblk})
		}
	advance:
		a.next += k
		a.usedInGroup += k
		lblk += k
		n -= k
	}
	return out
}

func roundUp(x, m uint64) uint64 { return (x + m - 1) / m * m }
func minU64(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}
func maxU64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func putU16(b []byte, v uint16) { b[0] = byte(v); b[1] = byte(v >> 8) }
func putU32(b []byte, v uint32) {
	b[0] = byte(v)
	b[1] = byte(v >> 8)
	b[2] = byte(v >> 16)
	b[3] = byte(v >> 24)
}
func putU64(b []byte, v uint64) { putU32(b, uint32(v)); putU32(b[4:], uint32(v>>32)) }

// ZeroWriter is implemented by writers that can record a run of zero bytes
// without receiving them (for example a sparse-aware container writer).
type ZeroWriter interface {
	WriteZeros(n int64) error
}
