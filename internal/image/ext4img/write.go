package ext4img

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

const (
	featureIncompat = 0x0002 | 0x0040 | 0x0080          // filetype, extents, 64bit
	featureROCompat = 0x0001 | 0x0002 | 0x0020 | 0x0040 // sparse_super, large_file, dir_nlink, extra_isize
	extentsFlag     = 0x80000
	extentMagic     = 0xF30A
	extraIsize      = 32
)

// emitter counts bytes and turns long zero runs into WriteZeros calls when
// the destination supports them.
type emitter struct {
	w    io.Writer
	zw   ZeroWriter
	n    int64
	zero []byte
	buf  []byte
}

func (e *emitter) write(p []byte) error {
	k, err := e.w.Write(p)
	e.n += int64(k)
	if err == nil && k != len(p) {
		err = io.ErrShortWrite
	}
	return err
}

func (e *emitter) zeros(n int64) error {
	if n <= 0 {
		return nil
	}
	if e.zw != nil && n >= BlockSize {
		if err := e.zw.WriteZeros(n); err != nil {
			return err
		}
		e.n += n
		return nil
	}
	for n > 0 {
		k := int64(len(e.zero))
		if n < k {
			k = n
		}
		if err := e.write(e.zero[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// WriteTo streams the whole image, exactly Size() bytes, to w. Regular
// files with a Source are read during the call; a file whose size changed
// since it was described is an error. If w implements ZeroWriter, runs of
// free blocks are passed to WriteZeros instead of as zero bytes.
func (im *Image) WriteTo(w io.Writer) (int64, error) {
	e := &emitter{w: w, zero: make([]byte, 1<<20), buf: make([]byte, 1<<20)}
	if zw, ok := w.(ZeroWriter); ok {
		e.zw = zw
	}
	err := im.emit(e)
	return e.n, err
}

func (im *Image) emit(e *emitter) error {
	sb := im.superblock()
	gdt := im.descriptors()
	blk := make([]byte, BlockSize)
	pi := 0
	var cur *openFile
	defer func() {
		if cur != nil {
			cur.f.Close()
		}
	}()
	for g := uint64(0); g < im.groups; g++ {
		start := g * blocksPerGroup
		end := minU64(start+blocksPerGroup, im.blocks)
		if hasSuper(g) {
			clear(blk)
			off := 0
			if g == 0 {
				off = 1024
			}
			copy(blk[off:], sb)
			putU16(blk[off+0x5A:], uint16(g))
			if err := e.write(blk); err != nil {
				return err
			}
			if err := e.write(gdt); err != nil {
				return err
			}
		}
		if err := e.write(im.blockBitmap(g, blk)); err != nil {
			return err
		}
		if err := e.write(im.inodeBitmap(g, blk)); err != nil {
			return err
		}
		if err := im.inodeTable(e, g); err != nil {
			return err
		}
		at := start + im.overhead(g)
		for pi < len(im.pieces) && im.pieces[pi].pblk < end {
			p := im.pieces[pi]
			if err := e.zeros(int64(p.pblk-at) * BlockSize); err != nil {
				return err
			}
			var err error
			cur, err = im.emitPiece(e, p, cur, blk)
			if err != nil {
				return err
			}
			at = p.pblk + p.len
			pi++
		}
		if err := e.zeros(int64(end-at) * BlockSize); err != nil {
			return err
		}
	}
	if cur != nil {
		err := cur.finish()
		cur = nil
		return err
	}
	return nil
}

type openFile struct {
	node *Node
	f    *os.File      // a Source file, read at offsets
	r    io.ReadCloser // an Open stream, read in order
	pos  int64         // of r
}

// name names the file in errors.
func (o *openFile) name() string {
	if o.node.Source != "" {
		return o.node.Source
	}
	return o.node.Name
}

// open opens a node's content.
func openContent(n *Node) (*openFile, error) {
	if n.Source == "" {
		r, err := n.Open()
		if err != nil {
			return nil, fmt.Errorf("ext4img: %s: %w", n.Name, err)
		}
		return &openFile{node: n, r: r}, nil
	}
	f, err := os.Open(n.Source)
	if err != nil {
		return nil, fmt.Errorf("ext4img: %w", err)
	}
	return &openFile{node: n, f: f}, nil
}

// readAt fills b with the content at off: ReadAt for a Source file, the
// next bytes of an Open stream (pieces come in file order).
func (o *openFile) readAt(b []byte, off int64) (int, error) {
	if o.f != nil {
		return o.f.ReadAt(b, off)
	}
	if off != o.pos {
		return 0, fmt.Errorf("content read out of order (at %d, want %d)", o.pos, off)
	}
	n, err := io.ReadFull(o.r, b)
	o.pos += int64(n)
	return n, err
}

// finish checks that the file did not grow, and closes it.
func (o *openFile) finish() error {
	if o.r != nil {
		var one [1]byte
		n, _ := io.ReadFull(o.r, one[:])
		o.r.Close()
		if n > 0 {
			return fmt.Errorf("ext4img: %s: content longer than its size %d", o.name(), o.node.Size)
		}
		return nil
	}
	st, err := o.f.Stat()
	o.f.Close()
	if err != nil {
		return fmt.Errorf("ext4img: %s: %w", o.node.Source, err)
	}
	if st.Size() != o.node.Size {
		return fmt.Errorf("ext4img: %s: size changed from %d to %d during the build", o.node.Source, o.node.Size, st.Size())
	}
	return nil
}

func (im *Image) emitPiece(e *emitter, p piece, cur *openFile, blk []byte) (*openFile, error) {
	n := p.node
	if cur != nil && cur.node != n {
		if err := cur.finish(); err != nil {
			return nil, err
		}
		cur = nil
	}
	size := int64(p.len) * BlockSize
	switch p.kind {
	case pieceDir:
		off := int64(p.lblk) * BlockSize
		return cur, e.write(n.dirBytes[off : off+size])
	case pieceSymlink:
		clear(blk)
		copy(blk, n.Target)
		return cur, e.write(blk)
	case pieceLeaf:
		return cur, e.write(im.leafBlock(n, int(p.lblk), blk))
	}
	off := int64(p.lblk) * BlockSize
	want := n.Size - off
	if want > size {
		want = size
	}
	if n.Source == "" && n.Open == nil {
		if err := e.write(n.Data[off : off+want]); err != nil {
			return cur, err
		}
		return cur, e.zeros(size - want)
	}
	if cur == nil {
		var err error
		if cur, err = openContent(n); err != nil {
			return nil, err
		}
	}
	for done := int64(0); done < want; {
		k := min(int64(len(e.buf)), want-done)
		r, err := cur.readAt(e.buf[:k], off+done)
		if int64(r) < k {
			if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("file shrank below %d bytes during the build", n.Size)
			}
			return cur, fmt.Errorf("ext4img: %s: %w", cur.name(), err)
		}
		if err := e.write(e.buf[:k]); err != nil {
			return cur, err
		}
		done += k
	}
	return cur, e.zeros(size - want)
}

func (im *Image) maxIno() uint32 { return uint32(firstIno + len(im.nodes) - 1) }

func (im *Image) superblock() []byte {
	sb := make([]byte, 1024)
	inodes := im.ipg * uint32(im.groups)
	putU32(sb[0x0:], inodes)
	putU32(sb[0x4:], uint32(im.blocks))
	putU32(sb[0x150:], uint32(im.blocks>>32))
	free := im.blocks - im.stats.UsedBlocks
	putU32(sb[0xC:], uint32(free))
	putU32(sb[0x158:], uint32(free>>32))
	putU32(sb[0x10:], inodes-im.maxIno())
	putU32(sb[0x14:], 0) // first data block
	putU32(sb[0x18:], 2) // log2(4096) - 10
	putU32(sb[0x1C:], 2)
	putU32(sb[0x20:], blocksPerGroup)
	putU32(sb[0x24:], blocksPerGroup)
	putU32(sb[0x28:], im.ipg)
	t := uint32(im.opts.Time)
	putU32(sb[0x2C:], 0) // never mounted
	putU32(sb[0x30:], t)
	putU16(sb[0x36:], 0xFFFF) // max mount count: disabled
	putU16(sb[0x38:], 0xEF53)
	putU16(sb[0x3A:], 1) // clean
	putU16(sb[0x3C:], 1) // errors: continue
	putU32(sb[0x40:], t)
	putU32(sb[0x4C:], 1) // dynamic revision
	putU32(sb[0x54:], firstIno)
	putU16(sb[0x58:], inodeSize)
	putU32(sb[0x5C:], 0)
	putU32(sb[0x60:], featureIncompat)
	putU32(sb[0x64:], featureROCompat)
	copy(sb[0x68:0x78], im.opts.UUID[:])
	copy(sb[0x78:0x88], im.opts.Label)
	copy(sb[0xEC:0xFC], im.opts.HashSeed[:])
	sb[0xFC] = 1 // half_md4
	putU16(sb[0xFE:], descSize)
	putU32(sb[0x108:], t)
	putU16(sb[0x15C:], extraIsize)
	putU16(sb[0x15E:], extraIsize)
	putU32(sb[0x160:], 1) // signed directory hash, as mke2fs on x86
	// Times after 2038 need the high bytes (s_*_hi at 0x274..0x277).
	hi := byte(uint64(im.opts.Time) >> 32)
	sb[0x274] = hi // s_wtime_hi
	sb[0x276] = hi // s_mkfs_time_hi
	sb[0x277] = hi // s_lastcheck_hi
	return sb
}

func (im *Image) groupBlocks(g uint64) uint64 {
	start := g * blocksPerGroup
	return minU64(start+blocksPerGroup, im.blocks) - start
}

func (im *Image) usedInodes(g uint64) uint32 {
	lo := uint64(g) * uint64(im.ipg)
	max := uint64(im.maxIno())
	if max <= lo {
		return 0
	}
	return uint32(minU64(max-lo, uint64(im.ipg)))
}

func (im *Image) descriptors() []byte {
	out := make([]byte, im.gdtBlocks*BlockSize)
	dirs := make([]uint32, im.groups)
	for _, n := range append([]*Node{im.root}, im.nodes...) {
		if n.isDir() {
			dirs[uint64(n.ino-1)/uint64(im.ipg)]++
		}
	}
	for g := uint64(0); g < im.groups; g++ {
		d := out[g*descSize:]
		bb := g * blocksPerGroup
		if hasSuper(g) {
			bb += 1 + im.gdtBlocks
		}
		putU32(d[0x0:], uint32(bb))
		putU32(d[0x20:], uint32(bb>>32))
		putU32(d[0x4:], uint32(bb+1))
		putU32(d[0x24:], uint32((bb+1)>>32))
		putU32(d[0x8:], uint32(bb+2))
		putU32(d[0x28:], uint32((bb+2)>>32))
		freeB := uint32(im.groupBlocks(g) - im.overhead(g) - im.used[g])
		putU16(d[0xC:], uint16(freeB))
		putU16(d[0x2C:], uint16(freeB>>16))
		freeI := im.ipg - im.usedInodes(g)
		putU16(d[0xE:], uint16(freeI))
		putU16(d[0x2E:], uint16(freeI>>16))
		putU16(d[0x10:], uint16(dirs[g]))
		putU16(d[0x30:], uint16(dirs[g]>>16))
	}
	return out
}

func setBits(b []byte, from, to uint64) {
	for i := from; i < to; {
		if i%8 == 0 && to-i >= 8 {
			b[i/8] = 0xFF
			i += 8
			continue
		}
		b[i/8] |= 1 << (i % 8)
		i++
	}
}

func (im *Image) blockBitmap(g uint64, blk []byte) []byte {
	clear(blk)
	setBits(blk, 0, im.overhead(g)+im.used[g])
	setBits(blk, im.groupBlocks(g), blocksPerGroup) // padding past the end
	return blk
}

func (im *Image) inodeBitmap(g uint64, blk []byte) []byte {
	clear(blk)
	setBits(blk, 0, uint64(im.usedInodes(g)))
	setBits(blk, uint64(im.ipg), BlockSize*8)
	return blk
}

func (im *Image) nodeByIno(ino uint32) *Node {
	switch {
	case ino == rootIno:
		return im.root
	case ino >= firstIno && int(ino-firstIno) < len(im.nodes):
		return im.nodes[ino-firstIno]
	}
	return nil
}

func (im *Image) inodeTable(e *emitter, g uint64) error {
	first := uint32(g)*im.ipg + 1
	used := im.usedInodes(g)
	if g == 0 && used < rootIno {
		used = rootIno
	}
	usedBlocks := (uint64(used) + inodesPerBlock - 1) / inodesPerBlock
	buf := e.buf[:0]
	for i := uint64(0); i < usedBlocks; i++ {
		blk := buf[len(buf) : len(buf)+BlockSize]
		clear(blk)
		for j := uint32(0); j < inodesPerBlock; j++ {
			if n := im.nodeByIno(first + uint32(i)*inodesPerBlock + j); n != nil {
				im.inode(n, blk[j*inodeSize:(j+1)*inodeSize])
			}
		}
		buf = buf[:len(buf)+BlockSize]
		if len(buf) == cap(buf) {
			if err := e.write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		if err := e.write(buf); err != nil {
			return err
		}
	}
	return e.zeros(int64(im.itb-usedBlocks) * BlockSize)
}

// encodeTime returns the 32-bit seconds and the extra field (epoch bits,
// nanoseconds 0) of the ext4 timestamp encoding.
func encodeTime(t int64) (uint32, uint32) {
	lo := int32(t)
	epoch := uint32((t-int64(lo))>>32) & 3
	return uint32(lo), epoch
}

func unixMode(n *Node) uint16 {
	m := uint16(n.Mode.Perm())
	if n.Mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if n.Mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if n.Mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	switch {
	case n.isDir():
		m |= 0x4000
	case n.isSymlink():
		m |= 0xA000
	default:
		m |= 0x8000
	}
	return m
}

func (im *Image) inode(n *Node, b []byte) {
	putU16(b[0x0:], unixMode(n))
	var size uint64
	links := uint32(1)
	switch {
	case n.isDir():
		size = uint64(len(n.dirBytes))
		links = 2 + uint32(n.subdirs)
		if links >= 65000 {
			links = 1 // dir_nlink: count not tracked
		}
	case n.isSymlink():
		size = uint64(len(n.Target))
	default:
		size = uint64(n.Size)
	}
	putU32(b[0x4:], uint32(size))
	putU32(b[0x6C:], uint32(size>>32))
	sec, extra := encodeTime(im.opts.Time)
	for _, off := range []int{0x8, 0xC, 0x10, 0x90} { // atime, ctime, mtime, crtime
		putU32(b[off:], sec)
	}
	for _, off := range []int{0x84, 0x88, 0x8C, 0x94} {
		putU32(b[off:], extra)
	}
	putU16(b[0x1A:], uint16(links))
	sectors := (n.nblocks + uint64(len(n.leaves))) * (BlockSize / 512)
	putU32(b[0x1C:], uint32(sectors))
	putU16(b[0x74:], uint16(sectors>>32))
	putU16(b[0x80:], extraIsize)
	if n.isSymlink() && len(n.Target) <= maxFastSymlink {
		copy(b[0x28:0x28+60], n.Target)
		return
	}
	putU32(b[0x20:], extentsFlag)
	ib := b[0x28 : 0x28+60]
	putU16(ib[0:], extentMagic)
	putU16(ib[4:], 4)
	if len(n.leaves) == 0 {
		putU16(ib[2:], uint16(len(n.extents)))
		for i, x := range n.extents {
			putExtent(ib[12+12*i:], x)
		}
		return
	}
	putU16(ib[2:], uint16(len(n.leaves)))
	putU16(ib[6:], 1) // depth
	for i, leaf := range n.leaves {
		e := ib[12+12*i:]
		putU32(e[0:], n.extents[i*leafCapacity].lblk)
		putU32(e[4:], uint32(leaf))
		putU16(e[8:], uint16(leaf>>32))
	}
}

func putExtent(b []byte, x extent) {
	putU32(b[0:], x.lblk)
	putU16(b[4:], uint16(x.len))
	putU16(b[6:], uint16(x.pblk>>32))
	putU32(b[8:], uint32(x.pblk))
}

func (im *Image) leafBlock(n *Node, idx int, blk []byte) []byte {
	clear(blk)
	ext := n.extents[idx*leafCapacity : min(len(n.extents), (idx+1)*leafCapacity)]
	putU16(blk[0:], extentMagic)
	putU16(blk[2:], uint16(len(ext)))
	putU16(blk[4:], leafCapacity)
	for i, x := range ext {
		putExtent(blk[12+12*i:], x)
	}
	return blk
}
