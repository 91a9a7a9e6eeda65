// Package vhd reads VHD (version 1, "Virtual Hard Disk Image Format")
// files: fixed and dynamic disks, exposed as an io.ReaderAt of the virtual
// disk. WSL's stock modules.vhd is such a file. Differencing disks are not
// supported.
package vhd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/diskio"
)

const (
	footerSize      = 512
	dynHeaderSize   = 1024
	sectorSize      = 512
	typeFixed       = 2
	typeDynamic     = 3
	typeDifferncing = 4
	unallocated     = 0xFFFFFFFF
)

var be = binary.BigEndian

// ErrFormat is wrapped by every error about a malformed VHD file.
var ErrFormat = errors.New("not a valid VHD file")

func formatErr(format string, a ...any) error {
	return fmt.Errorf("vhd: %s: %w", fmt.Sprintf(format, a...), ErrFormat)
}

// Disk is an opened VHD file.
type Disk struct {
	r         io.ReaderAt
	size      int64
	dynamic   bool
	blockSize int64
	bitmap    int64 // bytes of sector bitmap before each block's data
	bat       []uint32
}

// checksum is the one's complement of the byte sum with the checksum
// field (4 bytes at field) counted as zero.
func checksum(b []byte, field int) uint32 {
	var s uint32
	for i, c := range b {
		if i >= field && i < field+4 {
			continue
		}
		s += uint32(c)
	}
	return ^s
}

// IsVHD reports whether the last 512 bytes of a file (or its first 512,
// for a dynamic disk whose end is damaged) look like a VHD footer.
func IsVHD(footer []byte) bool {
	return len(footer) >= 8 && string(footer[:8]) == "conectix"
}

func parseFooter(f []byte) error {
	if string(f[:8]) != "conectix" {
		return formatErr("no \"conectix\" footer cookie")
	}
	if got, want := be.Uint32(f[64:]), checksum(f[:footerSize], 64); got != want {
		return formatErr("footer checksum 0x%08x, want 0x%08x", got, want)
	}
	if v := be.Uint32(f[12:]); v>>16 != 1 {
		return formatErr("file format version 0x%08x, want 1.x", v)
	}
	return nil
}

// MaxDynamicSize is the largest dynamic disk the format allows (2040 GiB,
// the limit of its 32-bit sector offsets). Fixed disks are bounded by the
// file size instead.
const MaxDynamicSize = 2040 << 30

// maxBlockSize bounds the dynamic disk block size (the format uses 2 MiB;
// larger blocks only grow the per-read sector bitmap).
const maxBlockSize = 256 << 20

// Open reads the footer (and for dynamic disks the dynamic header and the
// block allocation table) of a VHD file of fileSize bytes. A damaged
// trailing footer falls back to the copy at the start of dynamic disks.
// Every offset and size is checked with overflow-safe arithmetic, and
// every allocated block is checked to lie within the file.
func Open(r io.ReaderAt, fileSize int64) (*Disk, error) {
	if fileSize < footerSize {
		return nil, formatErr("file is %d bytes, shorter than a footer", fileSize)
	}
	foot := make([]byte, footerSize)
	if err := diskio.ReadFull(r, foot, fileSize-footerSize); err != nil {
		return nil, fmt.Errorf("vhd: reading footer: %w", err)
	}
	ferr := parseFooter(foot)
	if ferr != nil {
		// Dynamic disks keep a copy of the footer at offset 0.
		if err := diskio.ReadFull(r, foot, 0); err != nil {
			return nil, fmt.Errorf("vhd: reading footer copy: %w", err)
		}
		if parseFooter(foot) != nil || be.Uint32(foot[60:]) != typeDynamic {
			return nil, ferr
		}
	}
	size := be.Uint64(foot[48:])
	d := &Disk{r: r}
	switch t := be.Uint32(foot[60:]); t {
	case typeFixed:
		if ferr != nil {
			return nil, ferr
		}
		if size == 0 || size > uint64(fileSize-footerSize) {
			return nil, formatErr("fixed disk of %d bytes but only %d bytes of data (truncated?)", size, fileSize-footerSize)
		}
		d.size = int64(size)
		return d, nil
	case typeDynamic:
		if size == 0 || size > MaxDynamicSize {
			return nil, formatErr("footer current size %d (a dynamic disk holds 1 byte to 2040 GiB)", size)
		}
		d.size = int64(size)
		return d, d.openDynamic(be.Uint64(foot[16:]), uint64(fileSize))
	case typeDifferncing:
		return nil, formatErr("differencing disks are not supported")
	default:
		return nil, formatErr("unknown disk type %d", t)
	}
}

