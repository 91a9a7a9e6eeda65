package vhdx

import (
	"errors"
	"fmt"
	"io"
	"unicode/utf16"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/diskio"
)

// Disk is an opened VHDX file. It reads the virtual disk through ReadAt.
type Disk struct {
	r         io.ReaderAt
	size      int64
	blockSize uint32
	logical   uint32
	physical  uint32
	ratio     uint64
	bat       []byte // raw BAT entries
	page83    GUID
	creator   string
	fixed     bool
}

// ErrFormat is wrapped by every error about a malformed VHDX file.
var ErrFormat = errors.New("not a valid VHDX file")

func formatErr(format string, a ...any) error {
	return fmt.Errorf("vhdx: %s: %w", fmt.Sprintf(format, a...), ErrFormat)
}

// maxMetadataItem is the largest metadata item the format allows (1 MiB).
const maxMetadataItem = mib

// Open reads the structures of a VHDX file of fileSize bytes. It verifies
// the signatures and CRC-32C checksums (falling back to the second header
// or region table if the first is damaged), that every region, metadata
// item and stored block lies within the file (with overflow-safe
// arithmetic) and the metadata values are in range. Differencing disks and
// files with a log to replay are refused. Memory use is bounded by the
// file size (the BAT is kept as read).
func Open(r io.ReaderAt, fileSize int64) (*Disk, error) {
	if fileSize < batOffset {
		return nil, formatErr("file is %d bytes, too short for a VHDX", fileSize)
	}
	head := make([]byte, 5*regionSize)
	if err := diskio.ReadFull(r, head, 0); err != nil {
		return nil, fmt.Errorf("vhdx: reading headers: %w", err)
	}
	if string(head[:8]) != fileSignature {
		return nil, formatErr("missing %q signature at offset 0", fileSignature)
	}
	d := &Disk{r: r, creator: creator(head[8 : 8+512])}
	if err := checkHeaders(head); err != nil {
		return nil, err
	}
	bat, meta, err := regions(head, uint64(fileSize))
	if err != nil {
		return nil, err
	}
	if err := d.readMetadata(meta); err != nil {
		return nil, err
	}
	if err := d.readBAT(bat, meta, uint64(fileSize)); err != nil {
		return nil, err
	}
	return d, nil
}

// creator decodes the UTF-16 creator string of the file type identifier.
func creator(b []byte) string {
	var cre []uint16
	for i := 0; i+1 < len(b); i += 2 {
		u := le.Uint16(b[i:])
		if u == 0 {
			break
		}
		cre = append(cre, u)
	}
	return string(utf16.Decode(cre))
}

// checkHeaders picks the current header and checks it.
func checkHeaders(head []byte) error {
	var best []byte
	var bestSeq uint64
	for _, off := range []int{header1Offset, header2Offset} {
		h := head[off : off+headerSize]
		if string(h[:4]) != headerSignature || le.Uint32(h[4:]) != checksum(h, 4) {
			continue
		}
		if seq := le.Uint64(h[8:]); best == nil || seq > bestSeq {
			best, bestSeq = h, seq
		}
	}
	if best == nil {
		return formatErr("both headers have a bad signature or checksum")
	}
	if v := le.Uint16(best[0x42:]); v != 1 {
		return formatErr("header version %d, want 1", v)
	}
	var zero [16]byte
	if [16]byte(best[0x30:0x40]) != zero {
		return formatErr("the log has entries to replay (open it once with Hyper-V or qemu-img to replay them)")
	}
	return nil
}

// span is a byte range of the file.
type span struct{ off, len uint64 }

func (s span) overlaps(o span) bool { return s.off < o.off+o.len && o.off < s.off+s.len }

