package ext4img

import (
	"fmt"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/diskio"
)

const (
	// maxRuns bounds the block runs (extents, or merged block-map entries)
	// one inode may map, and so the memory and reads spent on one file.
	maxRuns = 1 << 20
	// maxExtentDepth is the deepest extent tree Linux builds.
	maxExtentDepth = 5
	// maxDirSize bounds directory sizes: 16 MiB holds half a million
	// entries (a module tree directory holds hundreds).
	maxDirSize = 16 << 20
)

// run maps logical blocks [lblk, lblk+n) to physical blocks from pblk;
// zero marks an unwritten extent (reads as zeros).
type run struct {
	lblk, pblk uint64
	n          uint32
	zero       bool
}

// mapper collects the runs of one inode, checking that they are in
// logical order, do not overlap, lie inside the filesystem and do not map
// more blocks than it has, and that no tree block is visited twice.
type mapper struct {
	f      *FS
	ino    uint32
	runs   []run
	seen   map[uint64]bool
	mapped uint64
	end    uint64 // logical end of the last run
	bufs   [maxExtentDepth + 1][]byte
}

// runs returns the block runs of a regular file, directory or slow symlink,
// sorted by logical block.
func (f *FS) runs(in *Inode) ([]run, error) {
	flags := le.Uint32(in.raw[0x20:])
	if flags&inlineDataFlag != 0 {
		return nil, f.corrupt("inode %d uses inline data (not supported)", in.Ino)
	}
	m := &mapper{f: f, ino: in.Ino}
	if flags&extentsFlag != 0 {
		if err := m.extents(in.raw[0x28:0x28+60], -1, 0, 1<<32); err != nil {
			return nil, err
		}
	} else if err := m.blockMap(in); err != nil {
		return nil, err
	}
	return m.runs, nil
}

// add appends a run after checking it.
func (m *mapper) add(l, p, n uint64, zero bool) error {
	f := m.f
	switch {
	case n == 0:
		return f.corrupt("inode %d: zero-length extent at logical block %d", m.ino, l)
	case l < m.end:
		return f.corrupt("inode %d: extents out of order or overlapping at logical block %d", m.ino, l)
	case p == 0 || p >= f.blocks || n > f.blocks-p:
		return f.corrupt("inode %d: maps blocks %d..%d outside the filesystem (%d blocks)", m.ino, p, p+n, f.blocks)
	}
	m.mapped += n
	if m.mapped > f.blocks {
		return f.corrupt("inode %d: maps more blocks than the filesystem has (%d)", m.ino, f.blocks)
	}
	m.end = l + n
	if k := len(m.runs); k > 0 {
		r := &m.runs[k-1]
		if r.lblk+uint64(r.n) == l && r.pblk+uint64(r.n) == p && r.zero == zero && uint64(r.n)+n < 1<<31 {
			r.n += uint32(n)
			return nil
		}
	}
	if len(m.runs) >= maxRuns {
		return f.corrupt("inode %d: more than %d extents", m.ino, maxRuns)
	}
	m.runs = append(m.runs, run{lblk: l, pblk: p, n: uint32(n), zero: zero})
	return nil
}

// block reads tree block blk (an extent node or indirect block) into the
// buffer of the given level, refusing blocks already visited.
func (m *mapper) block(blk uint64, level int, what string) ([]byte, error) {
	f := m.f
	if blk == 0 || blk >= f.blocks {
		return nil, f.corrupt("inode %d: %s block %d outside the filesystem (%d blocks)", m.ino, what, blk, f.blocks)
	}
	if m.seen == nil {
		m.seen = map[uint64]bool{}
	}
	if m.seen[blk] {
		return nil, f.corrupt("inode %d: %s block %d is used twice", m.ino, what, blk)
	}
	if len(m.seen) >= maxRuns {
		return nil, f.corrupt("inode %d: more than %d %s blocks", m.ino, maxRuns, what)
	}
	m.seen[blk] = true
	if m.bufs[level] == nil {
		m.bufs[level] = make([]byte, f.bs)
	}
	b := m.bufs[level]
	if err := diskio.ReadFull(f.r, b, int64(blk)*f.bs); err != nil {
		return nil, fmt.Errorf("%sinode %d: reading %s block %d: %w", f.where(), m.ino, what, blk, err)
	}
	return b, nil
}