func (d *Disk) openDynamic(hdrOff, fileSize uint64) error {
	d.dynamic = true
	if hdrOff < footerSize || hdrOff > fileSize || fileSize-hdrOff < dynHeaderSize {
		return formatErr("dynamic header offset %d outside the file (%d bytes; truncated?)", hdrOff, fileSize)
	}
	h := make([]byte, dynHeaderSize)
	if err := diskio.ReadFull(d.r, h, int64(hdrOff)); err != nil {
		return fmt.Errorf("vhd: reading dynamic header: %w", err)
	}
	if string(h[:8]) != "cxsparse" {
		return formatErr("no \"cxsparse\" dynamic header cookie at offset %d", hdrOff)
	}
	if got, want := be.Uint32(h[36:]), checksum(h, 36); got != want {
		return formatErr("dynamic header checksum 0x%08x, want 0x%08x", got, want)
	}
	tableOff := be.Uint64(h[16:])
	entries := uint64(be.Uint32(h[28:]))
	bs := uint64(be.Uint32(h[32:]))
	if bs < sectorSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return formatErr("dynamic header block size %d is not a power of two from 512 bytes to 256 MiB", bs)
	}
	d.blockSize = int64(bs)
	need := (uint64(d.size) + bs - 1) / bs
	if entries < need {
		return formatErr("dynamic header: %d table entries cannot map %d bytes", entries, d.size)
	}
	if tableOff > fileSize || need*4 > fileSize-tableOff {
		return formatErr("block table at offset %d (+%d) outside the file (%d bytes; truncated?)", tableOff, need*4, fileSize)
	}
	d.bitmap = (d.blockSize/sectorSize/8 + sectorSize - 1) / sectorSize * sectorSize
	raw := make([]byte, need*4)
	if err := diskio.ReadFull(d.r, raw, int64(tableOff)); err != nil {
		return fmt.Errorf("vhd: reading block table: %w", err)
	}
	d.bat = make([]uint32, need)
	for i := range d.bat {
		e := be.Uint32(raw[4*i:])
		d.bat[i] = e
		if e == unallocated {
			continue
		}
		if off := uint64(e) * sectorSize; off+uint64(d.bitmap)+bs > fileSize {
			return formatErr("block %d at offset %d ends past the end of the file (%d bytes; truncated?)", i, off, fileSize)
		}
	}
	return nil
}

// Size returns the virtual disk size (the footer's current size).
func (d *Disk) Size() int64 { return d.size }

// Dynamic reports whether the disk is dynamic (otherwise fixed).
func (d *Disk) Dynamic() bool { return d.dynamic }

// ReadAt reads the virtual disk. Unallocated blocks and sectors whose
// bitmap bit is clear read as zeros.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("vhd: negative offset")
	}
	if !d.dynamic {
		p, eof := diskio.Clip(p, off, d.size)
		if err := diskio.ReadFull(d.r, p, off); err != nil {
			return 0, fmt.Errorf("vhd: reading at offset %d: %w", off, err)
		}
		return len(p), eof
	}
	var bm []byte
	return diskio.ReadBlocks(p, off, d.size, d.blockSize, func(q []byte, blk, in int64) error {
		if e := d.bat[blk]; e == unallocated {
			clear(q)
		} else if err := d.readBlock(q, int64(e)*sectorSize, in, &bm); err != nil {
			return fmt.Errorf("vhd: block %d: %w", blk, err)
		}
		return nil
	})
}

// readBlock reads p from offset in of the block stored at base, zeroing
// the sectors whose bitmap bit is clear. Only the bitmap bytes covering p
// are read (into *bm, reused).
func (d *Disk) readBlock(p []byte, base, in int64, bm *[]byte) error {
	k := int64(len(p))
	first, last := in/sectorSize/8, (in+k-1)/sectorSize/8
	if int64(cap(*bm)) < last-first+1 {
		*bm = make([]byte, last-first+1)
	}
	b := (*bm)[:last-first+1]
	if err := diskio.ReadFull(d.r, b, base+first); err != nil {
		return fmt.Errorf("reading its sector bitmap: %w", err)
	}
	if err := diskio.ReadFull(d.r, p, base+d.bitmap+in); err != nil {
		return err
	}
	for s := in / sectorSize; s*sectorSize < in+k; s++ {
		if b[s/8-first]&(0x80>>(s%8)) == 0 {
			lo := max(s*sectorSize, in) - in
			hi := min((s+1)*sectorSize, in+k) - in
			clear(p[lo:hi])
		}
	}
	return nil
}