// regions reads the region table and returns the BAT and metadata regions.
func regions(head []byte, fileSize uint64) (bat, meta span, err error) {
	var table []byte
	for _, off := range []int{region1Offset, region2Offset} {
		t := head[off : off+regionSize]
		if string(t[:4]) == regionSignature && le.Uint32(t[4:]) == checksum(t, 4) {
			table = t
			break
		}
	}
	if table == nil {
		return bat, meta, formatErr("both region tables have a bad signature or checksum")
	}
	n := le.Uint32(table[8:])
	if n > 2047 {
		return bat, meta, formatErr("region table has %d entries (at most 2047)", n)
	}
	for i := uint32(0); i < n; i++ {
		e := table[16+32*i:]
		g := GUID(e[:16])
		s := span{le.Uint64(e[16:]), uint64(le.Uint32(e[24:]))}
		// s.off <= fileSize first, so s.off+s.len cannot overflow.
		if s.off%mib != 0 || s.off < mib || s.len == 0 || s.len%mib != 0 || s.off > fileSize || s.len > fileSize-s.off {
			return bat, meta, formatErr("region %s at offset %d (+%d) is misaligned, empty or past the end of the file (%d bytes; truncated?)", g, s.off, s.len, fileSize)
		}
		var dst *span
		switch g {
		case guidBATRegion:
			dst = &bat
		case guidMetadataRegion:
			dst = &meta
		default:
			if le.Uint32(e[28:])&1 != 0 {
				return bat, meta, formatErr("unknown required region %s", g)
			}
			continue
		}
		if dst.len != 0 {
			return bat, meta, formatErr("region %s appears twice in the region table", g)
		}
		*dst = s
	}
	if bat.len == 0 || meta.len == 0 {
		return bat, meta, formatErr("BAT or metadata region missing")
	}
	if bat.overlaps(meta) {
		return bat, meta, formatErr("BAT region at %d (+%d) overlaps the metadata region at %d (+%d)", bat.off, bat.len, meta.off, meta.len)
	}
	return bat, meta, nil
}

// metaItems are the metadata items the reader needs, with their sizes.
var metaItems = []struct {
	g    GUID
	name string
	l    int
}{{guidFileParams, "file parameters", 8}, {guidVirtualSize, "virtual disk size", 8}, {guidPage83, "virtual disk ID", 16}, {guidLogicalSector, "logical sector size", 4}, {guidPhysicalSector, "physical sector size", 4}}

// readMetadata reads the metadata table (the first 64 KiB of the region)
// and the items the reader needs.
func (d *Disk) readMetadata(meta span) error {
	m := make([]byte, regionSize)
	if err := diskio.ReadFull(d.r, m, int64(meta.off)); err != nil {
		return fmt.Errorf("vhdx: reading the metadata table: %w", err)
	}
	if string(m[:8]) != metaSignature {
		return formatErr("metadata region has no %q signature", metaSignature)
	}
	n := int(le.Uint16(m[10:]))
	if n > 2047 {
		return formatErr("metadata table has %d entries (at most 2047)", n)
	}
	found := map[GUID][]byte{}
	for i := 0; i < n; i++ {
		e := m[32+32*i:]
		g := GUID(e[:16])
		o, l, flags := uint64(le.Uint32(e[16:])), uint64(le.Uint32(e[20:])), le.Uint32(e[24:])
		if l > 0 && (o < regionSize || l > maxMetadataItem || o > meta.len || l > meta.len-o) {
			return formatErr("metadata item %s at offset %d (+%d) is outside the %d-byte region", g, o, l, meta.len)
		}
		if _, dup := found[g]; dup {
			return formatErr("metadata item %s appears twice", g)
		}
		if g == guidParentLocator {
			return formatErr("differencing disks (parent locator) are not supported")
		}
		known := false
		for _, x := range metaItems {
			if x.g == g {
				known = true
				b := make([]byte, min(l, uint64(x.l)))
				if err := diskio.ReadFull(d.r, b, int64(meta.off+o)); err != nil {
					return fmt.Errorf("vhdx: reading metadata item %q: %w", x.name, err)
				}
				found[g] = b
			}
		}
		if !known && flags&4 != 0 {
			return formatErr("unknown required metadata item %s", g)
		}
	}
	return d.parseMetadata(found)
}

