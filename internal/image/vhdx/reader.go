package vhdx

import (
	"errors"
	"fmt"
	"io"
	"unicode/utf16"
)

// Disk is an opened VHDX file. It reads the virtual disk through ReadAt.
type Disk struct {
	r         io.ReaderAt
	size      int64
	blockSize uint32
	logical   uint32
	physical  uint32
	ratio     uint64
	bat       []uint64
	page83    GUID
	creator   string
	fixed     bool
}

// ErrFormat is wrapped by every error about a malformed VHDX file.
var ErrFormat = errors.New("not a valid VHDX file")

func formatErr(format string, a ...any) error {
	return fmt.Errorf("vhdx: %s: %w", fmt.Sprintf(format, a...), ErrFormat)
}

// Open reads the structures of a VHDX file of fileSize bytes. It verifies
// the signatures and CRC-32C checksums (falling back to the second header
// or region table if the first is damaged), the metadata items and that
// every stored block lies within the file. Differencing disks and files with
// a log to replay are refused.
func Open(r io.ReaderAt, fileSize int64) (*Disk, error) {
	if fileSize < batOffset {
		return nil, formatErr("file is %d bytes, too short for a VHDX", fileSize)
	}
	head := make([]byte, 5*regionSize)
	if _, err := r.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("vhdx: reading headers: %w", err)
	}
	if string(head[:8]) != fileSignature {
		return nil, formatErr("missing %q signature at offset 0", fileSignature)
	}
	d := &Disk{r: r}
	var cre []uint16
	for i := 8; i+1 < 8+512; i += 2 {
		u := le.Uint16(head[i:])
		if u == 0 {
			break
		}
		cre = append(cre, u)
	}
	d.creator = string(utf16.Decode(cre))

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
		return nil, formatErr("both headers have a bad signature or checksum")
	}
	if v := le.Uint16(best[0x42:]); v != 1 {
		return nil, formatErr("header version %d, want 1", v)
	}
	var zero [16]byte
	if [16]byte(best[0x30:0x40]) != zero {
		return nil, formatErr("the log has entries to replay (open it once with Hyper-V or qemu-img to replay them)")
	}

	var regions []byte
	for _, off := range []int{region1Offset, region2Offset} {
		t := head[off : off+regionSize]
		if string(t[:4]) == regionSignature && le.Uint32(t[4:]) == checksum(t, 4) {
			regions = t
			break
		}
	}
	if regions == nil {
		return nil, formatErr("both region tables have a bad signature or checksum")
	}
	n := le.Uint32(regions[8:])
	if n > 2047 {
		return nil, formatErr("region table has %d entries", n)
	}
	var batOff, batLen, metaOff, metaLen int64
	for i := uint32(0); i < n; i++ {
		e := regions[16+32*i:]
		g := GUID(e[:16])
		off, length := int64(le.Uint64(e[16:])), int64(le.Uint32(e[24:]))
		if off%mib != 0 || off < mib || length%mib != 0 || off+length > fileSize {
			return nil, formatErr("region %s at %d (+%d) is misaligned or past the end of the file (%d bytes; truncated?)", g, off, length, fileSize)
		}
		switch g {
		case guidBATRegion:
			batOff, batLen = off, length
		case guidMetadataRegion:
			metaOff, metaLen = off, length
		default:
			if le.Uint32(e[28:])&1 != 0 {
				return nil, formatErr("unknown required region %s", g)
			}
		}
	}
	if batLen == 0 || metaLen == 0 {
		return nil, formatErr("BAT or metadata region missing")
	}
	if err := d.readMetadata(metaOff, metaLen); err != nil {
		return nil, err
	}
	blocks := uint64((d.size + int64(d.blockSize) - 1) / int64(d.blockSize))
	d.ratio = chunkRatio(d.blockSize, d.logical)
	entries := batEntries(blocks, d.ratio)
	if int64(entries)*8 > batLen {
		return nil, formatErr("BAT region of %d bytes is too small for %d entries", batLen, entries)
	}
	raw := make([]byte, entries*8)
	if _, err := r.ReadAt(raw, batOff); err != nil {
		return nil, fmt.Errorf("vhdx: reading BAT: %w", err)
	}
	d.bat = make([]uint64, entries)
	for i := range d.bat {
		d.bat[i] = le.Uint64(raw[8*i:])
	}
	for i := uint64(0); i < blocks; i++ {
		e := d.bat[batIndex(i, d.ratio)]
		switch e & 7 {
		case stateNotPresent, stateUndefined, stateZero, stateUnmapped, stateUnmappedV095:
		case stateFullyPresent:
			off := int64(e >> 20 << 20)
			if off < mib {
				return nil, formatErr("block %d at file offset %d overlaps the headers", i, off)
			}
			if off+int64(d.blockSize) > fileSize {
				return nil, formatErr("block %d at file offset %d ends past the end of the file (%d bytes; truncated?)", i, off, fileSize)
			}
		case statePartiallyPresent:
			return nil, formatErr("block %d is partially present (differencing disks are not supported)", i)
		default:
			return nil, formatErr("block %d has invalid state %d", i, e&7)
		}
	}
	return d, nil
}

