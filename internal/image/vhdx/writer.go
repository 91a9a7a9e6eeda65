package vhdx

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync/atomic"
	"unicode/utf16"
)

// Options configure a Writer. Zero values select the defaults.
type Options struct {
	// BlockSize is the payload block size: a power of two from 1 MiB to
	// 256 MiB (default 1 MiB).
	BlockSize uint32
	// LogicalSectorSize is 512 (default) or 4096.
	LogicalSectorSize uint32
	// PhysicalSectorSize is 512 or 4096 (default 4096).
	PhysicalSectorSize uint32
	// Creator is stored in the file type identifier (UTF-16, at most 256
	// characters); default "wsl-modules-action".
	Creator string
}

func (o *Options) fill() error {
	if o.BlockSize == 0 {
		o.BlockSize = mib
	}
	if o.LogicalSectorSize == 0 {
		o.LogicalSectorSize = 512
	}
	if o.PhysicalSectorSize == 0 {
		o.PhysicalSectorSize = 4096
	}
	if o.Creator == "" {
		o.Creator = "wsl-modules-action"
	}
	bs := o.BlockSize
	if bs < mib || bs > 256*mib || bs&(bs-1) != 0 {
		return fmt.Errorf("vhdx: block size %d is not a power of two from 1 MiB to 256 MiB", bs)
	}
	for _, s := range []uint32{o.LogicalSectorSize, o.PhysicalSectorSize} {
		if s != 512 && s != 4096 {
			return fmt.Errorf("vhdx: sector size %d is not 512 or 4096", s)
		}
	}
	if len(utf16.Encode([]rune(o.Creator))) > 256 {
		return errors.New("vhdx: creator string longer than 256 UTF-16 units")
	}
	return nil
}

// Writer writes a dynamic VHDX from the sequential raw content of the
// virtual disk. Write (and WriteZeros) must supply exactly the virtual size
// in bytes before Close. Blocks are hashed and stored by a background
// goroutine, so reading the source and writing the output overlap.
type Writer struct {
	dst          io.WriterAt
	opts         Options
	size         int64
	ratio        uint64
	bat          []uint64
	payloadStart int64
	next         int64 // file offset of the next stored block
	written      int64 // raw bytes received
	block        uint64
	cur          []byte // current block buffer
	fill         int
	curZero      bool // cur holds only bytes given to WriteZeros
	work         chan job
	free         chan []byte
	done         chan struct{}
	err          error // first error of the background goroutine; read after done
	failed       atomic.Bool
	raw          hash.Hash
	rawSum       [32]byte
	stored       uint64
	closed       bool
}

type job struct {
	buf   []byte
	index uint64
	zero  bool // known to be zero: no check needed
}

var zeroBlock = make([]byte, 256*mib/64) // compared in slices; see isZero

func isZero(b []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:k], zeroBlock[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}

// NewWriter starts a VHDX of the given virtual size on dst, which must be
// empty. It writes the fixed structures as zeros at once; Close fills them
// in. size must be a positive multiple of the logical sector size.
func NewWriter(dst io.WriterAt, size int64, opts Options) (*Writer, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	if size <= 0 || size > MaxSize || size%int64(opts.LogicalSectorSize) != 0 {
		return nil, fmt.Errorf("vhdx: virtual size %d is not a positive multiple of %d up to 64 TiB", size, opts.LogicalSectorSize)
	}
	w := &Writer{dst: dst, opts: opts, size: size, raw: sha256.New()}
	w.ratio = chunkRatio(opts.BlockSize, opts.LogicalSectorSize)
	blocks := uint64((size + int64(opts.BlockSize) - 1) / int64(opts.BlockSize))
	w.bat = make([]uint64, batEntries(blocks, w.ratio))
	batLen := roundUp(int64(len(w.bat))*8, mib)
	w.payloadStart = batOffset + batLen
	w.next = w.payloadStart
	// Write every byte of the fixed area now, so no hole can remain.
	z := make([]byte, mib)
	for off := int64(0); off < w.payloadStart; off += mib {
		if _, err := dst.WriteAt(z, off); err != nil {
			return nil, fmt.Errorf("vhdx: %w", err)
		}
	}
	const depth = 4
	w.work = make(chan job, depth)
	w.free = make(chan []byte, depth+2)
	for i := 0; i < depth+1; i++ {
		w.free <- make([]byte, opts.BlockSize)
	}
	w.done = make(chan struct{})
	go w.run()
	w.cur = <-w.free
	w.curZero = true
	return w, nil
}

