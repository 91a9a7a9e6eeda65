package kimage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// x86 boot protocol (Documentation/arch/x86/boot.rst): offsets in the
// real-mode setup header of a bzImage.
const (
	hdrSetupSects    = 0x1f1 // u8: setup sectors after the boot sector (0 means 4)
	hdrBootFlag      = 0x1fe // u16: 0xAA55
	hdrMagic         = 0x202 // "HdrS"
	hdrVersion       = 0x206 // u16: boot protocol version
	hdrPayloadOffset = 0x248 // u32 (2.08+): payload offset from the protected-mode code
	hdrPayloadLength = 0x24c // u32 (2.08+)
	hdrEnd           = 0x250
)

// isBzImage reports whether head starts with an x86 boot sector and setup
// header.
func isBzImage(head []byte) bool {
	return len(head) >= hdrMagic+4 &&
		binary.LittleEndian.Uint16(head[hdrBootFlag:]) == 0xaa55 &&
		string(head[hdrMagic:hdrMagic+4]) == "HdrS"
}

// bzPayload locates the compressed payload of a bzImage from its setup
// header.
func bzPayload(head []byte, size int64) (off, length int64, err error) {
	if len(head) < hdrEnd {
		return 0, 0, fmt.Errorf("bzImage setup header (%d bytes): %w", len(head), ErrTruncated)
	}
	le := binary.LittleEndian
	if v := le.Uint16(head[hdrVersion:]); v < 0x208 {
		return 0, 0, fmt.Errorf("bzImage boot protocol %d.%02d has no payload fields (need 2.08+): %w",
			v>>8, v&0xff, ErrNotKernel)
	}
	setup := int64(head[hdrSetupSects])
	if setup == 0 {
		setup = 4
	}
	pm := (setup + 1) * 512 // start of the protected-mode code
	off = pm + int64(le.Uint32(head[hdrPayloadOffset:]))
	length = int64(le.Uint32(head[hdrPayloadLength:]))
	if length == 0 {
		return 0, 0, fmt.Errorf("bzImage payload_length is 0: %w", ErrNotKernel)
	}
	if off > size || size-off < length {
		return 0, 0, fmt.Errorf("bzImage payload at %#x+%#x beyond the end of the file (%d bytes): %w",
			off, length, size, ErrTruncated)
	}
	return off, length, nil
}

// openBzImage decompresses the vmlinux ELF of a bzImage.
func openBzImage(r io.ReaderAt, size int64, head []byte, limit int64) (*File, error) {
	off, length, err := bzPayload(head, size)
	if err != nil {
		return nil, err
	}
	payload := io.NewSectionReader(r, off, length)
	magic := make([]byte, 16)
	if _, err := payload.ReadAt(magic, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("bzImage payload: %w", err)
	}
	c := detect(magic)
	if c == None {
		return nil, fmt.Errorf("bzImage payload at %#x starts %x: %w", off, magic[:6], ErrUnknownCompression)
	}
	data, err := decompressSized(c, payload, length, limit)
	if err != nil {
		return nil, fmt.Errorf("bzImage payload: %w", err)
	}
	if !bytes.HasPrefix(data, []byte("\x7fELF")) {
		return nil, fmt.Errorf("bzImage payload (%s) is not an ELF vmlinux (starts %x): %w",
			c, data[:min(len(data), 8)], ErrNotKernel)
	}
	return openInner(data, FormatBzImage, c, limit)
}

// decompressSized decompresses a kernel payload of length bytes. Every
// compression but gzip is followed by the 32-bit little-endian size of
// the uncompressed data (kbuild's size_append, the *_with_size commands);
// it is stripped before decoding and checked after.
func decompressSized(c Compression, payload *io.SectionReader, length, limit int64) ([]byte, error) {
	if c == Gzip {
		return decompress(c, payload, limit, 0)
	}
	if length < 8 {
		return nil, fmt.Errorf("%s payload of %d bytes: %w", c, length, ErrTruncated)
	}
	var tail [4]byte
	if _, err := payload.ReadAt(tail[:], length-4); err != nil {
		return nil, err
	}
	want := binary.LittleEndian.Uint32(tail[:])
	data, err := decompress(c, io.NewSectionReader(payload, 0, length-4), limit, int64(want))
	if err != nil {
		return nil, err
	}
	if uint32(len(data)) != want {
		return nil, fmt.Errorf("%s payload decompressed to %d bytes, its size field says %d: %w",
			c, len(data), want, ErrTruncated)
	}
	return data, nil
}