func (d *Disk) readMetadata(off, length int64) error {
	m := make([]byte, length)
	if _, err := d.r.ReadAt(m, off); err != nil {
		return fmt.Errorf("vhdx: reading metadata: %w", err)
	}
	if string(m[:8]) != metaSignature {
		return formatErr("metadata region has no %q signature", metaSignature)
	}
	n := int(le.Uint16(m[10:]))
	if n > 2047 {
		return formatErr("metadata table has %d entries", n)
	}
	found := map[GUID][]byte{}
	for i := 0; i < n; i++ {
		e := m[32+32*i:]
		g := GUID(e[:16])
		o, l, flags := int64(le.Uint32(e[16:])), int64(le.Uint32(e[20:])), le.Uint32(e[24:])
		if l > 0 && (o < 0x10000 || o+l > length) {
			return formatErr("metadata item %s at %d (+%d) is outside the region", g, o, l)
		}
		switch g {
		case guidFileParams, guidVirtualSize, guidPage83, guidLogicalSector, guidPhysicalSector:
			found[g] = m[o : o+l]
		case guidParentLocator:
			return formatErr("differencing disks (parent locator) are not supported")
		default:
			if flags&4 != 0 {
				return formatErr("unknown required metadata item %s", g)
			}
		}
	}
	need := []struct {
		g    GUID
		name string
		l    int
	}{{guidFileParams, "file parameters", 8}, {guidVirtualSize, "virtual disk size", 8}, {guidPage83, "virtual disk ID", 16}, {guidLogicalSector, "logical sector size", 4}, {guidPhysicalSector, "physical sector size", 4}}
	for _, x := range need {
		if len(found[x.g]) < x.l {
			return formatErr("metadata item %q missing or short", x.name)
		}
	}
	fp := found[guidFileParams]
	d.blockSize = le.Uint32(fp)
	if bs := d.blockSize; bs < mib || bs > 256*mib || bs&(bs-1) != 0 {
		return formatErr("block size %d is not a power of two from 1 MiB to 256 MiB", bs)
	}
	flags := le.Uint32(fp[4:])
	if flags&2 != 0 {
		return formatErr("differencing disks (HasParent) are not supported")
	}
	d.fixed = flags&1 != 0
	d.logical = le.Uint32(found[guidLogicalSector])
	d.physical = le.Uint32(found[guidPhysicalSector])
	if d.logical != 512 && d.logical != 4096 {
		return formatErr("logical sector size %d", d.logical)
	}
	d.size = int64(le.Uint64(found[guidVirtualSize]))
	if d.size <= 0 || d.size > MaxSize || d.size%int64(d.logical) != 0 {
		return formatErr("virtual size %d", d.size)
	}
	d.page83 = GUID(found[guidPage83])
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
	if off >= d.size {
		return 0, io.EOF
	}
	var err error
	if int64(len(p)) > d.size-off {
		p = p[:d.size-off]
		err = io.EOF
	}
	n := 0
	bs := int64(d.blockSize)
	for len(p) > 0 {
		blk := uint64(off / bs)
		in := off % bs
		k := min(int64(len(p)), bs-in)
		e := d.bat[batIndex(blk, d.ratio)]
		if e&7 == stateFullyPresent {
			if _, rerr := d.r.ReadAt(p[:k], int64(e>>20<<20)+in); rerr != nil {
				return n, fmt.Errorf("vhdx: reading block %d: %w", blk, rerr)
			}
		} else {
			clear(p[:k])
		}
		p = p[k:]
		n += int(k)
		off += k
	}
	return n, err
}