// parseMetadata checks and decodes the metadata items.
func (d *Disk) parseMetadata(found map[GUID][]byte) error {
	for _, x := range metaItems {
		if len(found[x.g]) < x.l {
			return formatErr("metadata item %q missing or short (%d bytes, want %d)", x.name, len(found[x.g]), x.l)
		}
	}
	fp := found[guidFileParams]
	d.blockSize = le.Uint32(fp)
	if bs := d.blockSize; bs < mib || bs > 256*mib || bs&(bs-1) != 0 {
		return formatErr("metadata: block size %d is not a power of two from 1 MiB to 256 MiB", bs)
	}
	flags := le.Uint32(fp[4:])
	if flags&2 != 0 {
		return formatErr("differencing disks (HasParent) are not supported")
	}
	d.fixed = flags&1 != 0
	d.logical = le.Uint32(found[guidLogicalSector])
	d.physical = le.Uint32(found[guidPhysicalSector])
	if d.logical != 512 && d.logical != 4096 {
		return formatErr("metadata: logical sector size %d (want 512 or 4096)", d.logical)
	}
	size := le.Uint64(found[guidVirtualSize])
	if size == 0 || size > MaxSize || size%uint64(d.logical) != 0 {
		return formatErr("metadata: virtual size %d (want a multiple of %d up to 64 TiB)", size, d.logical)
	}
	d.size = int64(size)
	d.page83 = GUID(found[guidPage83])
	return nil
}

// readBAT reads the block allocation table and checks every payload entry.
func (d *Disk) readBAT(bat, meta span, fileSize uint64) error {
	blocks := (uint64(d.size) + uint64(d.blockSize) - 1) / uint64(d.blockSize)
	d.ratio = chunkRatio(d.blockSize, d.logical)
	entries := batEntries(blocks, d.ratio)
	if entries*8 > bat.len {
		return formatErr("BAT region of %d bytes is too small for %d entries", bat.len, entries)
	}
	d.bat = make([]byte, entries*8)
	if err := diskio.ReadFull(d.r, d.bat, int64(bat.off)); err != nil {
		return fmt.Errorf("vhdx: reading the BAT: %w", err)
	}
	for i := uint64(0); i < blocks; i++ {
		e := le.Uint64(d.bat[8*batIndex(i, d.ratio):])
		switch e & 7 {
		case stateNotPresent, stateUndefined, stateZero, stateUnmapped, stateUnmappedV095:
		case stateFullyPresent:
			blk := span{e >> 20 << 20, uint64(d.blockSize)}
			switch {
			case blk.off < mib:
				return formatErr("block %d at file offset %d overlaps the headers", i, blk.off)
			case blk.off > fileSize || blk.len > fileSize-blk.off:
				return formatErr("block %d at file offset %d ends past the end of the file (%d bytes; truncated?)", i, blk.off, fileSize)
			case blk.overlaps(bat) || blk.overlaps(meta):
				return formatErr("block %d at file offset %d overlaps the BAT or metadata region", i, blk.off)
			}
		case statePartiallyPresent:
			return formatErr("block %d is partially present (differencing disks are not supported)", i)
		default:
			return formatErr("block %d has invalid state %d", i, e&7)
		}
	}
	return nil
}

// Size returns the virtual disk size in bytes.
func (d *Disk) Size() int64 { return d.size }

// BlockSize returns the payload block size.
func (d *Disk) BlockSize() uint32 { return d.blockSize }

// LogicalSectorSize returns the logical sector size.
func (d *Disk) LogicalSectorSize() uint32 { return d.logical }

// PhysicalSectorSize returns the physical sector size.
func (d *Disk) PhysicalSectorSize() uint32 { return d.physical }

// ID returns the virtual disk ID (page 83 data).
func (d *Disk) ID() GUID { return d.page83 }

// Creator returns the creator string of the file type identifier.
func (d *Disk) Creator() string { return d.creator }

// ReadAt reads the virtual disk. Blocks that are not stored read as zeros.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("vhdx: negative offset")
	}
	return diskio.ReadBlocks(p, off, d.size, int64(d.blockSize), func(q []byte, blk, in int64) error {
		e := le.Uint64(d.bat[8*batIndex(uint64(blk), d.ratio):])
		if e&7 != stateFullyPresent {
			clear(q)
		} else if _, err := d.r.ReadAt(q, int64(e>>20<<20)+in); err != nil {
			return fmt.Errorf("vhdx: reading block %d: %w", blk, err)
		}
		return nil
	})
}