func roundUp(x, m int64) int64 { return (x + m - 1) / m * m }

// run hashes blocks and stores the non-zero ones, in order.
func (w *Writer) run() {
	defer close(w.done)
	for j := range w.work {
		if w.err == nil {
			if w.err = w.store(j); w.err != nil {
				w.failed.Store(true)
			}
		}
		w.free <- j.buf
	}
}

func (w *Writer) store(j job) error {
	n := int64(w.opts.BlockSize)
	if rem := w.size - int64(j.index)*n; rem < n {
		n = rem
	}
	w.raw.Write(j.buf[:n])
	idx := batIndex(j.index, w.ratio)
	if j.zero || isZero(j.buf) {
		w.bat[idx] = stateZero
		return nil
	}
	if _, err := w.dst.WriteAt(j.buf, w.next); err != nil {
		return fmt.Errorf("vhdx: writing block %d: %w", j.index, err)
	}
	w.bat[idx] = uint64(w.next) | stateFullyPresent
	w.next += int64(len(j.buf))
	w.stored++
	return nil
}

func (w *Writer) flushBlock() error {
	if w.fill < len(w.cur) {
		clear(w.cur[w.fill:])
	}
	if w.failed.Load() {
		w.Abort()
		return w.err
	}
	w.work <- job{buf: w.cur, index: w.block, zero: w.curZero}
	w.block++
	w.fill = 0
	w.curZero = true
	w.cur = <-w.free
	return nil
}