// extents walks an extent tree node. want is the depth the node must
// have (-1 for the root, in the inode), and [lo, hi) the logical blocks its
// entries may cover.
func (m *mapper) extents(node []byte, want int, lo, hi uint64) error {
	f := m.f
	if le.Uint16(node[0:]) != extentMagic {
		return f.corrupt("inode %d: extent node without magic (depth %d)", m.ino, want)
	}
	n, max, depth := int(le.Uint16(node[2:])), int(le.Uint16(node[4:])), int(le.Uint16(node[6:]))
	switch {
	case want < 0 && depth > maxExtentDepth:
		return f.corrupt("inode %d: extent tree depth %d (at most %d)", m.ino, depth, maxExtentDepth)
	case want >= 0 && depth != want:
		return f.corrupt("inode %d: extent node of depth %d where %d is expected", m.ino, depth, want)
	case n > max || 12+12*max > len(node):
		return f.corrupt("inode %d: extent node with %d of %d entries does not fit %d bytes", m.ino, n, max, len(node))
	case n == 0 && want >= 0:
		return f.corrupt("inode %d: empty extent node below the root", m.ino)
	}
	for i := 0; i < n; i++ {
		e := node[12+12*i:]
		l := uint64(le.Uint32(e[0:]))
		next := hi
		if i+1 < n {
			next = uint64(le.Uint32(node[12+12*(i+1):]))
		}
		if l < lo || next > hi || l >= next {
			return f.corrupt("inode %d: extent entry %d at logical block %d out of order (depth %d)", m.ino, i, l, depth)
		}
		if depth == 0 {
			length, zero := uint64(le.Uint16(e[4:])), false
			if length > maxExtentLen {
				length, zero = length-maxExtentLen, true
			}
			p := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if l+length > hi {
				return f.corrupt("inode %d: extent at logical block %d (+%d) overruns its index range", m.ino, l, length)
			}
			if err := m.add(l, p, length, zero); err != nil {
				return err
			}
			continue
		}
		child := uint64(le.Uint16(e[8:]))<<32 | uint64(le.Uint32(e[4:]))
		b, err := m.block(child, depth-1, "extent index")
		if err != nil {
			return err
		}
		if err := m.extents(b, depth-1, l, next); err != nil {
			return err
		}
	}
	return nil
}

// blockMap reads a classic ext2/3 block map (12 direct blocks, then single,
// double and triple indirect blocks) up to the inode's size.
func (m *mapper) blockMap(in *Inode) error {
	f := m.f
	nblocks := (uint64(in.Size) + uint64(f.bs) - 1) / uint64(f.bs)
	l := uint64(0)
	for i := 0; i < 15 && l < nblocks; i++ {
		level := 0
		if i >= 12 {
			level = i - 11
		}
		if err := m.indirect(uint64(le.Uint32(in.raw[0x28+4*i:])), level, &l, nblocks); err != nil {
			return err
		}
	}
	return nil
}

// indirect maps the subtree of block map entry blk at the given level
// (0: a data block), starting at logical block *l.
func (m *mapper) indirect(blk uint64, level int, l *uint64, nblocks uint64) error {
	per := uint64(m.f.bs / 4)
	if blk == 0 {
		span := uint64(1)
		for i := 0; i < level; i++ {
			span *= per
		}
		*l += span
		return nil
	}
	if level == 0 {
		err := m.add(*l, blk, 1, false)
		*l++
		return err
	}
	b, err := m.block(blk, level, "indirect")
	if err != nil {
		return err
	}
	for i := uint64(0); i < per && *l < nblocks; i++ {
		// b is this level's buffer; deeper levels use their own.
		if err := m.indirect(uint64(le.Uint32(b[4*i:])), level-1, l, nblocks); err != nil {
			return err
		}
	}
	return nil
}