// Write appends raw disk content.
func (w *Writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errors.New("vhdx: write after close")
	}
	if int64(len(p)) > w.size-w.written {
		return 0, fmt.Errorf("vhdx: write past the virtual size %d", w.size)
	}
	n := 0
	for len(p) > 0 {
		k := copy(w.cur[w.fill:], p)
		w.curZero = false
		w.fill += k
		p = p[k:]
		n += k
		w.written += int64(k)
		if w.fill == len(w.cur) {
			if err := w.flushBlock(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// WriteZeros appends n zero bytes of raw content without the caller having
// to supply them.
func (w *Writer) WriteZeros(n int64) error {
	if w.closed {
		return errors.New("vhdx: write after close")
	}
	if n > w.size-w.written {
		return fmt.Errorf("vhdx: write past the virtual size %d", w.size)
	}
	for n > 0 {
		k := min(n, int64(len(w.cur)-w.fill))
		clear(w.cur[w.fill : w.fill+int(k)])
		w.fill += int(k)
		n -= k
		w.written += k
		if w.fill == len(w.cur) {
			if err := w.flushBlock(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Abort stops the background goroutine without finishing the file.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	close(w.work)
	<-w.done
}

// Close checks that the whole virtual size was written, stores the last
// block, and writes the headers, region tables, metadata and BAT.
func (w *Writer) Close() error {
	if w.closed {
		return errors.New("vhdx: already closed")
	}
	if w.written != w.size {
		w.Abort()
		return fmt.Errorf("vhdx: %d of %d bytes of the virtual disk were written", w.written, w.size)
	}
	var err error
	if w.fill > 0 {
		err = w.flushBlock()
	}
	w.closed = true
	close(w.work)
	<-w.done
	if err == nil {
		err = w.err
	}
	if err != nil {
		return err
	}
	copy(w.rawSum[:], w.raw.Sum(nil))
	return w.finish()
}

// RawSHA256 returns the SHA-256 of the raw virtual disk; valid after Close.
func (w *Writer) RawSHA256() [32]byte { return w.rawSum }

// FileSize returns the size of the VHDX file; final after Close.
func (w *Writer) FileSize() int64 { return w.next }

// StoredBlocks returns the number of payload blocks stored in the file.
func (w *Writer) StoredBlocks() uint64 { return w.stored }

// DeriveUUID returns a version-8 UUID (RFC 9562) made from the SHA-256 of
// label, a NUL and digest, in RFC (big-endian) byte order. It is how every
// ID of an image (ext4 UUID and hash seed, VHDX GUIDs) is derived from
// content (FORMATS.md D.5).
func DeriveUUID(label string, digest []byte) [16]byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write(digest)
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0F | 0x80
	u[8] = u[8]&0x3F | 0x80
	return u
}

// DeriveGUID is DeriveUUID in VHDX's on-disk (mixed-endian) byte order.
func DeriveGUID(label string, digest []byte) GUID {
	return FromRFC4122(DeriveUUID(label, digest))
}

// finish writes the first MiB (file identifier, headers and region
// tables), the metadata region and the BAT, after the payload blocks.
func (w *Writer) finish() error {
	batLen := w.payloadStart - batOffset
	if _, err := w.dst.WriteAt(w.head(batLen), 0); err != nil {
		return fmt.Errorf("vhdx: %w", err)
	}
	if _, err := w.dst.WriteAt(w.metadata(), metaOffset); err != nil {
		return fmt.Errorf("vhdx: %w", err)
	}
	bat := make([]byte, batLen)
	for i, e := range w.bat {
		le.PutUint64(bat[8*i:], e)
	}
	if _, err := w.dst.WriteAt(bat, batOffset); err != nil {
		return fmt.Errorf("vhdx: %w", err)
	}
	return nil
}

// head returns the file's first MiB: the file type identifier with the
// creator, the two headers and the two region tables (for a BAT of
// batLen bytes).
func (w *Writer) head(batLen int64) []byte {
	head := make([]byte, mib)
	copy(head, fileSignature)
	for i, u := range utf16.Encode([]rune(w.opts.Creator)) {
		le.PutUint16(head[8+2*i:], u)
	}
	w.putHeaders(head)
	putRegionTables(head, batLen)
	return head
}

// putHeaders writes the two headers into head, with write GUIDs derived
// from the raw disk's SHA-256.
func (w *Writer) putHeaders(head []byte) {
	fileWrite := DeriveGUID("vhdx-file-write", w.rawSum[:])
	dataWrite := DeriveGUID("vhdx-data-write", w.rawSum[:])
	for i, off := range []int{header1Offset, header2Offset} {
		h := head[off : off+headerSize]
		copy(h, headerSignature)
		le.PutUint64(h[8:], uint64(i+1)) // sequence numbers 1 and 2
		copy(h[0x10:], fileWrite[:])
		copy(h[0x20:], dataWrite[:])
		// LogGuid stays zero: no log to replay.
		le.PutUint16(h[0x40:], 0)
		le.PutUint16(h[0x42:], 1)
		le.PutUint32(h[0x44:], logLength)
		le.PutUint64(h[0x48:], logOffset)
		le.PutUint32(h[4:], checksum(h, 4))
	}
}

// putRegionTables writes the two region tables into head, each naming
// the BAT (batLen bytes) and the metadata region as required.
func putRegionTables(head []byte, batLen int64) {
	for _, off := range []int{region1Offset, region2Offset} {
		r := head[off : off+regionSize]
		copy(r, regionSignature)
		le.PutUint32(r[8:], 2)
		for i, e := range []struct {
			g   GUID
			off int64
			len int64
		}{{guidBATRegion, batOffset, batLen}, {guidMetadataRegion, metaOffset, metaLength}} {
			x := r[16+32*i:]
			copy(x, e.g[:])
			le.PutUint64(x[16:], uint64(e.off))
			le.PutUint32(x[24:], uint32(e.len))
			le.PutUint32(x[28:], 1) // required
		}
		le.PutUint32(r[4:], checksum(r, 4))
	}
}

// metadata returns the metadata region: its table and the file
// parameters, virtual size, page 83 data (derived from the raw disk's
// SHA-256) and sector sizes.
func (w *Writer) metadata() []byte {
	page83 := DeriveGUID("vhdx-page83", w.rawSum[:])
	meta := make([]byte, metaLength)
	copy(meta, metaSignature)
	items := []struct {
		g     GUID
		data  []byte
		flags uint32
	}{
		{guidFileParams, le.AppendUint32(le.AppendUint32(nil, w.opts.BlockSize), 0), 4},
		{guidVirtualSize, le.AppendUint64(nil, uint64(w.size)), 6},
		{guidPage83, page83[:], 6},
		{guidLogicalSector, le.AppendUint32(nil, w.opts.LogicalSectorSize), 6},
		{guidPhysicalSector, le.AppendUint32(nil, w.opts.PhysicalSectorSize), 6},
	}
	le.PutUint16(meta[10:], uint16(len(items)))
	dataOff := 0x10000
	for i, it := range items {
		e := meta[32+32*i:]
		copy(e, it.g[:])
		le.PutUint32(e[16:], uint32(dataOff))
		le.PutUint32(e[20:], uint32(len(it.data)))
		le.PutUint32(e[24:], it.flags)
		copy(meta[dataOff:], it.data)
		dataOff += len(it.data)
	}
	return meta
}
